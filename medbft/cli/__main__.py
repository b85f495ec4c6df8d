"""`python -m medbft`: the same as the `medbft` command."""

import sys

from medbft.cli import main

sys.exit(main())
