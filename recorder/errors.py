"""The recorder's own errors, in a module of their own so that every recorder module can raise them
without importing the store (`recorder.store` re-exports them)."""

from __future__ import annotations

import errno

# A write that fails with one of these failed for want of space: a full disk (ENOSPC), a user's
# quota (EDQUOT), or a file-size limit (EFBIG, e.g. RLIMIT_FSIZE or a FAT32 stick's 4 GiB).
FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})


class StoreFullError(OSError):
    """The store's disk has no room for what the recorder must write. What was written before the
    error is kept; the message says what was kept and what to do."""


# What the operator can do about it, ending every StoreFullError's message.
ADVICE = "Free space (delete episodes you no longer need) or move the store to a larger disk."
