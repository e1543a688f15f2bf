"""The kbuild command line: parsing, printing and exit codes only.

`main(argv)` is the one place where errors become messages and exit codes, so
tests call it in-process. `kbuild [OPTIONS] PIPELINE` builds: a first word that
is not a subcommand means `kbuild build`.
"""

from __future__ import annotations

import json
import os
import platform
import sys
import tempfile
import time
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import click

from kbuild import __version__
from kbuild.build import BuildOptions, build, build_index, load_plan, lock_plan
from kbuild.build import base_images as base_images_by_spin
from kbuild.errors import KbuildError
from kbuild.load.pipeline import load_pipeline, walk_steps
from kbuild.plan.checkpoints import expand_checkpoints
from kbuild.plan.spins import available_spins, host_spin_name, load_spin, step_matrix
from kbuild.resolve.build_environment import lock_request
from kbuild.resolve.cache import cache_dir
from kbuild.resolve.lock import ensure_locked
from kbuild.runtime.contract.model_message import DEFAULT_CHUNK_BYTES
from kbuild.targets import TARGETS
from kbuild.targets.publish_model import DEFAULT_TIMEOUT_S, publish_model
from kbuild.verify.artifact_runs import DEFAULT_TIMEOUT_S as DEFAULT_VERIFY_TIMEOUT_S

EXIT_CODES = """Exit codes: 0 ok, 1 internal error (a bug: the traceback is written to a log file), 2 usage,
3 invalid pipeline or spin, 4 dependency resolution, 5 artifact build, 6 verification failed,
7 the broker did not take a published model."""


class _DefaultToBuild(click.Group):
    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and args[0] not in ("--help", "-h", "--version"):
            args = ["build", *args]
        return super().parse_args(ctx, args)


def _echo(quiet: bool) -> Any:
    def say(message: str) -> None:
        if not quiet:
            click.echo(message, err=True)

    return say


@click.group(cls=_DefaultToBuild, epilog=EXIT_CODES, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="kbuild")
def cli() -> None:
    """Compile an ML inference pipeline into a deployable artifact.

    \b
      kbuild --spin aurora-linux pipeline.yaml
      kbuild pipeline.yaml            (spin of this machine, zipapp)
    """


_pipeline_arg = click.argument("pipeline", type=click.Path(path_type=Path, dir_okay=False))
_spin_opt = click.option("--spin", metavar="NAME", help="Target spin (default: the one matching this machine).")


@cli.command("build", epilog=EXIT_CODES)
@click.option(
    "--spin",
    "spins",
    metavar="NAME",
    multiple=True,
    help="Target spin (default: the one matching this machine). Several make one image index "
    "(--target oci, or image with --push).",
)
@click.option("--target", type=click.Choice(TARGETS), default="zipapp", show_default=True)
@click.option(
    "-o",
    "--output-dir",
    type=click.Path(path_type=Path, file_okay=False),
    default=Path("dist"),
    show_default=True,
    help="Where the artifact and build-report.json go.",
)
@click.option("--locked", is_flag=True, help="Fail if the lock file is missing or stale instead of resolving.")
@click.option("--offline", is_flag=True, help="Use only the wheel cache; never the network.")
@click.option(
    "--report", "report_path", type=click.Path(path_type=Path, dir_okay=False), help="Also write the build report here."
)
@click.option(
    "--tag",
    metavar="[REGISTRY/]NAME[:TAG]",
    help="Image and context: the image's name (default: NAME:VERSION of the pipeline, or NAME:latest).",
)
@click.option(
    "--base-image",
    "base_images",
    metavar="[SPIN=]IMAGE",
    multiple=True,
    help="Image, oci and context: build on IMAGE instead of the spin's base image; skopeo's names "
    "(docker-daemon:NAME, docker://REF, oci-archive:PATH, oci:DIR, docker-archive:PATH) or a "
    "reference. SPIN=IMAGE names one spin's.",
)
@click.option(
    "--push",
    is_flag=True,
    help="Image and oci: send the image through the registry API to the registry --tag names "
    "(credentials from the Docker config), engine or not.",
)
@click.option(
    "--verify-timeout",
    type=click.FloatRange(min=0, min_open=True),
    default=DEFAULT_VERIFY_TIMEOUT_S,
    show_default=True,
    metavar="SECONDS",
    help="Longest wait for the samples to run at build time, and for the artifact's check.",
)
@click.option("-q", "--quiet", is_flag=True, help="Print only the artifact path (the image's name for --target image).")
@_pipeline_arg
def build_cmd(
    spins: tuple[str, ...],
    target: str,
    output_dir: Path,
    locked: bool,
    offline: bool,
    report_path: Path | None,
    tag: str | None,
    base_images: tuple[str, ...],
    push: bool,
    verify_timeout: float,
    quiet: bool,
    pipeline: Path,
) -> None:
    """Build PIPELINE into an artifact (the default command)."""
    names = list(dict.fromkeys(spins)) or [host_spin_name()]
    bases = base_images_by_spin(base_images, names)
    options = BuildOptions(
        spin=names[0],
        target=target,
        output_dir=output_dir,
        locked=locked,
        offline=offline,
        report_path=report_path,
        tag=tag,
        base_image=bases.get(names[0]) or bases.get(None),
        push=push,
        verify_timeout=verify_timeout,
    )
    if len(names) > 1:
        result = build_index(pipeline, options, names, bases, progress=_echo(quiet))
    else:
        result = build(pipeline, options, progress=_echo(quiet))
    click.echo(str(result.artifact))


