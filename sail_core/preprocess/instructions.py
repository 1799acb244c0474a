"""Which task instruction wraps a served input (numpy-free, torch-free; used by export and Triton).

``export.json`` carries every dataset's instructions from the training config::

    "instructions": {"q2i": {"task": "q2i", "query": "...", "target": "..."}, ...},
    "instruction_defaults": {"query": "q2i", "target": "copair_i2i"}

A request may name ``TASK`` (a dataset name such as ``q2i`` or ``xmodal``, or
a task type ``i2i``/``q2i``/``cls``, meaning the first dataset of that type)
and ``SIDE`` (``query`` or ``target``). Defaults:

- SIDE: ``query`` for a text-only row (a search query), ``target`` for a row
  with any media (a catalogue item). Send ``SIDE=target`` to embed a text-only
  catalogue item the way the catalogue was trained.
- TASK: the ``q2i`` dataset for the query side, the first ``i2i`` dataset
  (``copair_i2i``) for the target side; both targets are
  "Represent this movie for retrieval." in ``params.yaml``.
"""

from __future__ import annotations

SIDES = ("query", "target")


def instruction_tables(datasets: dict) -> tuple[dict, dict]:
    """``(instructions, instruction_defaults)`` for export.json from ``{name: DatasetConfig}``."""
    table = {name: {"task": d.task, "query": d.query_instruction, "target": d.target_instruction}
             for name, d in datasets.items()}
    first = lambda task: next((n for n, d in datasets.items() if d.task == task), None)  # noqa: E731
    q2i, i2i = first("q2i"), first("i2i")
    return table, {"query": q2i or i2i, "target": i2i or q2i}


def resolve_instruction(table: dict, defaults: dict, task: str | None, side: str | None, has_media: bool) -> str:
    """The instruction string for one row; ValueError naming the allowed values on a bad TASK or SIDE."""
    side = (side or "").strip().lower() or ("target" if has_media else "query")
    if side not in SIDES:
        raise ValueError(f"SIDE={side!r} is not allowed; use one of {list(SIDES)}")
    task = (task or "").strip()
    if not task:
        name = defaults.get(side)
        return table[name][side] if name in table else ""
    if task in table:
        return table[task][side]
    by_type = next((n for n, row in table.items() if row["task"] == task), None)
    if by_type is None:
        allowed = sorted(set(table) | {row["task"] for row in table.values()})
        raise ValueError(f"TASK={task!r} is not a dataset or task of this model; allowed: {allowed}")
    return table[by_type][side]
