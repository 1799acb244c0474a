"""Load test: requests at fixed concurrency to a local Triton over HTTP and gRPC, with a promotion in the middle.

    .venv/bin/python bench/load.py                                  # 10,000 requests: 5,000 HTTP, then 5,000 gRPC
    .venv/bin/python bench/load.py --requests 64 --concurrency 8    # a smoke run
    .venv/bin/python bench/load.py --onnx-dir A --onnx-dir-2 B      # two exports of yours instead of untrained ones

Starts its own tritonserver on free loopback ports with a temporary model
repository (as bench/serving.py does; it never touches the server under
SAIL_HOME) and promotes export A as version 1. Then one phase per protocol
(``--requests`` split evenly between them, HTTP first): ``--concurrency``
threads, one client each, send one-row requests drawn from a fixed, seeded pool
of text, image (PNG/JPEG) and audio (WAV) rows at seeded Matryoshka dims. When
half of a phase's requests have answered, a thread promotes the next version with
``serving.promote.promote`` (as the pipeline does): HTTP phase v1 (A) -> v2 (B),
gRPC phase v2 -> v3 (A again, under a new number). The phase's last quarter of
requests is not sent before the promotion has returned, so some answers always
come after it, even in a short run (in a long run the promotion returns well
before, and nothing waits).

Every answer is checked twice: by the version Triton says served it and by
parity with that version's export run in-process (onnxruntime, same rows, same
dim). A request that started after its phase's promotion returned must be
answered by the new version. No client retries: each request is sent once
(gRPC transparent retries are switched off; tritonclient's HTTP transport never
re-sends a POST). Errors are counted by kind: the exception's class, or
``stale_version`` / ``parity`` for a wrong answer. Prints a table and writes
JSON; exits 1 on any error or unsent request. Bounded by ``--requests`` and
``--max-seconds`` (requests not sent by then are reported as ``not_sent``).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import random
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from rich.console import Console  # noqa: E402
from rich.progress import Progress  # noqa: E402
from rich.table import Table  # noqa: E402

from bench.serving import export_untrained, make_texts  # noqa: E402
from sail_core.config import load_config  # noqa: E402
from sail_core.preprocess import samples  # noqa: E402
from serving.client import infer, make_client  # noqa: E402
from serving.ephemeral import ephemeral_server  # noqa: E402
from serving.promote import PARITY_TOLERANCE, promote  # noqa: E402

console = Console(width=None if sys.stdout.isatty() else 120)  # a readable table in a log file too
MIX = {"text": 0.6, "image": 0.2, "audio": 0.2}  # share of requests per row kind
POOL_PER_KIND = 16  # distinct rows of each kind; the in-process reference embeds each once per export


def make_pool(seed: int, dims: list[int | None]) -> list[dict]:
    """The seeded pool of one-row requests: ``{"kind", "rows", "dim"}`` (rows: ``infer`` keywords)."""
    rng = random.Random(seed)
    texts = make_texts(POOL_PER_KIND, seed)
    pool = []
    for i in range(POOL_PER_KIND):
        size = (rng.randint(96, 640), rng.randint(96, 480))
        image = samples.image_bytes(seed * 1000 + i, size, rng.choice(["PNG", "JPEG"]))
        audio = samples.wav_bytes(seed * 1000 + i, seconds=rng.uniform(0.5, 3.0), rate=rng.choice([16000, 22050]))
        for kind, rows in (("text", {"texts": [texts[i]]}), ("image", {"images": [image]}),
                           ("audio", {"audios": [audio]})):
            pool.append({"kind": kind, "rows": rows, "dim": rng.choice(dims)})
    return pool


def make_schedule(pool: list[dict], n: int, seed: int) -> list[int]:
    """``n`` pool indices drawn with the MIX shares (fixed by ``seed``)."""
    rng = random.Random(seed)
    by_kind = {k: [i for i, p in enumerate(pool) if p["kind"] == k] for k in MIX}
    kinds = rng.choices(list(MIX), weights=list(MIX.values()), k=n)
    return [rng.choice(by_kind[k]) for k in kinds]


def references(onnx_dir: Path, pool: list[dict]) -> list[np.ndarray]:
    """The export's in-process onnxruntime answer to each pool request."""
    from serving.backend.embedder import OnnxEmbedder

    ref = OnnxEmbedder(onnx_dir)
    return [ref.embed(dim=p["dim"], **p["rows"]) for p in pool]


