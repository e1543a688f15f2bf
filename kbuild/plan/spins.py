"""Spins: build targets described by YAML files (DESIGN §4).

A spin may `extend` another. Mappings merge key by key, lists and scalars
replace, and a backend set to null is removed, so a CUDA spin only says what
differs from the CPU spin it builds on.
"""

from __future__ import annotations

import os
import platform
import shutil
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kbuild.errors import Problem, SpecError, SpinError
from kbuild.load.documents import load_document, load_schema, schema_problems
from kbuild.load.resources import data_dir
from kbuild.runtime.contract.step_types import STEP_TYPES

SPIN_SUFFIX = ".yaml"

# Oldest glibc that manylinux tags name; legacy aliases are the same glibc versions.
_MANYLINUX_MIN_MINOR = 5
_LEGACY_MANYLINUX = {17: "manylinux2014", 12: "manylinux2010", 5: "manylinux1"}


@dataclass(frozen=True)
class Backend:
    """How one step type runs on a spin."""

    step_type: str
    requirements: tuple[str, ...]
    options: Mapping[str, Any]
    device: str
    warning: str | None
    note: str | None = None
    index_urls: tuple[str, ...] = ()  # extra indexes, only for pipelines with this step type
    unsupported: str | None = None  # why this step type cannot run here
    # dependencies of the requirements that the runner never imports: left out of the lock
    unused: tuple[str, ...] = ()
    # commands run in the base (with image.setup) only for images whose pipeline has this step type
    setup: tuple[str, ...] = ()


@dataclass(frozen=True)
class Spin:
    name: str
    description: str
    source: Path
    chain: tuple[str, ...]  # this spin, then what it extends, outermost last
    os: str
    arch: str
    manylinux: str  # e.g. "2_28"
    python: str  # e.g. "3.11"
    accelerator: str
    image_base: str
    image_python: str
    image_setup: tuple[str, ...]
    runtime: Mapping[str, Any]
    core_requirements: tuple[str, ...]
    endpoint_requirements: Mapping[str, tuple[str, ...]]
    backends: Mapping[str, Backend]
    extra_index_urls: tuple[str, ...] = field(default=())

    @property
    def python_tag(self) -> str:
        return "cp" + self.python.replace(".", "")

    def platform_tags(self) -> list[str]:
        """Every wheel platform tag this spin accepts, newest first."""
        glibc_minor = int(self.manylinux.split("_")[1])
        tags = []
        for minor in range(glibc_minor, _MANYLINUX_MIN_MINOR - 1, -1):
            tags.append(f"manylinux_2_{minor}_{self.arch}")
            legacy = _LEGACY_MANYLINUX.get(minor)
            if legacy and (self.arch in ("x86_64", "i686") or minor == 17):
                tags.append(f"{legacy}_{self.arch}")
        return tags

    def marker_environment(self) -> dict[str, str]:
        """PEP 508 marker values of the target, not of the build machine."""
        return {
            "implementation_name": "cpython",
            "implementation_version": f"{self.python}.0",
            "os_name": "posix",
            "platform_machine": self.arch,
            "platform_python_implementation": "CPython",
            "platform_release": "",
            "platform_system": "Linux",
            "platform_version": "",
            "python_full_version": f"{self.python}.0",
            "python_version": self.python,
            "sys_platform": "linux",
        }

    def host_python(self) -> str | None:
        """A Python on this machine that can run this spin's artifacts, if any."""
        if platform.system().lower() != self.os or host_arch() != self.arch:
            return None
        if self.accelerator not in ("cpu",):
            return None
        return python_of_version(self.python)


def python_of_version(version: str) -> str | None:
    """An interpreter of `version` (e.g. "3.11") on this machine: pythonX.Y on
    PATH if it answers, else this one if it matches."""
    found = shutil.which(f"python{version}")
    # A version manager's shim is on PATH even where that version is not
    # installed or selected; only an interpreter that answers counts.
    if found and _python_version(found) == version:
        return found
    import sys

    if f"{sys.version_info.major}.{sys.version_info.minor}" == version:
        return sys.executable
    return None


