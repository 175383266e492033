"""`python -m vivit ...` runs the `vivit` command line (see `vivit.cli`)."""

import sys

from .cli import main

sys.exit(main())
