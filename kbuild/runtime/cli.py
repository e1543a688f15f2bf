"""The artifact's command line (docs/artifact.md, "Running the root").

    python -m kbuild.runtime --root ROOT [serve] [--http-port N] [--grpc-port N]
    python -m kbuild.runtime --root ROOT predict [FILE]
    python -m kbuild.runtime --root ROOT check
    python -m kbuild.runtime --root ROOT info
    python -m kbuild.runtime --root ROOT record

The zipapp bootstrap calls main(sys.argv[1:], root). This is the one place that
prints and turns exceptions into messages and exit codes: 0 success, 1 check
failed, 2 bad usage or bad input, 3 cannot load, 4 the pipeline failed.

Only the standard library is imported at module level: ROOT/site must be on
sys.path before NumPy and the model libraries are imported.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from kbuild.runtime.contract.errors import AppError, ArtifactUsageError, ClientError, LoadError, missing_library
from kbuild.runtime.contract.layout import APP_DIR, BUILD_FILE, SBOM_FILE, SITE_DIR, TRACE_ENV, TRACE_PREFIX
from kbuild.runtime.contract.serve import GRPC_PORT_ENV, HTTP_PORT_ENV

if TYPE_CHECKING:
    from kbuild.runtime.contract.pipeline import PipelineSpec

COMMANDS = ("serve", "predict", "check", "info", "record")
# Set by the build: `record` and `check` name each step on stderr before it
# loads or runs, so a run that hangs can be blamed on its step.


def main(argv: list[str] | None = None, root: Path | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    parser = _parser(root_required=root is None)
    try:
        args = parser.parse_args(_with_default_command(args_list))
    except SystemExit as e:  # argparse has printed usage or help
        return e.code if isinstance(e.code, int) else 2
    root_dir = Path(args.root) if args.root else root
    assert root_dir is not None
    _use_site(root_dir)
    app_dir = root_dir / APP_DIR
    try:
        command = {
            "serve": _serve,
            "predict": _predict,
            "check": _check,
            "info": _info,
            "record": _record,
        }[args.command]
        return command(app_dir, args)
    except AppError as e:
        print(f"error: {e.message}", file=sys.stderr)
        return e.exit_code
    except (ImportError, OSError) as e:
        library = missing_library(e)
        if library is None:
            raise
        print(f"error: {library}", file=sys.stderr)
        return 3
    except KeyboardInterrupt:
        return 130


def exit_process(code: int) -> NoReturn:
    """End the process with `code`. Where a model is still loading on its
    thread (stopped during the load), the interpreter's finalization is
    skipped: a C++ runtime aborts when its static objects are destroyed under
    a running thread ("terminate called without an active exception", exit
    -6 instead of the 0 a stop during loading deserves)."""
    lifecycle = sys.modules.get("kbuild.runtime.lifecycle")
    if lifecycle is not None and lifecycle.loading():
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)


def _parser(root_required: bool) -> argparse.ArgumentParser:
    prog = "python -m kbuild.runtime" if root_required else os.path.basename(sys.argv[0])
    parser = argparse.ArgumentParser(prog=prog, description="Run a kbuild artifact.")
    parser.add_argument("--root", required=root_required, help="the artifact root (holds app/)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    serve = sub.add_parser("serve", help="serve the endpoints of the pipeline (default)")
    serve.add_argument(
        "--http-port",
        type=int,
        metavar="N",
        help=f"HTTP port (env {HTTP_PORT_ENV}; default from the pipeline)",
    )
    serve.add_argument(
        "--grpc-port",
        type=int,
        metavar="N",
        help=f"gRPC port (env {GRPC_PORT_ENV}; default from the pipeline, which must serve gRPC)",
    )
    predict = sub.add_parser("predict", help="JSON inputs (FILE or stdin) -> JSON outputs on stdout")
    predict.add_argument("file", nargs="?", metavar="FILE")
    sub.add_parser("check", help="run the embedded samples and compare with the build-time outputs")
    info = sub.add_parser("info", help="print the build report")
    info.add_argument("--sbom", action="store_true", help="print the artifact's CycloneDX SBOM instead")
    sub.add_parser("record", help="print the samples' outputs as JSON (used by the build)")
    return parser


def _with_default_command(argv: list[str]) -> list[str]:
    """Insert `serve` where no command is given, so `app.pyz --http-port 9000`
    works like `app.pyz serve --http-port 9000`."""
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg == "--root":
            i += 2
        elif arg.startswith("--root="):
            i += 1
        elif arg in ("-h", "--help") or arg in COMMANDS or not arg.startswith("-"):
            return argv
        else:
            break
    return [*argv[:i], "serve", *argv[i:]]


def _use_site(root: Path) -> None:
    site = root / SITE_DIR
    if site.is_dir() and str(site) not in sys.path:
        sys.path.insert(0, str(site))


def _spec(app_dir: Path) -> PipelineSpec:
    """pipeline.json with the process's environment applied: serve overrides
    and the model runtimes' thread count (kbuild.runtime.threads)."""
    from kbuild.runtime.threads import pool_environment, process_cpu_budget

    threads = process_cpu_budget(os.environ)
    os.environ.update(pool_environment(os.environ, threads))  # before NumPy loads its BLAS
    from kbuild.runtime.contract.pipeline import PipelineSpec

    spec = PipelineSpec.read(app_dir, os.environ)
    return dataclasses.replace(spec, threads=threads)


