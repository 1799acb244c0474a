"""Evaluation at catalogue scale: exact and approximate FAISS search over a synthetic 1M x 384 catalogue.

    .venv/bin/python bench/eval_scale.py                              # 1M items, 10k queries (a few minutes)
    .venv/bin/python bench/eval_scale.py --items 100000 --queries 2000 --out bench/results/eval_scale_100k.json
    .venv/bin/python bench/eval_scale.py --hnsw                       # also HNSW (slow to build at 1M)

The catalogue is a Gaussian mixture: ``--centres`` random unit centres, each item
``normalise(centre + spread * g / sqrt(dim))`` with its centre drawn uniformly and
``g ~ N(0, I)``. It is generated in float32 blocks and streamed to disk with
:func:`sail_core.index.vectors.write_vectors` (never held in memory whole). Each query
is a noisy copy of one catalogue row, ``normalise(x_r + noise * h / sqrt(dim))``, and
that row is its one relevant item.

Everything goes through the evaluation's own code path: :func:`build_index`,
:func:`search`, :func:`recall_from_ranked` and the bootstrap intervals of
:mod:`sail_core.eval.intervals`. Reported:

- exact (``flat``) search: build, search and metric seconds; Recall@1/10/50 with 95%
  intervals; peak memory (``ru_maxrss``) up to the end of the exact phase;
- IVF (``--nlist``/``--nprobe``): build (train + add) and search seconds, its
  Recall@10 against exact (overlap of the top-10 ids), its own Recall@k, and the
  ratio of exact to IVF search time, measured in the same process;
- HNSW with ``--hnsw``. Off by default: measured at 1M on 2 busy cores (FAISS defaults but
  M=32, efConstruction 40, efSearch 128) its graph build took 161 s against IVF's 15 s, and on
  these noisy queries (cosine about 0.45 to their row) it found only a third of exact search's
  top 10 (0.87 at 100k), so it is not yet a usable catalogue index here.

The construction fixes how often a relevant row can be beaten: a row ``j`` with
``rho = x_r . x_j`` outscores ``x_r`` for the query with probability exactly
``Phi(-sqrt((1 - rho) * dim / 2) / noise)`` (the query noise is Gaussian). Summing over
the catalogue gives the expected number of rows ``E[B]`` above the relevant one, and
``E[Recall@k] >= 1 - E[B] / k`` (Markov). That floor is written to the JSON
("construction") next to the measured recall.

Prints a table and writes JSON (machine facts, settings, figures, the targets and
whether each was met). A figure, not a test: nothing here fails on time or memory.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import math
import os
import platform
import resource
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402
from tqdm.auto import tqdm  # noqa: E402

from sail_core.eval.intervals import interval  # noqa: E402
from sail_core.index.search import QUERY_BLOCK, build_index, recall_from_ranked, search  # noqa: E402
from sail_core.index.vectors import release_pages, write_vectors  # noqa: E402

console = Console(width=None if sys.stdout.isatty() else 150)
PROGRESS = {"on": True}  # --quiet turns progress bars and spinners off
KS = (1, 10, 50)
GEN_BLOCK = 32_768                    # catalogue rows generated (and written) at a time
TARGETS = {"exact_total_s": 60.0,     # exact build + search + metrics, 2 cores
           "exact_peak_rss_gb": 3.0}  # peak resident memory up to the end of the exact phase


# --- the synthetic catalogue ----------------------------------------------------------------

def _normalise(x: np.ndarray) -> np.ndarray:
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x


def make_centres(centres: int, dim: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng([seed, 0])
    return _normalise(rng.standard_normal((centres, dim), dtype=np.float32))


def catalogue_blocks(n: int, centres: np.ndarray, spread: float, seed: int, block: int = GEN_BLOCK):
    """Float32 blocks of catalogue rows (each ``normalise(centre + spread * g / sqrt(dim))``), in row order."""
    rng = np.random.default_rng([seed, 1])
    dim = centres.shape[1]
    starts = range(0, n, block)
    if PROGRESS["on"]:
        starts = tqdm(starts, desc=f"catalogue ({n:,} x {dim})", unit="block", mininterval=1.0, leave=False)
    for s in starts:
        b = min(block, n - s)
        x = rng.standard_normal((b, dim), dtype=np.float32)
        x *= np.float32(spread / math.sqrt(dim))
        x += centres[rng.integers(len(centres), size=b)]
        yield _normalise(x)


def make_queries(vectors: np.ndarray, count: int, noise: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(queries, relevant rows): each query a noisy copy of a distinct catalogue row."""
    rng = np.random.default_rng([seed, 2])
    n, dim = vectors.shape
    rows = rng.choice(n, size=min(count, n), replace=False)
    order = np.argsort(rows)  # read the memory-mapped rows in file order
    x = np.empty((len(rows), dim), dtype=np.float32)
    x[order] = vectors[rows[order]]
    release_pages(vectors)  # a scattered read maps whole (large) page-cache folios, not just these rows
    x += np.float32(noise / math.sqrt(dim)) * rng.standard_normal(x.shape, dtype=np.float32)
    return _normalise(x), rows


