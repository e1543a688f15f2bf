"""Run an image's `check` in a container, as it will be deployed: no
network, read-only root, the spin's environment."""

from __future__ import annotations

import docker.errors
import requests

from kbuild.errors import BuildError, VerificationError
from kbuild.plan.spins import Spin
from kbuild.runtime.contract.layout import TRACE_ENV
from kbuild.targets.engine import Engine, one_line
from kbuild.verify.artifact_runs import DEFAULT_TIMEOUT_S, Verification, last_step, untraced


def runs_here(engine: Engine, spin: Spin) -> str | None:
    """Why the engine's machine cannot run the spin's images, or None if it can."""
    if spin.os != "linux" or spin.arch != engine.arch:
        return (
            f"spin {spin.name} runs on {spin.os}/{spin.arch}; the engine at {engine.address} runs linux/{engine.arch}"
        )
    if spin.accelerator != "cpu":
        return f"spin {spin.name} needs a {spin.accelerator} accelerator, which this check does not attach"
    return None


def check_image(engine: Engine, image_id: str, spin: Spin, timeout: float = DEFAULT_TIMEOUT_S) -> Verification:
    """Run the image's `check` as it will be deployed: no network, read-only root.

    Raises VerificationError if the samples do not reproduce, or hang."""
    reason = runs_here(engine, spin)
    if reason:
        return Verification("not verified", f"{reason}; run `check` in the container where it is deployed")
    env = {str(k): str(v) for k, v in (spin.runtime.get("env") or {}).items()}
    env[TRACE_ENV] = "1"
    hung = False
    try:
        container = engine.client.containers.create(
            image_id, command=["check"], network_mode="none", read_only=True, tmpfs={"/tmp": ""}, environment=env
        )
        try:
            container.start()
            try:
                status = container.wait(timeout=timeout)
            except requests.exceptions.RequestException:  # the wait timed out
                hung, status = True, {}
            output = container.logs(stdout=True, stderr=True).decode("utf-8", "replace").strip()
        finally:
            container.remove(force=True)
    except (docker.errors.DockerException, OSError) as error:
        raise BuildError("cannot run the built image's check", [one_line(error)]) from None
    if hung:
        raise VerificationError(
            f"the image's check did not finish within {timeout:g} s: {last_step(output)}",
            ["raise --verify-timeout if the pipeline is slow, or fix the step that hangs"],
        )
    lines = untraced(output)
    if int(status.get("StatusCode", 1)) != 0:
        raise VerificationError("the built image failed its check", lines[-20:])
    return Verification("passed", f"{lines[-1] if lines else 'check passed'} (inside the container)")
