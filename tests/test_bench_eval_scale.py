"""bench/eval_scale.py at 100k items runs under a hard address-space limit and reports sane figures.

The memory limit. The child process gets ``RLIMIT_AS`` = 1.75 GiB (set in ``preexec_fn``)
and ``OMP_NUM_THREADS`` = ``OPENBLAS_NUM_THREADS`` = 2. Measured on the 2-core dev machine
(faiss 1.15, numpy 2.4, scipy 1.17), the 100k x 384 run with 2,000 queries reaches a peak
virtual size (``VmPeak``) of 1.45 GiB, constant from run to run: about 0.72 GiB is the
interpreter with numpy, scipy and faiss (shared libraries, OpenBLAS buffers, thread stacks and
malloc arenas) before any data, the catalogue is 0.14 GiB mapped plus 0.14 GiB per index, and
the peak is the IVF k-means training. A limit of 1.5 GiB passes, 1.45 GiB fails. 1.75 GiB
leaves about 20% headroom, yet a run that scores the queries densely cannot fit: the
2,000 x 100,000 float32 score matrix is 0.75 GiB (1.5 GiB as float64), and ranking it needs a
second array of that size at least (checked: with the same imports and the flat index, the
float32 matrix fits under this limit, but ``argpartition(-scores)`` then raises MemoryError;
an exact ranking done that way needs about 2.4 GiB). Threads are pinned
because each extra thread adds address space (8 threads: 2.5 GiB peak for the same run), and
``--quiet`` keeps the progress bars' threads out of it; RLIMIT_AS counts address space, not
resident memory, so the number is far above the run's 0.45 GiB peak RSS.

The recall floor comes from the construction (see the bench's docstring): a catalogue row
``j`` outscores the query's relevant row ``r`` with probability
``Phi(-sqrt((1 - rho) * dim / 2) / noise)``, ``rho = x_r . x_j``; with ``rho`` at its typical
value ``1 / (1 + spread^2)`` inside a centre and 0 across centres that gives the expected
number ``E[B]`` of rows above the relevant one, and ``E[Recall@k] >= 1 - E[B] / k``.

No timing is asserted: the figures are the bench's to report, not the test's to judge.
"""

from __future__ import annotations

import json
import math
import os
import resource
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
AS_LIMIT = int(1.75 * 2**30)
ITEMS, QUERIES = 100_000, 2_000


def _limit_address_space():
    resource.setrlimit(resource.RLIMIT_AS, (AS_LIMIT, AS_LIMIT))


def nominal_expected_above(items, dim, centres, spread, noise):
    from scipy.stats import norm

    rho_same = 1.0 / (1.0 + spread**2)
    p_same = norm.cdf(-math.sqrt((1 - rho_same) * dim / 2) / noise)
    p_other = norm.cdf(-math.sqrt(dim / 2) / noise)
    return (items - 1) * (p_same / centres + p_other * (1 - 1 / centres))


@pytest.fixture(scope="module")
def result(tmp_path_factory):
    out = tmp_path_factory.mktemp("eval-scale") / "x.json"
    env = {**os.environ, "OMP_NUM_THREADS": "2", "OPENBLAS_NUM_THREADS": "2", "MKL_NUM_THREADS": "2"}
    proc = subprocess.run(
        [sys.executable, str(REPO / "bench" / "eval_scale.py"), "--items", str(ITEMS), "--queries", str(QUERIES),
         "--out", str(out), "--workdir", str(out.parent / "work"), "--quiet"],
        cwd=REPO, env=env, preexec_fn=_limit_address_space, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, (f"exit {proc.returncode} under RLIMIT_AS {AS_LIMIT / 2**30:.2f} GiB\n"
                                  f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return json.loads(out.read_text())


def test_settings_and_machine_facts(result):
    s = result["settings"]
    assert (s["items"], s["queries"], s["dim"]) == (ITEMS, QUERIES, 384)
    m = result["machine"]
    assert m["cpus"] >= 1 and m["faiss"] and m["numpy"] and len(m["load_before"]) == 3
    assert set(result["targets"]) == {"exact_total_s", "exact_peak_rss_gb"}
    for t in result["targets"].values():
        assert isinstance(t["met"], bool) and t["value"] >= 0 and t["target"] > 0
    # it ran inside the limit, and says how much it used
    assert 0 < result["exact"]["peak_rss_gb"] <= result["peak_rss_gb"] < AS_LIMIT / 2**30
    assert result["vm_peak_gb"] is None or result["vm_peak_gb"] < AS_LIMIT / 2**30


def test_exact_recall_is_at_least_the_construction_floor(result):
    s = result["settings"]
    nominal = nominal_expected_above(s["items"], s["dim"], s["centres"], s["spread"], s["noise"])
    computed = result["construction"]["expected_rows_above_relevant"]
    assert computed == pytest.approx(nominal, rel=0.25)  # the bench's sampled rho agrees with the typical rho
    expected_above = max(nominal, computed)
    for k in ("1", "10", "50"):
        floor = max(0.0, 1 - expected_above / int(k))
        r = result["exact"]["recall"][k]
        sampling = 3 * math.sqrt(max(floor * (1 - floor), 1 / QUERIES) / QUERIES)  # 3 standard errors over queries
        assert r["mean"] >= floor - sampling, f"Recall@{k} {r['mean']:.4f} below the floor {floor:.4f}"
        assert 0 <= r["ci_low"] <= r["mean"] <= r["ci_high"] <= 1
    assert result["exact"]["recall"]["1"]["mean"] <= result["exact"]["recall"]["10"]["mean"] <= \
        result["exact"]["recall"]["50"]["mean"]


def test_ivf_against_exact(result):
    ivf = result["ivf"]
    assert (ivf["nlist"], ivf["nprobe"]) == (1024, 16)
    vs = ivf["recall_vs_exact_at_10"]
    assert 0 <= vs["ci_low"] <= vs["mean"] <= vs["ci_high"] <= 1
    assert vs["mean"] >= 0.5  # a working IVF index over clustered data, not a broken one (it is about 0.96)
    for k in ("1", "10", "50"):
        assert 0 <= ivf["recall"][k]["ci_low"] <= ivf["recall"][k]["mean"] <= ivf["recall"][k]["ci_high"] <= 1
    assert ivf["search_speedup_vs_exact"] > 0 and ivf["build_s"] >= 0 and ivf["search_s"] > 0
    assert "skipped" in result["hnsw"]  # off unless asked for
