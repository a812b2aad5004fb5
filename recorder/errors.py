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


class StoreError(RuntimeError):
    """A store that cannot be used as it is; the message names the file and says what to do. The
    commands print it as one line."""


class NoStoreError(StoreError, FileNotFoundError):
    """The store folder holds no catalogue yet (nothing recorded), or the path is no folder at all."""


class StoreLockedError(StoreError):
    """Another process holds the store: two recorders in one store would corrupt each other."""


class CatalogueDamagedError(StoreError):
    """The catalogue file is damaged or was emptied. Nothing is changed: the episode folders still
    hold everything, and `rig rebuild-catalogue` rebuilds the catalogue from them."""


class StepsFileError(StoreError, ValueError):
    """An episode's step files cannot be read (a damaged `steps.json`)."""


class NotInCatalogueError(KeyError):
    """No such row (an unknown episode id). A KeyError, printed without KeyError's quotes."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


def rebuild_advice(root: object) -> str:
    """How to get a usable catalogue back, for the messages of the errors above."""
    return (
        f"`rig rebuild-catalogue --store {root}` rebuilds it from the episode folders "
        "(the damaged file is kept beside it)"
    )