def _serve(app_dir: Path, args: argparse.Namespace) -> int:
    from kbuild.runtime.lifecycle import run_server

    spec = _spec(app_dir)  # the environment's ports are applied there; the flags win over them
    spec = dataclasses.replace(spec, serve=spec.serve.with_ports(http=args.http_port, grpc=args.grpc_port))
    return run_server(app_dir, spec, log=sys.stderr)


def _predict(app_dir: Path, args: argparse.Namespace) -> int:
    from kbuild.runtime.pipeline_runner import PipelineRunner
    from kbuild.runtime.tensors import decode_inputs, dumps, encode_outputs, loads

    try:
        text = Path(args.file).read_text(encoding="utf-8") if args.file else sys.stdin.read()
    except (OSError, UnicodeDecodeError) as e:
        raise ArtifactUsageError(f"cannot read {args.file or 'stdin'}: {e}") from None
    try:
        obj = loads(text)
    except ValueError as e:
        raise ClientError(f"malformed JSON: {e}") from None
    spec = _spec(app_dir)
    # Bad inputs are reported before paying for loading the models.
    inputs = decode_inputs(obj, spec.inputs)
    outputs = PipelineRunner.load(app_dir, spec).run(inputs)
    # A dropped record prints null: there is no prediction.
    print(dumps(None if outputs is None else encode_outputs(outputs)).decode())
    return 0


def _trace(action: str, name: str, step_type: str) -> None:
    print(f"{TRACE_PREFIX} {action} step '{name}' ({step_type})", file=sys.stderr, flush=True)


def _tracer() -> Any:
    return _trace if os.environ.get(TRACE_ENV) == "1" else None


def _check(app_dir: Path, args: argparse.Namespace) -> int:
    from kbuild.runtime.contract.integrity import damage, move_aside, read_files
    from kbuild.runtime.contract.layout import STAMPS
    from kbuild.runtime.pipeline_runner import PipelineRunner
    from kbuild.runtime.samples import check, read_samples

    root = app_dir.parent
    files = read_files(root)
    if files is not None:
        problem = damage(root, full=True)
        if problem is not None:
            print(f"artifact files: FAIL: {problem}")
            if (root / STAMPS).is_file():  # a zipapp's unpacked copy: the next start unpacks again
                move_aside(root, problem)
            return 1
        print(f"artifact files: ok ({len(files)} files as the build wrote them)")
    samples = read_samples(app_dir)
    results = check(PipelineRunner.load(app_dir, _spec(app_dir), trace=_tracer()), samples)
    counts = {"ok": 0, "fail": 0, "unverified": 0}
    for r in results:
        counts[r.status] += 1
        if r.status == "ok":
            print(f"sample {r.index}: ok")
        elif r.status == "unverified":
            print(f"sample {r.index}: ran, not verified (no recorded outputs or expect)")
        else:
            print(f"sample {r.index}: FAIL")
            for problem in r.problems:
                print(f"  {problem}")
    summary = f"{len(results)} samples: {counts['ok']} passed, {counts['fail']} failed"
    if counts["unverified"]:
        summary += f", {counts['unverified']} not verified"
    print(summary)
    return 1 if counts["fail"] else 0


def _record(app_dir: Path, args: argparse.Namespace) -> int:
    from kbuild.runtime.pipeline_runner import PipelineRunner
    from kbuild.runtime.samples import read_samples, record

    samples = read_samples(app_dir)
    print(json.dumps(record(PipelineRunner.load(app_dir, _spec(app_dir), trace=_tracer()), samples)))
    return 0


def _info(app_dir: Path, args: argparse.Namespace) -> int:
    path = app_dir.parent / SBOM_FILE if args.sbom else app_dir / BUILD_FILE
    what = "SBOM" if args.sbom else "build report"
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise LoadError(f"no {what}: cannot read {path}: {e.strerror or e}") from None
    print(text.rstrip("\n"))
    return 0
