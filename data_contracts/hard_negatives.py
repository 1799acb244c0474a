"""The contract of the mine step's output: ``hard_negatives/<dataset>.parquet`` (suite ``hard_negatives``).

The miner's tables are derived by code, not supplied by a user, so a failed rule is a defect (most
importantly a held-out item among the negatives: a leak into training), not a row to quarantine:
:func:`check_hard_negatives` raises :class:`~data_contracts.breach.ContractBreach` naming the rule,
the table and a few offending rows, and the mine step writes nothing.
"""

from __future__ import annotations

from typing import Iterable

import pandas as pd

from data_contracts.breach import ContractBreach, derived_table_lines
from data_contracts.check import evaluate
from data_contracts.runner import run_suite
from data_contracts.suites import load_suite

TRAIN_ITEM_IDS_PARAM = "train_item_ids"

COLUMNS = {"query_item": "string", "query_text": "string", "negative_item": "string", "score": "float32"}


def check_hard_negatives(frame: pd.DataFrame, train_item_ids: Iterable[str], where: str) -> int:
    """Validate one hard-negative table against the suite; ``train_item_ids``: the only items allowed as
    negatives (and as item queries). Returns the rows checked; raises ContractBreach on any failure."""
    ids = sorted({str(i) for i in train_item_ids})
    outcomes = run_suite(frame, load_suite("hard_negatives"), {TRAIN_ITEM_IDS_PARAM: ids})
    found = evaluate(frame, outcomes, COLUMNS)
    lines = derived_table_lines(found, where)
    if lines:
        raise ContractBreach(lines + ["the mine step writes negatives among the train items only, so this is a defect "
                                      "in the miner or a changed item split; nothing was written"])
    return len(frame)