@cli.command("validate")
@_pipeline_arg
def validate_cmd(pipeline: Path) -> None:
    """Check PIPELINE against the schema and its own consistency."""
    loaded = load_pipeline(pipeline)
    types = ", ".join(s.type for s in loaded.steps)
    endpoints = ", ".join(loaded.settings.transports)
    click.echo(
        f"{pipeline}: valid: pipeline '{loaded.name}', {len(loaded.inputs)} inputs, {len(loaded.outputs)} outputs, "
        f"{len(loaded.steps)} steps ({types}), serves {endpoints or 'nothing'}, {len(loaded.samples)} samples"
    )
    expanded = expand_checkpoints(loaded)
    converted = {s for c in expanded.conversions for s in (c.step, *c.also)}
    by_name = {s.name: s for s in walk_steps(expanded.pipeline.steps)}
    originals = {s.name: s.type for s in walk_steps(loaded.steps)}
    for name, steps in expanded.expansions.items():
        parts = [
            f"{s} ({by_name[s].type}{', converted from the checkpoint at build time' if s in converted else ''})"
            for s in steps
        ]
        click.echo(f"  step '{name}' ({originals[name]}) becomes: {', '.join(parts)}")


@cli.command("lock")
@_spin_opt
@click.option("--upgrade", is_flag=True, help="Resolve afresh to the newest allowed versions.")
@_pipeline_arg
def lock_cmd(spin: str | None, upgrade: bool, pipeline: Path) -> None:
    """Resolve and write PIPELINE's lock file for a spin."""
    plan = load_plan(pipeline, spin)
    lock, resolved = lock_plan(plan, upgrade=upgrade)
    state = "written" if resolved else "up to date"
    click.echo(f"{lock.path}: {state} ({len(lock.packages)} packages for {plan.spin.name})")
    if plan.conversions:  # the build side's own lock, for the frameworks that read the checkpoints
        request = lock_request(plan)
        lock, resolved = ensure_locked(request, locked=False, offline=False, upgrade=upgrade, cache=cache_dir())
        state = "written" if resolved else "up to date"
        click.echo(f"{lock.path}: {state} ({len(lock.packages)} packages for converting on {request.spin.name})")


@cli.command("spins")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.argument("name", required=False)
def spins_cmd(as_json: bool, name: str | None) -> None:
    """List the spins, or show one resolved (with everything it extends)."""
    if name is None:
        rows = [load_spin(n) for n in available_spins()]
        if as_json:
            click.echo(json.dumps([_spin_summary(s) for s in rows], indent=2))
            return
        click.echo(f"{'SPIN':24} {'PLATFORM':28} {'ACCEL':9} STEP TYPES")
        for s in rows:
            plat = f"{s.os}/{s.arch} py{s.python} glibc{s.manylinux.replace('_', '.')}"
            supported = [t for t, b in s.backends.items() if not b.unsupported]
            click.echo(f"{s.name:24} {plat:28} {s.accelerator:9} {', '.join(supported)}")
        return
    s = load_spin(name)
    if as_json:
        click.echo(json.dumps(_spin_detail(s), indent=2))
        return
    click.echo(f"{s.name}: {s.description}")
    click.echo(f"  extends:     {' -> '.join(s.chain[1:]) or '-'}")
    click.echo(f"  platform:    {s.os} {s.arch}, Python {s.python}, wheels: {', '.join(s.platform_tags()[:3])}, ...")
    click.echo(f"  accelerator: {s.accelerator}")
    click.echo(f"  image:       {s.image_base} ({s.image_python}); {len(s.image_setup)} setup steps")
    for step in s.image_setup:
        click.echo(f"    RUN {step}")
    click.echo(f"  runtime:     {json.dumps(s.runtime, sort_keys=True)}")
    click.echo("  step types:")
    click.echo(f"    {'TYPE':12} {'DEVICE':9} PACKAGES")
    for row in step_matrix(s):
        packages = ", ".join(row.packages) or ("(numpy only)" if row.supported else "-")
        click.echo(f"    {row.step_type:12} {row.device:9} {packages}")
        for note in row.notes:
            click.echo(f"    {'':12} {'':9} {note}")


