"""`python -m vidyn` (also what torchrun launches for multi-process runs)."""

import sys

from vidyn.cli import main

sys.exit(main())