def grpc_client(serve_cfg):
    """A gRPC client like ``make_client``'s, with gRPC's transparent retries off (every request goes once)."""
    import tritonclient.grpc as grpcclient

    limit = grpcclient.MAX_GRPC_MESSAGE_SIZE
    return grpcclient.InferenceServerClient(
        url=f"{serve_cfg.host}:{serve_cfg.grpc_port}",
        channel_args=[("grpc.max_send_message_length", limit), ("grpc.max_receive_message_length", limit),
                      ("grpc.enable_retries", 0)])


def run_phase(protocol: str, serve_cfg, repo: Path, pool: list[dict], schedule: list[int],
              refs: dict[int, list[np.ndarray]], promotion: tuple[int, Path], concurrency: int,
              deadline: float, progress: Progress) -> dict:
    """Send ``schedule`` over ``protocol`` from ``concurrency`` threads; promote ``promotion`` halfway."""
    n = len(schedule)
    new_version, new_export = promotion
    records: list[tuple] = []  # (t_sent, t_answered, served version or None, error kind or None, message)
    lock = threading.Lock()
    next_index = itertools.count()
    halfway, promotion_returned = threading.Event(), threading.Event()
    promoted: dict = {}
    waited = [0.0]  # thread-seconds spent waiting for the promotion to return
    held = n - n // 4  # the last quarter of requests waits for the promotion to return (if it is still running)
    task = progress.add_task(f"{protocol}: {n} requests", total=n)

    def check(index: int, z: np.ndarray, served: str) -> tuple[str | None, str | None]:
        expected = refs.get(int(served)) if served.isdigit() else None
        if expected is None:
            return "unknown_version", f"served by version {served!r}, not one this bench promoted"
        diff = float(np.abs(z - expected[index]).max()) if z.shape == expected[index].shape else float("inf")
        if diff > PARITY_TOLERANCE:
            return "parity", f"version {served} answered {z.shape} differing by {diff:.3g} from its export"
        return None, None

    def worker() -> None:
        client = make_client(serve_cfg, "http") if protocol == "http" else grpc_client(serve_cfg)
        try:
            while time.monotonic() < deadline:
                i = next(next_index)
                if i >= n:
                    return
                if i >= held and not promotion_returned.is_set():
                    t_wait = time.monotonic()
                    promotion_returned.wait(max(0.0, deadline - time.monotonic()))
                    with lock:
                        waited[0] += time.monotonic() - t_wait
                p = schedule[i]
                t0 = time.monotonic()
                try:
                    z, served = infer(client, serve_cfg, protocol, dim=pool[p]["dim"], **pool[p]["rows"])
                    kind, message = check(p, z, served)
                except Exception as err:  # noqa: BLE001  (counted, never retried)
                    served, kind, message = None, type(err).__name__, str(err)[:300]
                t1 = time.monotonic()
                with lock:
                    records.append((t0, t1, served, kind, message))
                    done = len(records)
                progress.advance(task)
                if done >= n // 2:
                    halfway.set()
        finally:
            client.close()

    def promoter() -> None:
        try:
            while not halfway.wait(0.2):
                if time.monotonic() >= deadline:
                    return
            promoted["started"] = time.monotonic()
            try:
                result = promote(new_export, new_version, serve_cfg, repo)
                promoted.update(version=new_version, load_seconds=result["load_seconds"],
                                check_seconds=result["check_seconds"], max_abs_diff=result["max_abs_diff"])
            except Exception as err:  # noqa: BLE001
                promoted["error"] = f"{type(err).__name__}: {err}"
            promoted["returned"] = time.monotonic()
        finally:
            promotion_returned.set()

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(concurrency)]
    promo = threading.Thread(target=promoter, daemon=True)
    began = time.monotonic()
    for t in [*threads, promo]:
        t.start()
    for t in threads:
        t.join()
    wall = time.monotonic() - began
    halfway.set()  # (a phase cut short by --max-seconds)
    promo.join()
    return {**summarise(protocol, records, n, wall, concurrency, promoted, new_version),
            "threads_waited_for_promotion_s": round(waited[0], 2)}


