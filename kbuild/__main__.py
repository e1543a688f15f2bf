"""`python -m kbuild …` is the kbuild command."""

import sys

from .cli import main

sys.exit(main())
