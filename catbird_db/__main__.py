"""`python -m catbird_db` runs the `catbird-db` command."""

import sys

from .cli import main

sys.exit(main())
