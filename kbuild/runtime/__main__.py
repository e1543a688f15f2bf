"""python -m kbuild.runtime --root ROOT COMMAND ..."""

from kbuild.runtime.cli import exit_process, main

if __name__ == "__main__":
    exit_process(main())
