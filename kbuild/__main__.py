"""`python -m kbuild …` is the kbuild command."""

import sys

from kbuild.cli import main

sys.exit(main())
