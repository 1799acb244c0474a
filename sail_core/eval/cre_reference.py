"""Reference rows of the CRE table, scored on the same queries as the trained models:

* **ridge stand-in** (:func:`ridge_standin_vectors`), the crude ID2item that the issue measured: a 64-d
  truncated SVD (scikit-learn) of the positive ratings of **train items before each user's cutoff** (the
  teacher's data: held-out items unseen), a ridge regression from plain MiniLM text embeddings onto the SVD
  item factors, applied to the items the SVD has not seen; each item's vector is the concatenation of its
  unit text vector and its unit collaborative vector (SVD factors for seen items, the ridge prediction
  otherwise), normalised.
* **teacher** (:func:`teacher_vectors`): the training teacher's ID embeddings; an item it never saw (every
  held-out item) gets a random vector, i.e. it is retrieved and used as a query signal at chance only.
  This is what an ID-only recommender can do on cold-start items.

Both give one vector per catalogue item; :class:`TableEncoder` serves them to the evaluation's scoring (i2i
queries are items) and the recommendation metrics take them as catalogue vectors.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from sail_core.config import Config
from sail_core.eval.embed import Side
from sail_core.rec.teacher import ID_EMBEDDINGS, positive_events, read_id_embeddings


def _unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


class TableEncoder:
    """An evaluation encoder over a fixed table of item vectors (item sides only)."""

    def __init__(self, ids: list[str], vectors: np.ndarray):
        self.where = {i: n for n, i in enumerate(ids)}
        self.vectors = np.asarray(vectors, dtype=np.float32)
        self.dim = self.vectors.shape[1]
        self.dims = [self.dim]

    def __call__(self, sides: list[Side]) -> np.ndarray:
        if any(s[0] is None for s in sides):
            raise ValueError("a table of item vectors cannot embed free text; score item tasks only (i2i)")
        return self.vectors[[self.where[str(s[0])] for s in sides]]


def teacher_vectors(ids: list[str], teacher_dir: Path, seed: int = 0) -> np.ndarray:
    """(len(ids), F) the training teacher's vectors; an item it never saw gets a random vector (seeded): the
    teacher knows nothing about it, so it ranks at chance."""
    known, vectors = read_id_embeddings(Path(teacher_dir), ID_EMBEDDINGS)
    where = {i: n for n, i in enumerate(known)}
    scale = float(np.linalg.norm(vectors, axis=1).mean())
    out = _unit(np.random.default_rng([seed, 11]).normal(size=(len(ids), vectors.shape[1]))) * scale
    for r, i in enumerate(ids):
        if i in where:
            out[r] = vectors[where[i]]
    return out


def ridge_standin_vectors(cfg: Config, data_dir: Path, ids: list[str], text: np.ndarray, factors: int = 64,
                          alpha: float = 1.0) -> tuple[np.ndarray, dict]:
    """(len(ids), D + factors) stand-in vectors (module docstring) from ``text`` (row r = item ``ids[r]``)."""
    import scipy.sparse as sp
    from sklearn.decomposition import TruncatedSVD
    from sklearn.linear_model import Ridge

    events = positive_events(cfg, data_dir)
    f = events.frame
    train = {i for i, s in events.splits.items() if s == "train"}
    pos = f[(f["rating"] >= cfg.data.positive_rating) & ~f["after"] & f["item_id"].isin(train)]
    users, seen = sorted(pos["user_id"].unique()), sorted(pos["item_id"].unique())
    u = np.searchsorted(users, pos["user_id"].to_numpy())
    it = np.searchsorted(seen, pos["item_id"].to_numpy())
    matrix = sp.csr_matrix((np.ones(len(pos), dtype=np.float32), (u, it)), shape=(len(users), len(seen)))
    matrix.data[:] = 1.0
    svd = TruncatedSVD(n_components=min(factors, len(seen) - 1), random_state=cfg.train.seed).fit(matrix)
    item_factors = (svd.components_ * np.sqrt(svd.singular_values_)[:, None]).T.astype(np.float32)
    where = {i: n for n, i in enumerate(ids)}
    seen_rows = np.asarray([where[i] for i in seen])
    ridge = Ridge(alpha=alpha).fit(text[seen_rows], item_factors)
    collab = ridge.predict(text).astype(np.float32)
    collab[seen_rows] = item_factors
    vectors = _unit(np.concatenate([_unit(text), _unit(collab)], axis=1))
    return vectors, {"svd_items": len(seen), "svd_users": len(users), "factors": int(item_factors.shape[1]),
                     "ridge_alpha": alpha}


def append_reference_rows(out_dir: Path, references: dict[str, dict[str, np.ndarray]], metrics: list[str]) -> None:
    """Add the reference rows (mean [95% interval] on the same queries) to ``ablation.md`` and ``ablation.json``
    of a CRE table folder."""
    import json

    from sail_core.eval.intervals import interval

    out_dir = Path(out_dir)
    cells = {label: {m: (float(np.mean(v[m])), *interval(v[m])) for m in metrics if m in v}
             for label, v in references.items()}
    lines = ["", "## Reference rows (same queries)", "",
             "| reference | " + " | ".join(metrics) + " |", "|---|" + "---:|" * len(metrics)]
    for label, row in cells.items():
        lines.append(f"| {label} | " + " | ".join(
            f"{row[m][0]:.3f} [{row[m][1]:.3f}, {row[m][2]:.3f}]" if m in row else "n/a" for m in metrics) + " |")
    with open(out_dir / "ablation.md", "a") as fh:
        fh.write("\n".join(lines) + "\n")
    table = json.loads((out_dir / "ablation.json").read_text())
    table["reference_rows"] = {label: {m: list(v) for m, v in row.items()} for label, row in cells.items()}
    (out_dir / "ablation.json").write_text(json.dumps(table, indent=2, ensure_ascii=False) + "\n")