def summarise(protocol: str, records: list[tuple], n: int, wall: float, concurrency: int, promoted: dict,
              new_version: int) -> dict:
    """Latency, throughput and errors by kind; answers sent after the promotion returned must be ``new_version``."""
    returned = promoted.get("returned", float("inf"))
    errors: Counter = Counter()
    examples: dict[str, str] = {}
    after, stale = 0, 0
    for t0, _t1, served, kind, message in records:
        if t0 >= returned and served is not None:
            after += 1
            if served != str(new_version):
                stale += 1
                kind, message = kind or "stale_version", message or f"sent after the promotion, served by {served}"
        if kind:
            errors[kind] += 1
            examples.setdefault(kind, message)
    if "error" in promoted:
        errors["promotion"] += 1
        examples["promotion"] = promoted["error"]
    ok = [t1 - t0 for t0, t1, _s, kind, _m in records if kind is None]
    lat = np.asarray(ok) * 1000.0
    served = Counter(s for _t0, _t1, s, _k, _m in records if s is not None)
    return {
        "protocol": protocol,
        "concurrency": concurrency,
        "requests": n,
        "answered": len(records),
        "not_sent": n - len(records),
        "errors": sum(errors.values()),
        "errors_by_kind": dict(errors),
        "error_examples": examples,
        "p50_ms": round(float(np.percentile(lat, 50)), 2) if lat.size else None,
        "p99_ms": round(float(np.percentile(lat, 99)), 2) if lat.size else None,
        "requests_per_s": round(len(records) / wall, 2) if wall > 0 else 0.0,
        "wall_s": round(wall, 2),
        "served_by_version": dict(sorted(served.items())),
        "promotion": {
            "to_version": new_version,
            "after_requests": sum(1 for r in records if r[1] <= promoted.get("started", float("inf"))),
            "seconds": round(promoted["returned"] - promoted["started"], 2) if "started" in promoted else None,
            **{k: promoted[k] for k in ("load_seconds", "check_seconds", "max_abs_diff", "error") if k in promoted},
            "answers_sent_after_it": after,
            "of_those_from_an_older_version": stale,
        },
    }


