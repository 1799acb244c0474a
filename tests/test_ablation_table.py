"""The ablation table on synthetic per-query values with known means: values, paired gains, seed matching,
refusals, and the three files it writes."""

from __future__ import annotations

import json

import numpy as np
import pytest

from sail_core.eval.ablation_table import AblationRun, ablation_table, write_ablation
from sail_core.eval.intervals import interval, paired_interval

N = 200
METRICS = ["i2i.recall_at_10", "t2i.recall_at_10"]
NAMES = ["text backbone only", "+ fusion of media", "+ task instructions", "+ CoSENT",
         "+ mICL and late fusion", "+ balancing", "+ hard negatives", "+ progressive stages"]
# one latent probability per query; a row's hits are (u < p + lift), so a lift of +0.3 raises every query
U = np.random.default_rng(0).random(N)
P = np.random.default_rng(1).uniform(0.1, 0.5, N)


def _run(row: int, seed: int, lift: float = 0.0, n: int = N, metrics=METRICS) -> AblationRun:
    noise = np.random.default_rng(100 * row + seed).random(n) < 0.05  # a few queries flip per run
    hits = {m: (np.logical_xor(U[:n] < P[:n] + lift + 0.02 * k, noise)).astype(float) for k, m in enumerate(metrics)}
    return AblationRun(row, NAMES[row - 1], seed, f"run-{row}-{seed}", hits)


def _path() -> list[AblationRun]:
    """8 rows, rows 1 and 8 with seeds 0 and 1; row 4 (+ CoSENT) is a real +0.3 improvement."""
    lifts = {1: 0.0, 2: 0.0, 3: 0.01, 4: 0.31, 5: 0.31, 6: 0.32, 7: 0.32, 8: 0.33}
    return [_run(r, s, lifts[r]) for r in range(1, 9) for s in ((0, 1) if r in (1, 8) else (0,))]


@pytest.fixture(scope="module")
def runs():
    return _path()


@pytest.fixture(scope="module")
def reference():
    return {METRICS[0]: (U < P - 0.05).astype(float)}  # the text reference only has the first metric


@pytest.fixture(scope="module")
def table(runs, reference):
    return ablation_table(runs, METRICS, reference=reference)


def _find(runs, row, seed):
    return next(r for r in runs if r.row == row and r.seed == seed)


def test_values_are_the_means_with_their_intervals(runs, table):
    assert table["metrics"] == METRICS and [r["row"] for r in table["rows"]] == list(range(1, 9))
    first, last = table["rows"][0], table["rows"][-1]
    assert first["seeds"] == [0, 1] and first["run_ids"] == ["run-1-0", "run-1-1"] and last["seeds"] == [0, 1]
    assert table["rows"][3]["name"] == "+ CoSENT" and table["rows"][3]["seeds"] == [0]
    for r in table["rows"]:
        for m in METRICS:
            for s in r["seeds"]:
                v, values = r["values"][m][str(s)], _find(runs, r["row"], s).per_query[m]
                assert v["mean"] == pytest.approx(float(np.mean(values)), abs=1e-12)
                assert (v["ci_low"], v["ci_high"]) == interval(values)
                assert v["ci_low"] <= v["mean"] <= v["ci_high"]
                assert all(type(x) is float for x in v.values())


def test_gains_are_paired_differences_on_the_same_queries(runs, table):
    assert "gain" not in table["rows"][0]
    for r in table["rows"][1:]:
        for m in METRICS:
            for s in r["seeds"]:
                g = r["gain"][m][str(s)]
                a = _find(runs, r["row"], s).per_query[m]
                b = _find(runs, g["vs_row"], g["vs_seed"]).per_query[m]
                assert g["delta"] == pytest.approx(a.mean() - b.mean(), abs=1e-12)
                assert (g["ci_low"], g["ci_high"]) == paired_interval(a, b)
                assert g["ci_low"] <= g["delta"] <= g["ci_high"]
    cosent = table["rows"][3]["gain"]
    assert all(cosent[m]["0"]["ci_low"] > 0 for m in METRICS)  # the real +0.3 step is seen
    assert cosent[METRICS[0]]["0"]["delta"] > 0.1


