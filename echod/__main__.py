"""C{python3 -m echod}: the same as the C{echod} command."""

import sys

from echod.cli import main

sys.exit(main())