def print_table(results: list[dict], concurrency: int) -> None:
    table = Table(title=f"Load: one-row requests at concurrency {concurrency}, promotion halfway "
                        f"({os.cpu_count()} CPUs)")
    for col in ("protocol", "requests", "errors", "p50 ms", "p99 ms", "req/s", "promotion", "after it", "stale"):
        table.add_column(col, justify="left" if col == "protocol" else "right")
    for r in results:
        p = r["promotion"]
        table.add_row(r["protocol"], f"{r['answered']}/{r['requests']}", str(r["errors"]),
                      str(r["p50_ms"]), str(r["p99_ms"]), str(r["requests_per_s"]),
                      f"v{p['to_version']} in {p['seconds']} s", str(p["answers_sent_after_it"]),
                      str(p["of_those_from_an_older_version"]))
    console.print(table)
    for r in results:
        for kind, count in r["errors_by_kind"].items():
            console.print(f"[red]{r['protocol']}: {count} x {kind}[/]: {r['error_examples'][kind]}")


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=10_000, help="in all, split evenly between the protocols")
    parser.add_argument("--concurrency", type=int, default=32, help="client threads per phase")
    parser.add_argument("--max-seconds", type=float, default=1800.0, help="stop sending after this (all phases)")
    parser.add_argument("--protocols", default="http,grpc")
    parser.add_argument("--seed", type=int, default=0, help="fixes the pool of rows and the order of requests")
    parser.add_argument("--onnx-dir", type=Path, default=None, help="export A (default: untrained omni, seed 1)")
    parser.add_argument("--onnx-dir-2", type=Path, default=None, help="export B (default: untrained omni, seed 2)")
    parser.add_argument("--profile", default="demo", help="params.yaml profile for model/serve settings")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "load.json")
    args = parser.parse_args(argv)
    protocols = [p for p in args.protocols.split(",") if p]
    if args.requests < 2 * len(protocols) or args.concurrency < 1:
        parser.error("--requests must give each protocol at least 2 requests and --concurrency must be >= 1")

    cfg = load_config(profile=args.profile)
    per_protocol = args.requests // len(protocols)
    results: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="sail-bench-load-") as tmp:
        tmp = Path(tmp)
        exports = {}
        for key, given, seed in (("A", args.onnx_dir, 1), ("B", args.onnx_dir_2, 2)):
            if given is None:
                import torch

                torch.manual_seed(seed)  # the untrained parts differ, so parity tells the versions apart
            exports[key] = given or export_untrained(tmp / f"onnx-{key}", args.profile)
        from serving.backend.embedder import OnnxEmbedder

        dims = [None, *OnnxEmbedder(exports["A"]).dims]
        pool = make_pool(args.seed, dims)
        console.print(f"in-process references for {len(pool)} pooled rows x 2 exports ...")
        ref = {"A": references(exports["A"], pool), "B": references(exports["B"], pool)}
        distinct = sum(float(np.abs(a - b).max()) > PARITY_TOLERANCE for a, b in zip(ref["A"], ref["B"]))
        console.print(f"  exports A and B answer {distinct} of {len(pool)} pooled rows differently")

        t0 = time.perf_counter()
        with ephemeral_server(tmp / "repo", cfg.serve, tmp / "state") as (serve_cfg, _info):
            server_start_s = time.perf_counter() - t0
            first = promote(exports["A"], 1, serve_cfg, tmp / "repo")
            console.print(f"tritonserver up in {server_start_s:.1f} s; v1 loaded in {first['load_seconds']} s")
            versions = {1: "A"}
            deadline = time.monotonic() + args.max_seconds
            with Progress(console=console, transient=True) as progress:
                for k, protocol in enumerate(protocols):
                    new_version = k + 2
                    versions[new_version] = "B" if new_version % 2 == 0 else "A"
                    schedule = make_schedule(pool, per_protocol, args.seed + k)
                    refs = {v: ref[key] for v, key in versions.items()}
                    results.append(run_phase(protocol, serve_cfg, tmp / "repo", pool, schedule, refs,
                                             (new_version, exports[versions[new_version]]), args.concurrency,
                                             deadline, progress))

    print_table(results, args.concurrency)
    kinds = Counter(p["kind"] for p in pool)
    report = {
        "benchmark": "load",
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
        "settings": {"requests": args.requests, "requests_per_protocol": per_protocol, "protocols": protocols,
                     "concurrency": args.concurrency, "max_seconds": args.max_seconds, "seed": args.seed,
                     "rows_per_request": 1, "mix": MIX, "pool": dict(kinds), "dims": dims,
                     "parity_tolerance": PARITY_TOLERANCE, "client_retries": 0,
                     "max_batch_size": cfg.serve.max_batch_size,
                     "exports": {"A": str(args.onnx_dir or "untrained demo omni, torch seed 1"),
                                 "B": str(args.onnx_dir_2 or "untrained demo omni, torch seed 2")},
                     "versions": {str(v): key for v, key in versions.items()}},
        "exports_differ_on_rows": distinct,
        "server_start_s": round(server_start_s, 2),
        "errors": sum(r["errors"] for r in results),
        "not_sent": sum(r["not_sent"] for r in results),
        "results": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    console.print(f"wrote {args.out}")
    return report


if __name__ == "__main__":
    outcome = main()
    sys.exit(1 if outcome["errors"] or outcome["not_sent"] else 0)
