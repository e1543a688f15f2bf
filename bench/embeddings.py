"""Embedding servers side by side: the embeddings example (all-MiniLM-L6-v2)
built by kbuild, float and int8, against Infinity (infinity-emb, its optimum
engine: onnxruntime on CPU), sentence-transformers behind FastAPI+uvicorn, and
sentence-transformers' own `encode()` in-process at batch 32.

    python bench/embeddings.py             # prints the Markdown section
    python bench/embeddings.py --write     # and puts it into BENCHMARKS.md

Every server gets OpenAI-shaped POST requests of one text each (short, about
12 tokens, and long, about 128), from wrk at 1 and 32 connections. The servers
run at once and take turns within each round (the ones not measured are
stopped, SIGSTOP); the in-process `encode()` runs while all are stopped.
Infinity and sentence-transformers+FastAPI run from environments of their own
(bench/peer_envs.py); Infinity's optimum engine reads an ONNX file from the
model folder, as the published repository carries one, so this benchmark
exports it there first.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import REPO, WORK, free_port, human_bytes, kbuild, machine, median, need, post_script, table, turns_options  # noqa: E402
from peer_envs import ensure, size_mib  # noqa: E402
from peer_servers import Running, start_server  # noqa: E402
from serving_servers import wrk, wrk_counting  # noqa: E402

EXAMPLE = REPO / "examples" / "embeddings"
MODEL = "all-minilm-l6-v2"
CONNECTIONS = (1, 32)
TEXTS = {
    "short": "A man is eating a bowl of noodles at the market.",
    "long": (
        "The committee met on Thursday to review the city's plans for the new tram line, which would connect "
        "the railway station with the university campus and the hospital on the hill. Residents along the "
        "proposed route raised concerns about noise during construction, the loss of parking spaces and the "
        "felling of old trees in the avenue, while shop owners hoped that more passengers would bring more "
        "customers. Engineers explained that the tracks would be laid in stages over three years, that most "
        "work would happen at night and that bus services would replace the trams where streets were closed."
    ),
}
IN_PROCESS = """
import json, sys, time
from sentence_transformers import SentenceTransformer
model = SentenceTransformer(sys.argv[1], device="cpu")
texts = json.loads(sys.argv[2]); seconds = float(sys.argv[3])
out = {}
for name, text in texts.items():
    batch = [text] * 32
    model.encode(batch, batch_size=32)
    done, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        model.encode(batch, batch_size=32); done += 32
    out[name] = done / (time.perf_counter() - start)
print(json.dumps(out))
"""


def model_folder() -> Path:
    folder = EXAMPLE / "models" / "all-MiniLM-L6-v2"
    if not folder.is_dir():
        subprocess.run([sys.executable, str(EXAMPLE / "get_model.py")], check=True, stdout=subprocess.DEVNULL)
    return folder


# The published repository's onnx/model.onnx is optimum's export of the
# encoder; optimum 1.24 (what Infinity 0.0.78 runs on) cannot drive torch
# 2.13's exporter, so the same export is made here with torch's TorchScript
# exporter: the encoder's three inputs, last_hidden_state out, dynamic axes.
EXPORT = """
import sys, torch
from transformers import AutoModel, AutoTokenizer
folder, out = sys.argv[1], sys.argv[2]
model = AutoModel.from_pretrained(folder).eval()
batch = AutoTokenizer.from_pretrained(folder)(["an example sentence"], return_tensors="pt")
names = ["input_ids", "attention_mask", "token_type_ids"]
axes = {n: {0: "batch", 1: "sequence"} for n in names} | {"last_hidden_state": {0: "batch", 1: "sequence"}}
torch.onnx.export(model, tuple(batch[n] for n in names), out, input_names=names,
                  output_names=["last_hidden_state"], dynamic_axes=axes, opset_version=17, dynamo=False)