def _python_version(executable: str) -> str | None:
    import subprocess

    try:
        proc = subprocess.run(
            [executable, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
            capture_output=True,
            text=True,
            timeout=30,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return proc.stdout.strip() if proc.returncode == 0 else None


def host_arch() -> str:
    machine = platform.machine().lower()
    return {"amd64": "x86_64", "arm64": "aarch64"}.get(machine, machine)


def spin_dirs() -> list[Path]:
    """Folders searched for spins: $KBUILD_SPIN_PATH (os.pathsep-separated) first, then the built-in ones."""
    extra = [Path(p) for p in os.environ.get("KBUILD_SPIN_PATH", "").split(os.pathsep) if p]
    return [*extra, data_dir("spins")]


def available_spins() -> dict[str, Path]:
    found: dict[str, Path] = {}
    for folder in reversed(spin_dirs()):
        if folder.is_dir():
            for path in sorted(folder.glob("*" + SPIN_SUFFIX)):
                found[path.stem] = path
    return dict(sorted(found.items()))


def host_spin_name() -> str:
    """The spin matching this machine: a CPU spin for its OS and architecture."""
    name = f"cpu-{platform.system().lower()}-{host_arch()}"
    if name not in available_spins():
        raise SpinError(
            f"no spin matches this machine ({platform.system()} on {host_arch()}); choose one with --spin",
            [f"known spins: {', '.join(available_spins())}"],
        )
    return name


def _resolve_path(name_or_path: str) -> Path:
    if name_or_path.endswith(SPIN_SUFFIX) or os.sep in name_or_path:
        path = Path(name_or_path)
        if not path.is_file():
            raise SpinError(f"spin file {name_or_path} does not exist")
        return path
    known = available_spins()
    if name_or_path not in known:
        import difflib

        close = difflib.get_close_matches(name_or_path, list(known), n=1)
        hint = f"; did you mean '{close[0]}'?" if close else ""
        raise SpinError(
            f"unknown spin '{name_or_path}'{hint}",
            [f"known spins: {', '.join(known)}"],
        )
    return known[name_or_path]


def _merge(base: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _load_raw(name_or_path: str, seen: tuple[str, ...]) -> tuple[dict[str, Any], Path, tuple[str, ...]]:
    path = _resolve_path(name_or_path)
    doc = load_document(path)
    problems = schema_problems(doc, load_schema("spin.schema.json"))
    if problems:
        raise SpecError(f"{path}: invalid spin", problems)
    data: dict[str, Any] = dict(doc.data)
    name = str(data["name"])
    if name in seen:
        raise SpinError(f"spin '{name}' extends itself through {' -> '.join(seen + (name,))}")
    parent = data.pop("extends", None)
    if parent is None:
        return data, path, (name,)
    base, _, chain = _load_raw(str(parent), seen + (name,))
    backends_over = data.get("backends") or {}
    merged = _merge(base, data)
    # a backend set to null removes what the parent spin offered
    merged["backends"] = {k: v for k, v in _merge(base.get("backends") or {}, backends_over).items() if v is not None}
    return merged, path, (name, *chain)


_REQUIRED = (
    "platform.os",
    "platform.arch",
    "platform.manylinux",
    "python",
    "accelerator",
    "image.base",
    "image.python",
)


def load_spin(name_or_path: str) -> Spin:
    """Load a spin by name (from spin_dirs()) or by path, with everything it extends."""
    data, path, chain = _load_raw(name_or_path, ())
    missing = []
    for dotted in _REQUIRED:
        node: Any = data
        for part in dotted.split("."):
            node = node.get(part) if isinstance(node, Mapping) else None
        if node in (None, ""):
            missing.append(Problem(str(path), None, None, "$." + dotted, "required (here or in the spin it extends)"))
    if missing:
        raise SpecError(f"{path}: incomplete spin", missing)
    unknown = [
        Problem(
            str(path),
            None,
            None,
            f"$.backends.{step_type}",
            f"unknown step type (known: {', '.join(sorted(STEP_TYPES))})",
        )
        for step_type in sorted(data.get("backends") or {})
        if step_type not in STEP_TYPES
    ]
    if unknown:
        raise SpecError(f"{path}: invalid spin", unknown)
    plat, image = data["platform"], data["image"]
    backends = {
        step_type: Backend(
            step_type=step_type,
            requirements=tuple(entry.get("requirements") or ()),
            options=dict(entry.get("options") or {}),
            device=str(entry.get("device") or "cpu"),
            warning=entry.get("warning"),
            note=entry.get("note"),
            index_urls=tuple(entry.get("index") or ()),
            unsupported=entry.get("unsupported"),
            unused=tuple(entry.get("unused") or ()),
            setup=tuple(entry.get("setup") or ()),
        )
        for step_type, entry in sorted((data.get("backends") or {}).items())
    }
    endpoints = {
        endpoint: tuple((entry or {}).get("requirements") or ())
        for endpoint, entry in sorted((data.get("endpoints") or {}).items())
    }
    return Spin(
        name=str(data["name"]),
        description=str(data.get("description", "")).strip(),
        source=path,
        chain=chain,
        os=str(plat["os"]),
        arch=str(plat["arch"]),
        manylinux=str(plat["manylinux"]),
        python=str(data["python"]),
        accelerator=str(data["accelerator"]),
        image_base=str(image["base"]),
        image_python=str(image["python"]),
        image_setup=tuple(image.get("setup") or ()),
        runtime=dict(data.get("runtime") or {}),
        core_requirements=tuple((data.get("core") or {}).get("requirements") or ()),
        endpoint_requirements=endpoints,
        backends=backends,
        extra_index_urls=tuple((data.get("index") or {}).get("extra_urls") or ()),
    )


@dataclass(frozen=True)
class MatrixRow:
    """One step type on one spin, as `kbuild spins NAME` shows it."""

    step_type: str
    supported: bool
    device: str  # "-" where unsupported
    packages: tuple[str, ...]
    notes: tuple[str, ...]


def step_matrix(spin: Spin, step_types: Iterable[str] = STEP_TYPES) -> list[MatrixRow]:
    """Every given step type (and every one the spin names) on this spin: what it
    installs, where it computes, and why not where it cannot run."""
    rows = []
    for step_type in sorted(set(step_types) | set(spin.backends)):
        backend = spin.backends.get(step_type)
        if backend is None:
            rows.append(MatrixRow(step_type, False, "-", (), ("unsupported: this spin offers no backend for it",)))
            continue
        if backend.unsupported:
            rows.append(MatrixRow(step_type, False, "-", (), (f"unsupported: {backend.unsupported}",)))
            continue
        notes = [f"{key}: {_option_text(value)}" for key, value in sorted(backend.options.items()) if key != "device"]
        notes += [f"packages also from {url}" for url in backend.index_urls]
        notes += [f"image setup: {step}" for step in backend.setup]
        if backend.note:
            notes.append(backend.note)
        if backend.warning:
            notes.append(f"warning: {backend.warning}")
        rows.append(MatrixRow(step_type, True, backend.device, backend.requirements, tuple(notes)))
    return rows


def _option_text(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return ", ".join(str(v) for v in value)
    return str(value)