@cli.command("publish-model", epilog=EXIT_CODES)
@click.option("--bootstrap-servers", required=True, metavar="HOST:PORT[,HOST:PORT]", help="The Kafka brokers.")
@click.option("--topic", required=True, metavar="TOPIC", help="The model topic (serve.kafka.models.topic).")
@click.option(
    "--version",
    "model_version",
    required=True,
    metavar="V",
    help="The version replicas report in the kbuild-model-version header.",
)
@click.option(
    "--key-file",
    type=click.Path(path_type=Path, dir_okay=False),
    metavar="K",
    help="Sign with the key in K (replicas read theirs from KBUILD_MODEL_KEY_FILE).",
)
@click.option(
    "--chunk-size",
    type=click.IntRange(min=1),
    default=DEFAULT_CHUNK_BYTES,
    show_default=True,
    metavar="BYTES",
    help="Largest model bytes per message.",
)
@click.option(
    "--timeout",
    type=click.FloatRange(min=0, min_open=True),
    default=DEFAULT_TIMEOUT_S,
    show_default=True,
    metavar="SECONDS",
    help="How long to wait for the broker's acknowledgement.",
)
@click.argument("model", type=click.Path(path_type=Path, exists=True))
def publish_model_cmd(
    bootstrap_servers: str,
    topic: str,
    model_version: str,
    key_file: Path | None,
    chunk_size: int,
    timeout: float,
    model: Path,
) -> None:
    """Publish MODEL as version V of a model step to running replicas.

    Exits 0 once the broker acknowledged every message of the model."""
    done = publish_model(
        bootstrap_servers, topic, model_version, model, key_file, chunk_bytes=chunk_size, timeout_s=timeout
    )
    m = done.manifest
    where = f"offset {done.offsets[0]}" if len(done.offsets) == 1 else f"offsets {done.offsets[0]}-{done.offsets[-1]}"
    click.echo(
        f"published {m.name} as version {m.version} ({m.size} bytes in {m.chunks} message{'s' if m.chunks != 1 else ''}, "
        f"{'signed' if done.signed else 'unsigned'}) to {topic} at {bootstrap_servers}, {where}"
    )


def _spin_summary(s: Any) -> dict[str, Any]:
    return {
        "name": s.name,
        "os": s.os,
        "arch": s.arch,
        "python": s.python,
        "accelerator": s.accelerator,
        "step_types": [t for t, b in s.backends.items() if not b.unsupported],
    }


def _spin_detail(s: Any) -> dict[str, Any]:
    return {
        **_spin_summary(s),
        "description": s.description,
        "extends": list(s.chain[1:]),
        "manylinux": s.manylinux,
        "platform_tags": s.platform_tags(),
        "image": {"base": s.image_base, "python": s.image_python, "setup": list(s.image_setup)},
        "runtime": s.runtime,
        "backends": {
            b.step_type: {
                "requirements": list(b.requirements),
                "options": b.options,
                "device": b.device,
                "warning": b.warning,
                "note": b.note,
                "index": list(b.index_urls),
                "setup": list(b.setup),
                "unsupported": b.unsupported,
            }
            for b in s.backends.values()
        },
        "matrix": [
            {
                "type": r.step_type,
                "supported": r.supported,
                "device": r.device,
                "packages": list(r.packages),
                "notes": list(r.notes),
            }
            for r in step_matrix(s)
        ],
    }


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        cli.main(args=args, prog_name="kbuild", standalone_mode=False)
    except KbuildError as error:
        click.echo(f"error: {error.render()}", err=True)
        return error.exit_code
    except click.exceptions.Exit as exit_:
        return int(exit_.exit_code)
    except click.ClickException as error:
        error.show()
        return error.exit_code
    except (click.exceptions.Abort, KeyboardInterrupt):
        click.echo("aborted", err=True)
        return 130
    except Exception as error:  # a bug: one line here, the whole story in a file
        log = write_crash_log(args)
        click.echo(f"error: internal error: {type(error).__name__}: {_first_line(error)}", err=True)
        click.echo(f"  this is a bug in kbuild {__version__}; the full traceback is in {log}", err=True)
        return 1
    return 0


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return text[0][:300] if text else "(no message)"


# Where an unexpected exception's traceback goes: a log file, not the terminal;
# the CLI prints one line and the file's path. The file holds what a bug
# report needs (the command line, versions, the traceback).
def write_crash_log(argv: Sequence[str]) -> Path:
    """Write the exception being handled to a new log file; return its path."""
    text = "".join(
        [
            f"kbuild {__version__}, Python {platform.python_version()} on {platform.platform()}\n",
            f"command: kbuild {' '.join(argv)}\n",
            f"time: {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())}\n\n",
            traceback.format_exc(),
        ]
    )
    name = f"crash-{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}-{os.getpid()}.log"
    for folder in (cache_dir() / "logs", Path(tempfile.gettempdir())):
        try:
            folder.mkdir(parents=True, exist_ok=True)
            path = folder / name
            path.write_text(text, encoding="utf-8")
            return path
        except OSError:
            continue
    sys.stderr.write(text)  # nowhere to write: the traceback is all that is left
    return Path("(standard error)")


if __name__ == "__main__":
    sys.exit(main())
