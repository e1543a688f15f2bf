"""kbuild: compile declarative ML inference pipelines into deployable artifacts.

This module is shipped inside artifacts (as the parent of kbuild.runtime), so it
must stay free of imports.
"""

__version__ = "0.1.0"
