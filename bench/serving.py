"""Serving benchmark: embeddings/s and p50/p99 latency through Triton (HTTP, gRPC) vs onnxruntime in-process.

    .venv/bin/python bench/serving.py                       # exports the untrained demo omni model to a temp dir
    .venv/bin/python bench/serving.py --onnx-dir models/onnx --seconds 5 --out bench/results/serving.json
    .venv/bin/python bench/serving.py --modalities text     # text-only rows only
    .venv/bin/python bench/serving.py --seconds 1 --repeats 1 --concurrency 32   # a short run

Rows: ``text`` (raw texts) and ``text+image`` (each
row a text and a PNG cover: JPEG/PNG decode, resize, EfficientNet-Lite0 ONNX,
then the encoder), for the same number of rows per request.

Starts its own tritonserver on free loopback ports with a temporary model
repository (it never touches the server under SAIL_HOME), promotes the export
as version 1 with the profile's ``serve`` settings (dynamic batching, instances,
onnxruntime threads), then, ``--repeats`` times, runs each backend at each
concurrency level (threads, one client per thread) for ``--seconds`` on the same
inputs, interleaved: in-process, HTTP and gRPC alternate within every repeat,
each repeat starting with a different one, so that a slow spell of a shared
machine does not fall on one backend. The figures are the medians over the
repeats; the ratios are Triton's embeddings/s over in-process at each level.

The in-process side is the backend's own ``OnnxEmbedder`` with the same thread
settings (``ServeConfig.backend_settings()``: threads, spinning, encoder and vision batches); the onnxruntime
version on both sides is read and recorded (a difference is printed in red).
Prints a table and writes JSON. A figure, not a test: nothing here asserts speed.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from sail_core.config import load_config  # noqa: E402
from sail_core.preprocess import samples  # noqa: E402
from serving.client import infer, make_client  # noqa: E402
from serving.ephemeral import ephemeral_server  # noqa: E402
from serving.promote import promote  # noqa: E402

console = Console()
WORDS = ("movie drama comedy action thriller romance story about a young old man woman city war love family "
         "night island winter summer journey secret friend detective space ship music school dream").split()


def make_texts(n: int, seed: int = 0) -> list[str]:
    """Deterministic movie-like strings of 3 to 40 words (so padding varies across batches)."""
    rng = random.Random(seed)
    return [f"{' '.join(rng.choice(WORDS) for _ in range(rng.randint(3, 40)))} ({rng.randint(1930, 2020)})"
            for _ in range(n)]


def export_untrained(out: Path, profile: str) -> Path:
    from sail_core.export.onnx import export_onnx
    from sail_core.model.omni import build_model

    console.print("exporting the untrained demo omni model to ONNX (no --onnx-dir given) ...")
    cfg = load_config(profile=profile)
    result = export_onnx(build_model(cfg.model), out, datasets=cfg.datasets)
    console.print(f"  exported in {result['export_seconds']} s; parity {result.get('parity')}")
    return out


def make_rows(modality: str, texts: list[str], k: int) -> list[dict]:
    """Requests of ``k`` rows: ``{"texts": [...]}`` or ``{"texts": [...], "images": [...]}``."""
    images = [samples.image_bytes(s, (320, 180), "PNG") for s in range(16)]
    out = []
    for i in range(0, len(texts), k):
        rows = {"texts": texts[i : i + k]}
        if modality == "text+image":
            rows["images"] = [images[(i + j) % len(images)] for j in range(len(rows["texts"]))]
        out.append(rows)
    return out


def reference_for(onnx_dir: Path, serve):
    """The export's record and the in-process onnxruntime runner's call, with the backend's settings
    (``serve.backend_settings()``: threads, spinning, encoder and vision batches): the same ``OnnxEmbedder``
    code and settings Triton's backend runs."""
    from serving.backend.embedder import OnnxEmbedder

    ref = OnnxEmbedder(onnx_dir, limits=serve.limit_values(), **serve.backend_settings())
    return ref.meta, lambda rows, dim: ref.embed(dim=dim, **rows)


def onnxruntime_versions() -> dict[str, str]:
    """onnxruntime's version in this process and in the Triton runtime venv (what the backend imports)."""
    import subprocess

    import onnxruntime

    from serving.runtime import ensure_runtime

    python = ensure_runtime().venv / "bin" / "python"
    triton = subprocess.run([str(python), "-c", "import onnxruntime; print(onnxruntime.__version__)"],
                            capture_output=True, text=True, check=True).stdout.strip()
    return {"in_process": onnxruntime.__version__, "triton_backend": triton}