def construction_floor(items: int, dim: int, centres: int, spread: float, noise: float, seed: int,
                       pairs: int = 5_000) -> dict:
    """The expected number ``E[B]`` of catalogue rows that outscore a query's relevant row, and the
    floors ``1 - E[B] / k`` on the expected Recall@k.

    Given the rows, row ``j`` beats row ``r`` for the query ``x_r + noise * h / sqrt(dim)`` with
    probability ``Phi(-sqrt((1 - rho) * dim / 2) / noise)``, ``rho = x_r . x_j`` (exact: the query
    noise is Gaussian). Its mean over ``rho`` is taken on ``pairs`` sampled pairs of rows with the
    same centre and with different centres; each other row shares the query row's centre with
    probability ``1 / centres``.
    """
    from scipy.stats import norm

    rng = np.random.default_rng([seed, 3])
    c = _normalise(rng.standard_normal((2 * pairs, dim), dtype=np.float32)).astype(np.float64)

    def rows(cen):
        return _normalise(cen + spread / math.sqrt(dim) * rng.standard_normal(cen.shape))

    def p_beat(a, b):
        rho = np.clip(np.einsum("ij,ij->i", a, b), -1.0, 1.0)
        return float(np.mean(norm.cdf(-np.sqrt((1.0 - rho) * dim / 2.0) / noise)))

    same_c = c[:pairs]
    p_same = p_beat(rows(same_c), rows(same_c))
    p_other = p_beat(rows(c[:pairs]), rows(c[pairs:]))
    expected = (items - 1) * (p_same / centres + p_other * (1.0 - 1.0 / centres))
    return {"expected_rows_above_relevant": expected, "p_beat_same_centre": p_same,
            "p_beat_other_centre": p_other,
            "recall_floor": {str(k): max(0.0, 1.0 - expected / k) for k in KS},
            "note": "E[Recall@k] >= 1 - E[B]/k, B = rows that outscore the relevant row"}


# --- measuring -----------------------------------------------------------------------------

def peak_rss_gb() -> float:
    """Peak resident set of this process so far, GiB: ``VmHWM`` on Linux (this program's own high-water mark;
    ``ru_maxrss`` would also count the parent's, which Linux carries across fork and exec), else ``ru_maxrss``."""
    hwm = _proc_status_gib("VmHWM")
    if hwm is not None:
        return hwm
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (2**30 if sys.platform == "darwin" else 2**20)


def vm_peak_gb() -> float | None:
    """Peak virtual (address-space) size, Linux only: what ``RLIMIT_AS`` bounds."""
    return _proc_status_gib("VmPeak")


