"""`python -m groundwatch` runs the CLI."""

import sys

from groundwatch.cli import main

sys.exit(main())
