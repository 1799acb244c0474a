"""The contract of the teacher step's tables: ``id_embeddings`` and ``eval_id_embeddings`` (suite ``id_embeddings``).

The tables are derived by code (:mod:`sail_core.rec.teacher`), so a failed rule is a defect, not a row
to quarantine: most importantly a held-out item in the training teacher's table (the cold-start items
must stay unseen by everything that trains). :func:`check_id_embeddings` raises
:class:`~data_contracts.breach.ContractBreach` naming the rule, the table and a few offending rows, and
the teacher step writes nothing.
"""

from __future__ import annotations

from typing import Iterable

import numpy as np
import pandas as pd

from data_contracts.breach import ContractBreach, derived_table_lines
from data_contracts.check import evaluate
from data_contracts.runner import run_suite
from data_contracts.suites import load_suite

ITEM_IDS_PARAM, DIMS_PARAM = "item_ids", "dims"
COLUMNS = {"item_id": "string", "dim": "Int64", "norm": "float64"}


def checked_view(frame: pd.DataFrame) -> pd.DataFrame:
    """``(item_id, dim, norm)`` of an ``(item_id, vector)`` table: what the suite checks (norm NaN if not finite)."""
    vectors = [np.asarray(v, dtype=np.float64) for v in frame["vector"]]
    norms = [float(np.linalg.norm(v)) if np.isfinite(v).all() else float("nan") for v in vectors]
    return pd.DataFrame({"item_id": frame["item_id"].astype("string"),
                         "dim": pd.array([len(v) for v in vectors], dtype="Int64"), "norm": norms})


def check_id_embeddings(frame: pd.DataFrame, item_ids: Iterable[str], dim: int, where: str) -> int:
    """Validate one ``(item_id, vector)`` table; ``item_ids``: the items it may hold, ``dim``: the vector length.
    Returns the rows checked; raises ContractBreach on any failure."""
    view = checked_view(frame)
    params = {ITEM_IDS_PARAM: sorted({str(i) for i in item_ids}), DIMS_PARAM: [int(dim)]}
    found = evaluate(view, run_suite(view, load_suite("id_embeddings"), params), COLUMNS)
    lines = derived_table_lines(found, where, lambda r: f"item {view['item_id'].iloc[r]!r}")
    if lines:
        raise ContractBreach(lines + ["the teacher step derives this table from the validated interactions, so this "
                                      "is a defect in the teacher or a changed item split; nothing was written"])
    return len(frame)
