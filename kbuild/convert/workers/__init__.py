"""The converters, run as `python -m kbuild.convert.workers.convert` inside the
build-side environment: they import only the standard library, the frameworks
and each other, never the rest of kbuild."""
