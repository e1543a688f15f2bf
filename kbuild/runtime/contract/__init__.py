"""The artifact's contract: what the compiler writes and the runtime reads.

The compiler imports nothing of the runtime but this package (and the bare
kbuild.runtime, to find the runtime's files). It holds the artifact's file
names (layout), the pipeline as pipeline.json carries it (pipeline), the step
types (step_types), the serve settings (serve, kafka, mqtt) with their
environment overrides, the exit codes and errors (errors), the runtime modules
an artifact carries (runtime_files), the zipapp's bootstrap and the file list's
checks (bootstrap, integrity), and the model-update message (model_message).

This package imports nothing at import time: the bootstrap reads its modules
from a zipapp before anything else of the artifact is importable.
"""