"""


def infinity_folder(work: Path, folder: Path, venv: Path) -> Path:
    """The model folder with onnx/model.onnx, as its published repository has."""
    target = work / "infinity-model"
    if not (target / "onnx" / "model.onnx").is_file():
        shutil.rmtree(target, ignore_errors=True)
        shutil.copytree(folder, target)
        (target / "onnx").mkdir()
        subprocess.run(
            [str(venv / "bin" / "python"), "-c", EXPORT, str(target), str(target / "onnx" / "model.onnx")],
            check=True,
            capture_output=True,
        )
    return target


def embed(server: Running, text: str) -> np.ndarray:
    """The server's vector for `text`."""
    import urllib.request

    body = json.dumps({"model": MODEL, "input": [text], "encoding_format": "float"}).encode()
    request = urllib.request.Request(server.url, body, {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as answer:
        return np.array(json.loads(answer.read())["data"][0]["embedding"], dtype=np.float32)


def start_servers(work: Path, folder: Path, servers: dict[str, Running]) -> dict[str, int]:
    """Each server started into `servers` (so that the caller stops those
    that started should a later one fail); the bytes each one ships."""
    sizes: dict[str, int] = {}
    env = {"HF_HUB_OFFLINE": "1", "INFINITY_ANONYMOUS_USAGE_STATS": "0", "DO_NOT_TRACK": "1"}
    for variant, pipeline in (("kbuild float", "pipeline.yaml"), ("kbuild int8", "int8.yaml")):
        out = work / pipeline.removesuffix(".yaml")
        artifact = Path(kbuild("--spin", "cpu-linux-x86_64", "-o", out, EXAMPLE / pipeline).stdout.split()[-1])
        sizes[variant] = artifact.stat().st_size
        port = free_port()
        servers[variant] = start_server(
            variant,
            [sys.executable, str(artifact), "serve", "--http-port", str(port)],
            f"http://127.0.0.1:{port}/v2/health/ready",
            f"http://127.0.0.1:{port}/v1/embeddings",
            "",
            env,
            cwd=REPO,
        )
    venv = ensure("infinity")
    inf_model = infinity_folder(work, folder, venv)
    sizes["Infinity"] = int((size_mib(venv) + size_mib(inf_model)) * 2**20)
    port = free_port()
    servers["Infinity"] = start_server(
        "Infinity",
        [str(venv / "bin" / "infinity_emb"), "v2", "--model-id", str(inf_model), "--served-model-name", MODEL]
        + ["--engine", "optimum", "--device", "cpu", "--port", str(port), "--log-level", "warning"]
        # from a local folder its auto-detection picks CLS pooling; the folder's 1_Pooling says mean
        + ["--pooling-method", "mean"],
        f"http://127.0.0.1:{port}/health",
        f"http://127.0.0.1:{port}/embeddings",
        "",
        env,
    )
    venv = ensure("st-fastapi")
    sizes["sentence-transformers + FastAPI"] = int((size_mib(venv) + size_mib(folder)) * 2**20)
    port = free_port()
    servers["sentence-transformers + FastAPI"] = start_server(
        "sentence-transformers + FastAPI",
        [str(venv / "bin" / "python"), str(REPO / "bench" / "peers" / "st_embeddings_server.py"), str(port)],
        f"http://127.0.0.1:{port}/health",
        f"http://127.0.0.1:{port}/v1/embeddings",
        "",
        {**env, "ST_MODEL": str(folder), "PYTHONPATH": str(REPO / "bench" / "peers")},
    )
    return sizes


def token_counts(folder: Path) -> dict[str, int]:
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
    tokenizer.no_padding()  # the file pads every text to 128
    tokenizer.no_truncation()
    return {name: len(tokenizer.encode(text).ids) for name, text in TEXTS.items()}


def main() -> None:
    parser = turns_options(__doc__ or "", seconds=5, rounds=3)
    args = parser.parse_args()
    need("wrk")
    work = WORK / "embeddings"
    work.mkdir(parents=True, exist_ok=True)
    folder = model_folder()
    tokens = token_counts(folder)
    servers: dict[str, Running] = {}
    results: dict[tuple[str, str, int], list[tuple[float, float, float, int]]] = {}
    in_process: dict[str, list[float]] = {}
    try:
        sizes = start_servers(work, folder, servers)
        from sentence_transformers import SentenceTransformer

        reference = SentenceTransformer(str(folder), device="cpu").encode(list(TEXTS.values()))
        cosines = {}
        for name, server in servers.items():
            got = np.stack([embed(server, text) for text in TEXTS.values()])
            cos = (got * reference).sum(1) / (np.linalg.norm(got, axis=1) * np.linalg.norm(reference, axis=1))
            cosines[name] = float(cos.min())
        scripts = {}
        for text_name, text in TEXTS.items():
            body = json.dumps({"model": MODEL, "input": text, "encoding_format": "float"})
            scripts[text_name] = post_script(work / f"{text_name}.lua", body)
        for server in servers.values():  # warm-up, then stopped
            wrk(server.url, 8, 2, scripts["short"])
            server.pause()
        for _ in range(args.rounds):
            encoded = subprocess.run(
                [sys.executable, "-c", IN_PROCESS, str(folder), json.dumps(TEXTS), str(args.seconds)],
                capture_output=True,
                text=True,
                check=True,
            ).stdout
            for text_name, rate in json.loads(encoded.splitlines()[-1]).items():
                in_process.setdefault(text_name, []).append(rate)
            for text_name, script in scripts.items():
                for connections in CONNECTIONS:
                    for name, server in servers.items():
                        server.resume()
                        results.setdefault((name, text_name, connections), []).append(
                            wrk_counting(server.url, connections, args.seconds, script)
                        )
                        server.pause()
        for server in servers.values():
            server.resume()
        rss = {name: server.memory_mib("VmRSS") for name, server in servers.items()}
    finally:
        for server in servers.values():
            server.stop()
    text = section(args, tokens, servers, results, in_process, rss, sizes, cosines)
    print(text)
    if args.write:
        from common import write_section

        write_section("Embeddings", text)


def _failed(count: int) -> str:
    return f" ({count} failed)" if count else ""


def section(
    args: object,
    tokens: dict[str, int],
    servers: dict[str, Running],
    results: dict[tuple[str, str, int], list[tuple[float, float, float, int]]],
    in_process: dict[str, list[float]],
    rss: dict[str, float],
    sizes: dict[str, int],
    cosines: dict[str, float],
) -> str:
    rate = {key: median([m[0] for m in measured]) for key, measured in results.items()}
    rows = []
    for text_name in TEXTS:
        for name in servers:
            cells: list[object] = [f"{text_name} ({tokens[text_name]} tokens)", name]
            for connections in CONNECTIONS:
                measured = results[(name, text_name, connections)]
                cells += [
                    f"{rate[(name, text_name, connections)]:.0f}",
                    f"{median([m[1] for m in measured]):.1f} ms",
                    f"{median([m[2] for m in measured]):.1f} ms" + _failed(sum(m[3] for m in measured)),
                ]
            cells += [f"{rss[name]:.0f} MiB", human_bytes(sizes[name]), f"{cosines[name]:.5f}"]
            rows.append(cells)
        st = median(in_process[text_name])
        label = f"{text_name} ({tokens[text_name]} tokens)"
        rows.append(
            [label, "sentence-transformers `encode()`, batch 32", *[f"{st:.0f}", "", ""] * 2, "", "", "1.00000"]
        )
    headers = ["texts", "server", "req/s, 1 conn", "p50", "p99", "req/s, 32 conn", "p50", "p99"]
    headers += ["RSS after", "artifact or environment", "min cosine to ST"]
    ratios = []
    for text_name in TEXTS:
        st = median(in_process[text_name])
        float32 = rate[("kbuild float", text_name, 32)]
        int8 = rate[("kbuild int8", text_name, 32)]
        ratios.append(
            f"- {text_name}: kbuild float at 32 connections {float32 / st:.2f}× sentence-transformers `encode()` "
            f"in-process (target ≥ 2×); int8 {int8 / float32:.2f}× float (target ≥ 1.5×); kbuild float against "
            f"Infinity {rate[('kbuild float', text_name, 1)] / rate[('Infinity', text_name, 1)]:.2f}× at 1 "
            f"connection, {float32 / rate[('Infinity', text_name, 32)]:.2f}× at 32; against "
            f"sentence-transformers + FastAPI {float32 / rate[('sentence-transformers + FastAPI', text_name, 32)]:.2f}× "
            "at 32"
        )
    seconds, rounds = getattr(args, "seconds"), getattr(args, "rounds")
    return (
        "## Embeddings\n\n"
        f"{machine()}.\n\n"
        "all-MiniLM-L6-v2 (the published sentence-transformers folder) served four ways, each request one text "
        "on an OpenAI-shaped POST /v1/embeddings (Infinity: /embeddings), answers as floats: kbuild's "
        "examples/embeddings built as a zipapp (float: converted and fused at build time; int8: also quantized), "
        "Infinity 0.0.78 with its optimum engine (onnxruntime, its own graph optimisation), sentence-transformers "
        "behind FastAPI+uvicorn (one worker, `encode()` per request), and sentence-transformers' `encode()` "
        f"in-process at batch 32 (sentences/s). wrk for {seconds} s per turn, {rounds} rounds, the servers taking "
        "turns (medians). RSS: the server's processes after their last turn. Artifact or environment: the zipapp; "
        "for the peers their virtual environment and model folder. Min cosine: the server's vectors for both "
        "texts against sentence-transformers' own. Failed: requests answered with an error or not within wrk's 2 s, "
        "over all rounds. Command: `python bench/embeddings.py --write`.\n\n"
        + table(headers, rows)
        + "\n"
        + "\n".join(ratios)
        + "\n"
    )


if __name__ == "__main__":
    main()
