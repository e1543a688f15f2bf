"""The peers' own environments for bench/peers.py: one virtual environment per
server, made once under the kbuild cache (bench/peers/NAME), each with the
server's pinned release and the model libraries the shared handlers use.

    python bench/peer_envs.py            # make (or check) them all
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from serving_servers import cache_root, sklearn_version  # noqa: E402

# What every peer's handlers import (bench/peers/handlers.py): the same
# libraries, at the versions kbuild's artifacts lock, so the model calls match;
# NumPy is left to each server's own bounds (PyTriton 0.7 and MLServer 1.7
# need NumPy 1).
MODEL_LIBRARIES = ("onnxruntime==1.32.0", "tokenizers==0.23.3", "pillow==13.0.0")

PEERS: dict[str, tuple[str, ...]] = {
    "fastapi": ("fastapi==0.165.0", "uvicorn[standard]==0.54.0"),
    "litserve": ("litserve==0.2.19",),
    "bentoml": ("bentoml==1.4.40",),
    "kserve": ("kserve==0.21.0",),
    "pytriton": ("nvidia-pytriton==0.7.0",),
    "mlserver": ("mlserver==1.7.1", "mlserver-sklearn==1.7.1", "uvloop==0.21.0"),
}


# PyTriton's Python backend stub embeds a libpython 3.11 older than 3.11.7,
# whose standard library's multiprocessing asks RLock for _recursion_count,
# which that libpython lacks: the model fails to load. The stub runs on
# Debian's own Python 3.11.2, whose standard library does not ask.
INTERPRETERS = {"pytriton": "/usr/bin/python3"}

# The embedding servers of bench/embeddings.py, each with its own model stack.
# torch is pinned to the CPU build on this disk (a bare `torch` takes a CUDA
# build of several GB). Infinity 0.0.78 imports optimum.bettertransformer,
# which needs transformers < 4.49 and optimum 1.x; it needs NumPy 1, and with
# it pandas and pyarrow from before NumPy 2 became their floor.
EMBEDDING_PEERS: dict[str, tuple[str, ...]] = {
    "infinity": (
        "torch==2.13.0",
        "infinity-emb[server,torch]==0.0.78",
        "optimum[onnxruntime]==1.24.0",
        "transformers==4.48.3",
        "numpy==1.26.4",
        "pandas==2.2.3",
        "pyarrow==19.0.1",
        "datasets==3.6.0",
    ),
    "st-fastapi": (
        "torch==2.13.0",
        "sentence-transformers==6.3.0",
        "fastapi==0.165.0",
        "uvicorn[standard]==0.54.0",
    ),
}


def venv_of(name: str) -> Path:
    return cache_root() / "peers" / name


def ensure(name: str) -> Path:
    """The peer's environment, made if missing or made with other pins."""
    venv = venv_of(name)
    if name in EMBEDDING_PEERS:
        pins = list(EMBEDDING_PEERS[name])
    else:
        pins = [*PEERS[name], *MODEL_LIBRARIES, f"scikit-learn=={sklearn_version()}"]
    made = "\n".join(pins + ([f"python: {INTERPRETERS[name]}"] if name in INTERPRETERS else []))
    marker = venv / ".complete"
    if marker.is_file() and marker.read_text() == made:
        return venv
    shutil.rmtree(venv, ignore_errors=True)
    subprocess.run([INTERPRETERS.get(name, sys.executable), "-m", "venv", str(venv)], check=True)
    subprocess.run(
        [str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "--disable-pip-version-check", *pins], check=True
    )
    marker.write_text(made)
    return venv


def size_mib(venv: Path) -> float:
    """The environment's size on disk, as a user would install it."""
    total = sum(p.stat().st_size for p in venv.rglob("*") if p.is_file() and not p.is_symlink())
    return total / 2**20


if __name__ == "__main__":
    for peer in sys.argv[1:] or [*PEERS, *EMBEDDING_PEERS]:
        print(f"{peer}: {ensure(peer)} ({size_mib(venv_of(peer)):.0f} MiB)", flush=True)