def test_seed_matching(table):
    rows = {r["row"]: r for r in table["rows"]}
    g = rows[2]["gain"][METRICS[0]]["0"]
    assert (g["vs_row"], g["vs_seed"]) == (1, 0)
    # row 8 seed 1: row 7 has no seed 1, so it is compared with row 7's lowest seed (0)
    assert {s: (g["vs_row"], g["vs_seed"]) for s, g in rows[8]["gain"][METRICS[1]].items()} == {"0": (7, 0), "1": (7, 0)}
    # full recipe vs row 1: seed-matched (both rows have seeds 0 and 1)
    full = table["full_vs_first"]
    assert set(full) == set(METRICS) and {s: f["vs_seed"] for s, f in full[METRICS[0]].items()} == {"0": 0, "1": 1}
    assert all(full[m][s]["ci_low"] > 0 for m in METRICS for s in ("0", "1"))


def test_seed_matching_prefers_the_same_seed_and_falls_back_to_the_lowest():
    runs = [_run(1, 3), _run(1, 5), _run(2, 5), _run(2, 7)]
    gain = ablation_table(runs, METRICS[:1])["rows"][1]["gain"][METRICS[0]]
    assert (gain["5"]["vs_seed"], gain["7"]["vs_seed"]) == (5, 3)
    a, b = _find(runs, 2, 7).per_query[METRICS[0]], _find(runs, 1, 3).per_query[METRICS[0]]
    assert gain["7"]["delta"] == pytest.approx(a.mean() - b.mean()) and \
        (gain["7"]["ci_low"], gain["7"]["ci_high"]) == paired_interval(a, b)
    single = ablation_table([_run(2, 0), _run(1, 0)], METRICS)  # any order in, ordered by row
    assert [r["row"] for r in single["rows"]] == [1, 2] and single["reference"] is None
    assert "vs_reference" not in single["rows"][0]
    assert ablation_table([_run(1, 0)], METRICS)["full_vs_first"] is None


def test_reference(runs, reference, table):
    ref = reference[METRICS[0]]
    assert table["reference"][METRICS[0]]["mean"] == pytest.approx(ref.mean())
    assert METRICS[1] not in table["reference"]  # the reference cannot do every task
    for r in table["rows"]:
        assert set(r["vs_reference"]) == {METRICS[0]}
        for s in r["seeds"]:
            d, a = r["vs_reference"][METRICS[0]][str(s)], _find(runs, r["row"], s).per_query[METRICS[0]]
            assert d["delta"] == pytest.approx(a.mean() - ref.mean())
            assert (d["ci_low"], d["ci_high"]) == paired_interval(a, ref)


def test_refusals():
    with pytest.raises(ValueError, match="no ablation runs"):
        ablation_table([], METRICS)
    with pytest.raises(ValueError, match=r"metric 't2i.recall_at_10' is missing from run run-2-0 \(row 2"):
        ablation_table([_run(1, 0), _run(2, 0, metrics=METRICS[:1])], METRICS)
    with pytest.raises(ValueError, match=r"run-2-0 \(row 2, seed 0\) has 150 per-query values.*run-1-0.*200.*same "
                                         r"queries"):
        ablation_table([_run(1, 0), _run(2, 0, n=150)], METRICS)
    with pytest.raises(ValueError, match=r"row 3 seed 0 appears twice.*one run per \(row, seed\)"):
        ablation_table([_run(1, 0), _run(3, 0), _run(3, 0)], METRICS)
    with pytest.raises(ValueError, match="reference has 10 per-query values"):
        ablation_table([_run(1, 0)], METRICS, reference={METRICS[0]: np.zeros(10)})


def test_write_ablation(table, tmp_path):
    paths = write_ablation(table, tmp_path / "out", title="Ablation path")
    assert [p.name for p in paths] == ["ablation.md", "ablation.json", "ablation.png"]
    assert json.loads(paths[1].read_text()) == table
    assert paths[2].read_bytes().startswith(b"\x89PNG")
    md = paths[0].read_text()
    assert md.startswith("# Ablation path\n") and "bootstrap" in md and "paired" in md
    for name in NAMES:
        assert f"| {name} |" in md
    for run_id in [rid for r in table["rows"] for rid in r["run_ids"]]:
        assert f"`{run_id}`" in md
    assert "s0: " in md and "s1 vs s0: " in md  # row 8 seed 1 against row 7 seed 0
    cosent = next(line for line in md.splitlines() if line.startswith("| 4 | + CoSENT | 3 |"))
    g = table["rows"][3]["gain"][METRICS[0]]["0"]
    assert f"{g['delta']:+.3f} [{g['ci_low']:+.3f}, {g['ci_high']:+.3f}] ✓" in cosent
    assert "text reference" in md and "Full recipe (row 8) vs row 1" in md
