"""`python -m catbird_db` runs the `catbird-db` command."""

import sys

from .tools.cli import main

sys.exit(main())