def run_cell(make_worker, concurrency: int, seconds: float, batches: list[dict]) -> dict:
    """``concurrency`` threads send requests for ``seconds``; returns throughput and latency figures."""
    latencies: list[float] = []
    texts_done = [0]
    errors: list[str] = []
    lock = threading.Lock()
    deadline = [0.0]
    # The clock starts once every thread has warmed up (the barrier's action runs before release).
    start_gate = threading.Barrier(concurrency + 1, action=lambda: deadline.__setitem__(0, time.perf_counter() + seconds))

    def worker(index: int) -> None:
        call, close = make_worker()
        try:
            call(batches[index % len(batches)])  # warm-up, not timed
            start_gate.wait()
            i = index
            while time.perf_counter() < deadline[0]:
                batch = batches[i % len(batches)]
                t0 = time.perf_counter()
                try:
                    call(batch)
                except Exception as err:  # noqa: BLE001
                    with lock:
                        errors.append(repr(err)[:200])
                    continue
                elapsed = time.perf_counter() - t0
                with lock:
                    latencies.append(elapsed)
                    texts_done[0] += len(batch["texts"])
                i += concurrency
        finally:
            close()

    threads = [threading.Thread(target=worker, args=(k,), daemon=True) for k in range(concurrency)]
    for t in threads:
        t.start()
    start_gate.wait()
    began = time.perf_counter()
    for t in threads:
        t.join()
    wall = time.perf_counter() - began
    lat = np.asarray(latencies) * 1000.0
    return {
        "concurrency": concurrency,
        "requests": len(latencies),
        "errors": len(errors),
        "first_error": errors[0] if errors else None,
        "embeddings_per_s": texts_done[0] / wall if wall > 0 else 0.0,
        "p50_ms": float(np.percentile(lat, 50)) if lat.size else None,
        "p99_ms": float(np.percentile(lat, 99)) if lat.size else None,
        "wall_s": wall,
    }


BACKENDS = ("onnxruntime (in-process)", "triton http", "triton grpc")
RATIO_KEYS = {"triton http": "http_vs_in_process", "triton grpc": "grpc_vs_in_process"}


def median_cell(runs: list[dict]) -> dict:
    """One backend at one concurrency over the repeats: the median of each figure, the request and error totals."""
    def med(key):
        values = [r[key] for r in runs if r[key] is not None]
        return float(np.median(values)) if values else None

    first_error = next((r["first_error"] for r in runs if r["first_error"]), None)
    return {"requests": sum(r["requests"] for r in runs), "errors": sum(r["errors"] for r in runs),
            "first_error": first_error, "embeddings_per_s": med("embeddings_per_s"), "p50_ms": med("p50_ms"),
            "p99_ms": med("p99_ms"), "wall_s": sum(r["wall_s"] for r in runs), "repeats": len(runs),
            "runs": [{k: r[k] for k in ("embeddings_per_s", "p50_ms", "p99_ms", "requests", "errors")} for r in runs]}


def ratios_of(results: list[dict]) -> list[dict]:
    """Triton/in-process embeddings/s at each (rows, concurrency): the ratio of the medians, and the median of
    the per-repeat ratios (each Triton run against the in-process run of the same repeat)."""
    cells = {(r["rows"], r["backend"], r["concurrency"]): r for r in results}
    out = []
    for (rows, backend, level), ref in cells.items():
        if backend != BACKENDS[0]:
            continue
        entry = {"rows": rows, "concurrency": level}
        for name, key in RATIO_KEYS.items():
            other = cells[(rows, name, level)]
            base = ref["embeddings_per_s"] or 0.0
            entry[key] = other["embeddings_per_s"] / base if base else None
            paired = [o["embeddings_per_s"] / i["embeddings_per_s"] for o, i in zip(other["runs"], ref["runs"])
                      if i["embeddings_per_s"]]
            entry[f"{key}_paired_median"] = float(np.median(paired)) if paired else None
        out.append(entry)
    return out


