"""The artifact's file names, written once: the compiler lays the root out by
them and the runtime finds its parts by them (docs/artifact.md).

    ROOT/site/          kbuild's runtime modules and the installed wheels
    ROOT/app/           pipeline.json, samples.json, build.json, files.json,
                        models/STEP/FILE, code/STEP/FILE, transforms/FILE
    ROOT/sbom.cdx.json  the CycloneDX SBOM

Standard library only, importing nothing: the zipapp's bootstrap reads this
module from the archive before anything else of the artifact is importable.
"""

from __future__ import annotations

SITE_DIR = "site"
APP_DIR = "app"
SBOM_FILE = "sbom.cdx.json"  # beside site/ and app/

# in app/
PIPELINE_FILE = "pipeline.json"
SAMPLES_FILE = "samples.json"
BUILD_FILE = "build.json"  # the build report, as embedded
MODELS_DIR = "models"
CODE_DIR = "code"
TRANSFORMS_DIR = "transforms"

# relative to the root
FILES_LIST = f"{APP_DIR}/files.json"  # every file of the root -> [size, sha256], written by the compiler
STAMPS = ".stamps.json"  # each unpacked file's modification time, written by the bootstrap

# a zipapp's own metadata, at the top of the archive
ZIPAPP_META = "kbuild-app.json"

# what `check` and `record` say on stderr for the compiler to read: the step
# each one is about to load or run (when TRACE_ENV is "1"), so that a build
# can name the step a hung sample was in
TRACE_ENV = "KBUILD_TRACE_STEPS"
TRACE_PREFIX = "kbuild-trace:"


def model_path(step: str, name: str) -> str:
    """A step's model file or folder, relative to app/."""
    return f"{MODELS_DIR}/{step}/{name}"


def code_path(step: str, name: str) -> str:
    """A python step's code file or folder, relative to app/."""
    return f"{CODE_DIR}/{step}/{name}"


def transforms_path(name: str) -> str:
    """serve.kafka.transforms' code, relative to app/."""
    return f"{TRANSFORMS_DIR}/{name}"
