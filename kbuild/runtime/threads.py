"""How many threads the model runtimes get: the cores this process may use.

onnxruntime and torch size their pools from the machine's core count, not
from what the container may use: in a pod limited to 2 CPUs on a 64-core node
they start 64 threads that the kernel's CPU quota then throttles, and the
serving threads wait behind them. The count, in order:

- KBUILD_THREADS, when set (an integer >= 1);
- the cgroup's CPU quota (cgroup v2 `cpu.max`, v1 `cpu.cfs_quota_us` over
  `cpu.cfs_period_us`), rounded up;
- the CPUs this process is allowed to run on (its affinity mask);

the smallest of the last two. `cpu_budget` is pure; `process_cpu_budget`
reads the process's environment, its cgroup and its affinity (the edge).

Each step runtime is given the count through its own API (onnxruntime's
session options, torch.set_num_threads, XGBoost's nthread, LightGBM's
num_threads, scikit-learn's n_jobs and threadpoolctl, TFLite's num_threads).
The OpenMP and BLAS libraries under them read POOL_VARIABLES once, when they
are loaded: `pool_environment` gives the ones the process has not set, for
the command line to set before NumPy or a model library is imported.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from pathlib import Path

from kbuild.runtime.contract.errors import ArtifactUsageError

THREADS_ENV = "KBUILD_THREADS"
POOL_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
CGROUP_ROOT = Path("/sys/fs/cgroup")


def cpu_budget(env: Mapping[str, str], quota: float | None, allowed: int) -> int:
    """The thread count: the environment's KBUILD_THREADS, else the smaller
    of the CPU quota (in CPUs, None: no quota) and the allowed CPUs."""
    given = env.get(THREADS_ENV, "").strip()
    if given:
        try:
            threads = int(given)
        except ValueError:
            threads = 0
        if threads < 1:
            raise ArtifactUsageError(f"{THREADS_ENV} must be an integer >= 1, got {given!r}")
        return threads
    cpus = max(allowed, 1)
    if quota is not None and quota > 0:
        cpus = min(cpus, max(math.ceil(quota), 1))
    return cpus


def pool_environment(env: Mapping[str, str], threads: int) -> dict[str, str]:
    """The POOL_VARIABLES to set for `threads`, leaving those already set."""
    return {name: str(threads) for name in POOL_VARIABLES if not env.get(name, "").strip()}


def cgroup_quota(root: Path = CGROUP_ROOT) -> float | None:
    """The CPU quota of the process's cgroup in CPUs (1.5 = 150 ms each
    100 ms), or None where there is none or it cannot be read."""
    try:
        v2 = (root / "cpu.max").read_text().split()
    except OSError:
        v2 = []
    if len(v2) == 2:
        return None if v2[0] == "max" else _ratio(v2[0], v2[1])
    try:
        quota = (root / "cpu" / "cpu.cfs_quota_us").read_text().strip()
        period = (root / "cpu" / "cpu.cfs_period_us").read_text().strip()
    except OSError:
        return None
    return None if quota.startswith("-") else _ratio(quota, period)


def process_cpu_budget(env: Mapping[str, str]) -> int:
    try:
        allowed = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not on Linux
        allowed = os.cpu_count() or 1
    return cpu_budget(env, cgroup_quota(), allowed)


def _ratio(quota: str, period: str) -> float | None:
    try:
        q, p = int(quota), int(period)
    except ValueError:
        return None
    return q / p if q > 0 and p > 0 else None
