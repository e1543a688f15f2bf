"""Validation of the manifests kbuild writes: core kinds against the
Kubernetes schemas (kubernetes-validate), KEDA's and KServe's kinds against
their published CRD schemas (tests/data/crds, with origin and licence), and
the folder through `kubectl kustomize` (Debian's kubernetes-client)."""

from __future__ import annotations

import gzip
import json
import shutil
import subprocess
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate

from tests.helpers.build import component_missing

CRDS = Path(__file__).resolve().parent.parent / "data" / "crds"
# the oldest Kubernetes still in common support, and the newest schemas shipped
K8S_VERSIONS = ("1.28", str(kubernetes_validate.latest_version()))


@cache
def crd_schema(api_version: str, kind: str) -> dict[str, Any] | None:
    group, _, version = api_version.partition("/")
    path = CRDS / f"{group}_{version}_{kind}.json.gz"
    if not path.is_file():
        return None
    schema: dict[str, Any] = json.loads(gzip.decompress(path.read_bytes()))
    return schema


def validate_manifest(document: dict[str, Any]) -> None:
    """Raise if `document` is not a valid object of its kind."""
    if document.get("kind") == "Kustomization":
        assert document["apiVersion"] == "kustomize.config.k8s.io/v1beta1"
        return
    schema = crd_schema(document["apiVersion"], document["kind"])
    if schema is not None:
        jsonschema.validate(document, schema, cls=jsonschema.Draft7Validator)
        return
    assert "." not in document["apiVersion"].split("/")[0] or document["apiVersion"].startswith(
        ("apps/", "policy/", "autoscaling/")
    ), f"no schema for {document['apiVersion']} {document['kind']}"
    for version in K8S_VERSIONS:
        kubernetes_validate.validate(document, version, strict=True)


def kustomize(folder: Path) -> list[dict[str, Any]]:
    """What `kubectl kustomize FOLDER` renders, as documents."""
    import yaml

    kubectl = shutil.which("kubectl")
    if kubectl is None:
        component_missing("kubectl is not installed (Debian: kubernetes-client; scripts/docker-setup.sh installs it)")
    assert kubectl is not None
    proc = subprocess.run([kubectl, "kustomize", str(folder)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return [d for d in yaml.safe_load_all(proc.stdout) if d]
