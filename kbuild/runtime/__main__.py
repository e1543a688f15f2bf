"""python -m kbuild.runtime --root ROOT COMMAND ..."""

import sys

from kbuild.runtime.cli import main

if __name__ == "__main__":
    sys.exit(main())