def print_table(results: list[dict], ratios: list[dict], title: str) -> None:
    ratio = {(r["rows"], r["concurrency"]): r for r in ratios}
    table = Table(title=title)
    for col in ("rows", "backend", "threads", "emb/s", "p50 ms", "p99 ms", "vs in-process", "reqs", "errors"):
        table.add_column(col, justify="left" if col in ("rows", "backend") else "right")
    for r in results:
        key = RATIO_KEYS.get(r["backend"])
        vs = ratio[(r["rows"], r["concurrency"])][key] if key else None
        table.add_row(r["rows"], r["backend"], str(r["concurrency"]), f"{r['embeddings_per_s']:.1f}",
                      f"{r['p50_ms']:.1f}" if r["p50_ms"] is not None else "-",
                      f"{r['p99_ms']:.1f}" if r["p99_ms"] is not None else "-",
                      f"{vs:.2f}x" if vs is not None else "", str(r["requests"]), str(r["errors"]))
    console.print(table)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--onnx-dir", type=Path, default=None, help="export folder (default: export the untrained omni model)")
    parser.add_argument("--modalities", default="text,text+image", help="row kinds to measure: text, text+image")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "serving.json")
    parser.add_argument("--profile", default="demo", help="params.yaml profile for model/serve settings")
    parser.add_argument("--seconds", type=float, default=4.0, help="measured time per cell and repeat")
    parser.add_argument("--repeats", type=int, default=5, help="interleaved repeats; figures are their medians")
    parser.add_argument("--texts-per-request", type=int, default=4, help="rows per request")
    parser.add_argument("--concurrency", default="1,8,32")
    parser.add_argument("--dim", type=int, default=None, help="Matryoshka dim to request (default: full)")
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")

    cfg = load_config(profile=args.profile)
    levels = [int(c) for c in args.concurrency.split(",")]
    texts = make_texts(512)
    k = args.texts_per_request
    modalities = [m for m in args.modalities.split(",") if m]
    runs: dict[tuple[str, str, int], list[dict]] = {}
    with tempfile.TemporaryDirectory(prefix="sail-bench-serving-") as tmp:
        tmp = Path(tmp)
        onnx_dir = args.onnx_dir or export_untrained(tmp / "onnx", args.profile)
        meta, reference = reference_for(onnx_dir, cfg.serve)

        def ort_worker():
            return (lambda rows: reference(rows, args.dim)), (lambda: None)

        t0 = time.perf_counter()
        with ephemeral_server(tmp / "repo", cfg.serve, tmp / "state") as (serve_cfg, _info):
            server_start_s = time.perf_counter() - t0
            promoted = promote(onnx_dir, 1, serve_cfg, tmp / "repo")
            versions = onnxruntime_versions()
            console.print(f"tritonserver up in {server_start_s:.1f} s; model loaded in {promoted['load_seconds']} s; "
                          f"Triton vs onnxruntime max abs diff {promoted['max_abs_diff']:.2g}; onnxruntime "
                          f"{versions['in_process']} in process, {versions['triton_backend']} in Triton's backend")
            if versions["in_process"] != versions["triton_backend"]:
                console.print("[bold red]onnxruntime differs between the two sides[/]: pin the same version in "
                              "requirements.lock and serving/triton-requirements.txt")

            def triton_worker(protocol):
                def make():
                    client = make_client(serve_cfg, protocol)
                    return (lambda rows: infer(client, serve_cfg, protocol, dim=args.dim, **rows)), client.close
                return make

            workers = dict(zip(BACKENDS, (ort_worker, triton_worker("http"), triton_worker("grpc"))))
            for modality in modalities:
                batches = make_rows(modality, texts, k)
                for repeat in range(args.repeats):
                    # Interleaved: each repeat runs every backend at each level, starting with a different one.
                    order = BACKENDS[repeat % 3:] + BACKENDS[:repeat % 3]
                    for level in levels:
                        for name in order:
                            console.print(f"  {modality}: repeat {repeat + 1}/{args.repeats}, {name}, "
                                          f"concurrency {level} ...")
                            runs.setdefault((modality, name, level), []).append(
                                run_cell(workers[name], level, args.seconds, batches))

    results = [{"rows": modality, "backend": name, "concurrency": level, **median_cell(runs[(modality, name, level)])}
               for modality in modalities for name in BACKENDS for level in levels]
    ratios = ratios_of(results)
    serve = cfg.serve
    print_table(results, ratios, f"Serving throughput, median of {args.repeats} interleaved runs ({k} rows/request, "
                                 f"dim {args.dim or 'full'}, {os.cpu_count()} CPUs)")
    report = {
        "benchmark": "serving",
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
        "settings": {"seconds_per_cell": args.seconds, "repeats": args.repeats, "rows_per_request": k,
                     "dim": args.dim, "max_length": cfg.model.max_length, "max_batch_size": serve.max_batch_size,
                     "format": meta.format, "modalities": modalities, "concurrency": levels,
                     "onnx_dir": str(args.onnx_dir) if args.onnx_dir else "untrained demo omni export",
                     "serve": {"instances": serve.instances, "max_queue_delay_us": serve.max_queue_delay_us,
                               "preferred_batch_sizes": serve.preferred_batch_sizes, **serve.backend_settings()},
                     "onnxruntime": versions,
                     "figures": "median over repeats of each run's embeddings/s, p50 and p99; requests and "
                                "errors are totals"},
        "server_start_s": server_start_s,
        "model_load_s": promoted["load_seconds"],
        "triton_vs_onnxruntime_max_abs_diff": promoted["max_abs_diff"],
        "results": results,
        "ratios": ratios,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    console.print(f"wrote {args.out}")
    return report


if __name__ == "__main__":
    main()
