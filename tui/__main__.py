"""`python -m tui [--profile P] [--store DIR]`: the same as `rig tui`."""

import sys

from rig.cli import main

sys.exit(main(["tui", *sys.argv[1:]]))
