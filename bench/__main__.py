"""`python -m bench [--quick]` from the repository root."""

import sys

from bench.cli import main

sys.exit(main())
