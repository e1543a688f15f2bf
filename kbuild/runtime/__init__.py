"""The code that goes into artifacts: it reads an artifact root and serves it.

Imports only the standard library, NumPy and the model libraries of the step
types a pipeline uses, and never the compiler (kbuild.* outside kbuild.runtime),
because an artifact ships this package alone. Like kbuild/__init__.py this file
stays import-free so that importing a submodule costs nothing extra.
"""