def _proc_status_gib(field: str) -> float | None:
    """A kB field of ``/proc/self/status`` (Linux) in GiB; None elsewhere."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) / 2**20
    except OSError:
        pass
    return None


def spinner(message: str):
    return console.status(message) if PROGRESS["on"] else contextlib.nullcontext()


class Clock:
    """Wall and process CPU seconds (all threads) since it started: CPU / wall is how much of the
    machine the phase got (about 2 on 2 idle cores; less when other jobs compete)."""

    def __init__(self):
        self.wall, self.cpu = time.perf_counter(), time.process_time()

    def lap(self) -> tuple[float, float]:
        return time.perf_counter() - self.wall, time.process_time() - self.cpu


def timed_search(index, queries: np.ndarray, k: int, desc: str) -> tuple[np.ndarray, float, float]:
    """Top-``k`` ids of every query through :func:`search`, a block of queries at a time (for progress);
    with the wall and CPU seconds it took."""
    ids = np.empty((len(queries), k), dtype=np.int64)
    clock = Clock()
    for s in tqdm(range(0, len(queries), QUERY_BLOCK), desc=desc, unit="block", leave=False,
                  disable=not PROGRESS["on"]):
        ids[s : s + QUERY_BLOCK] = search(index, queries[s : s + QUERY_BLOCK], k)[1]
    return ids, *clock.lap()


def with_ci(values: np.ndarray) -> dict:
    low, high = interval(values)
    return {"mean": float(np.mean(values)), "ci_low": low, "ci_high": high}


def recall_figures(ids: np.ndarray, relevant: np.ndarray, ks=KS) -> dict:
    per_query = recall_from_ranked(ids, relevant.tolist(), list(ks))
    return {str(k): with_ci(v) for k, v in per_query.items()}


def overlap_at(ids: np.ndarray, reference: np.ndarray, k: int) -> np.ndarray:
    """Per query: |top-k of ids ∩ top-k of reference| / k (the approximate index's recall against exact)."""
    a, b = ids[:, :k], reference[:, :k]
    hits = (a[:, :, None] == b[:, None, :]) & (b[:, None, :] >= 0)
    return hits.any(axis=2).sum(axis=1) / k


def approximate(kind: str, vectors, queries, relevant, exact_ids, exact_search_s, k, **index_args) -> dict:
    with spinner(f"{kind}: building over {len(vectors):,} rows {index_args} ..."):
        clock = Clock()
        index = build_index(vectors, kind, **index_args)
        build_s, build_cpu_s = clock.lap()
    console.print(f"{kind}: built in {build_s:.1f} s (CPU {build_cpu_s:.1f} s)")
    if hasattr(index, "nlist"):  # build_index caps nlist (and nprobe) by the rows it trains on
        index_args = {**index_args, "nlist": int(index.nlist), "nprobe": int(index.nprobe)}
    ids, search_s, search_cpu_s = timed_search(index, queries, k, f"{kind} search (k={k})")
    del index
    gc.collect()
    t = time.perf_counter()
    out = {**index_args, "build_s": build_s, "search_s": search_s, "build_cpu_s": build_cpu_s,
           "search_cpu_s": search_cpu_s,
           "recall_vs_exact_at_10": with_ci(overlap_at(ids, exact_ids, 10)),
           "recall": recall_figures(ids, relevant),
           "search_speedup_vs_exact": exact_search_s / search_s if search_s > 0 else None}
    out["metrics_s"] = time.perf_counter() - t
    out["load_1m_after"] = os.getloadavg()[0]
    out["peak_rss_gb_so_far"], out["vm_peak_gb_so_far"] = peak_rss_gb(), vm_peak_gb()
    console.print(f"{kind}: searched in {search_s:.1f} s (exact / {kind} search time: "
                  f"{out['search_speedup_vs_exact']:.2f}); "
                  f"recall@10 vs exact {out['recall_vs_exact_at_10']['mean']:.4f}")
    return out


# --- the run -------------------------------------------------------------------------------

def run(args, workdir: Path) -> dict:
    t_all = time.perf_counter()
    result: dict = {
        "benchmark": "eval_scale",
        "when": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "machine": machine_facts(),
        "settings": {"items": args.items, "dim": args.dim, "queries": args.queries, "centres": args.centres,
                     "spread": args.spread, "noise": args.noise, "seed": args.seed, "k": args.k,
                     "nlist": args.nlist, "nprobe": args.nprobe, "hnsw": args.hnsw, "hnsw_m": args.hnsw_m,
                     "ef_search": args.ef_search, "query_block": QUERY_BLOCK, "generate_block": GEN_BLOCK},
    }
    result["construction"] = construction_floor(args.items, args.dim, args.centres, args.spread, args.noise, args.seed)

    # 1. the catalogue, streamed to disk; the queries
    t = time.perf_counter()
    centres = make_centres(args.centres, args.dim, args.seed)
    vectors = write_vectors(workdir / "vectors.npy",
                            catalogue_blocks(args.items, centres, args.spread, args.seed),
                            args.items, args.dim)
    queries, relevant = make_queries(vectors, args.queries, args.noise, args.seed)
    result["generate"] = {"seconds": time.perf_counter() - t, "catalogue_gb": vectors.nbytes / 2**30,
                          "peak_rss_gb_so_far": peak_rss_gb(), "vm_peak_gb_so_far": vm_peak_gb()}
    console.print(f"catalogue {args.items:,} x {args.dim} ({vectors.nbytes / 2**30:.2f} GiB) and "
                  f"{len(queries):,} queries in {result['generate']['seconds']:.1f} s")

    # 2. exact search: the reference every approximate index is held against
    with spinner("flat: building ..."):
        clock = Clock()
        index = build_index(vectors, "flat")
        build_s, build_cpu_s = clock.lap()
    exact_ids, search_s, search_cpu_s = timed_search(index, queries, args.k, f"exact search (k={args.k})")
    del index
    gc.collect()
    t = time.perf_counter()
    recall = recall_figures(exact_ids, relevant)
    metrics_s = time.perf_counter() - t
    exact = {"build_s": build_s, "search_s": search_s, "metrics_s": metrics_s, "build_cpu_s": build_cpu_s,
             "search_cpu_s": search_cpu_s, "load_1m_after": os.getloadavg()[0],
             "search_plus_metrics_s": search_s + metrics_s, "total_s": build_s + search_s + metrics_s,
             "recall": recall, "peak_rss_gb": peak_rss_gb(), "vm_peak_gb_so_far": vm_peak_gb()}
    result["exact"] = exact
    console.print(f"flat: built in {build_s:.1f} s, searched in {search_s:.1f} s (CPU {search_cpu_s:.1f} s), "
                  f"metrics in {metrics_s:.1f} s")

    # 3. approximate indexes, against exact, in the same process
    result["ivf"] = approximate("ivf", vectors, queries, relevant, exact_ids, search_s, args.k,
                                nlist=args.nlist, nprobe=args.nprobe, seed=args.seed)
    if args.hnsw:
        result["hnsw"] = approximate("hnsw", vectors, queries, relevant, exact_ids, search_s, args.k,
                                     hnsw_m=args.hnsw_m, ef_search=args.ef_search)
    else:
        result["hnsw"] = {"skipped": "off by default (--hnsw): at 1M its graph build dominates the run"}

    result["peak_rss_gb"] = peak_rss_gb()
    result["vm_peak_gb"] = vm_peak_gb()
    result["total_s"] = time.perf_counter() - t_all
    result["machine"]["load_after"] = list(os.getloadavg())
    result["targets"] = {
        "exact_total_s": {"target": TARGETS["exact_total_s"], "value": exact["total_s"],
                          "met": exact["total_s"] <= TARGETS["exact_total_s"],
                          "what": "exact build + search + Recall@k with intervals, seconds"},
        "exact_peak_rss_gb": {"target": TARGETS["exact_peak_rss_gb"], "value": exact["peak_rss_gb"],
                              "met": exact["peak_rss_gb"] <= TARGETS["exact_peak_rss_gb"],
                              "what": "ru_maxrss up to the end of the exact phase (generation included), GiB"},
    }
    return result


def machine_facts() -> dict:
    import faiss
    import scipy

    return {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
            "faiss": faiss.__version__, "faiss_omp_threads": faiss.omp_get_max_threads(),
            "numpy": np.__version__, "scipy": scipy.__version__, "load_before": list(os.getloadavg())}


def print_table(result: dict) -> None:
    s = result["settings"]
    table = Table(title=f"Search at scale: {s['items']:,} x {s['dim']}, {s['queries']:,} queries, "
                        f"{result['machine']['cpus']} CPUs")
    for col in ("index", "build s", "search s", "R@1", "R@10", "R@50", "R@10 vs exact", "speed-up"):
        table.add_column(col, justify="right" if col != "index" else "left")

    def r(x):
        return f"{x['mean']:.4f} [{x['ci_low']:.4f}, {x['ci_high']:.4f}]"

    for name in ("exact", "ivf", "hnsw"):
        row = result.get(name) or {}
        if "build_s" not in row:
            continue
        label = {"exact": "flat (exact)", "ivf": f"ivf nlist={row.get('nlist')} nprobe={row.get('nprobe')}",
                 "hnsw": f"hnsw M={row.get('hnsw_m')} ef={row.get('ef_search')}"}[name]
        vs = row.get("recall_vs_exact_at_10")
        table.add_row(label, f"{row['build_s']:.1f}", f"{row['search_s']:.1f}",
                      *(r(row["recall"][str(k)]) for k in KS),
                      r(vs) if vs else "1 (reference)",
                      f"{row['search_speedup_vs_exact']:.1f}x" if "search_speedup_vs_exact" in row else "1x")
    console.print(table)
    floor = result["construction"]["recall_floor"]
    above = result["construction"]["expected_rows_above_relevant"]
    console.print(f"construction: E(rows above the relevant one) = {above:.4f}; "
                  f"recall floors {', '.join(f'@{k} {v:.4f}' for k, v in floor.items())}")
    for name, t in result["targets"].items():
        console.print(f"target {name}: {t['value']:.2f} (target <= {t['target']}) -> "
                      f"{'met' if t['met'] else 'NOT met'}")
    console.print(f"peak RSS {result['peak_rss_gb']:.2f} GiB overall; whole run {result['total_s']:.1f} s; "
                  f"load {result['machine']['load_before']} -> {result['machine']['load_after']}")


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=1_000_000, help="catalogue rows")
    parser.add_argument("--queries", type=int, default=10_000)
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--centres", type=int, default=4096, help="Gaussian mixture components")
    parser.add_argument("--spread", type=float, default=0.5, help="within-centre noise norm (before normalising)")
    parser.add_argument("--noise", type=float, default=2.0, help="query noise norm, relative to a unit row")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--k", type=int, default=max(KS), help="ids retrieved per query")
    parser.add_argument("--nlist", type=int, default=1024)
    parser.add_argument("--nprobe", type=int, default=16)
    parser.add_argument("--hnsw", action="store_true", help="also build and search an HNSW index (minutes at 1M)")
    parser.add_argument("--hnsw-m", type=int, default=32)
    parser.add_argument("--ef-search", type=int, default=128)
    parser.add_argument("--workdir", type=Path, default=None, help="where the catalogue .npy goes (default: a temp dir, removed)")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "eval_scale.json")
    parser.add_argument("--quiet", action="store_true", help="no progress bars or spinners (no extra threads)")
    args = parser.parse_args(argv)
    PROGRESS["on"] = not args.quiet
    if args.k < max(KS):
        parser.error(f"--k must be at least {max(KS)} (Recall@{max(KS)} is reported)")

    if args.workdir is not None:
        args.workdir.mkdir(parents=True, exist_ok=True)
        result = run(args, args.workdir)
    else:
        with tempfile.TemporaryDirectory(prefix="sail-eval-scale-") as tmp:
            result = run(args, Path(tmp))
    print_table(result)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    console.print(f"wrote {args.out}")
    return result


if __name__ == "__main__":
    main()
