"""Stochastic specialisation: each step draws its whole batch from ONE dataset.

The dataset of each step is sampled by its config weight from a seeded RNG;
rows come from a per-dataset shuffled order that is walked without replacement
and reshuffled when exhausted (an "epoch" of that dataset). Under DDP every rank
runs the same RNGs, so all ranks agree on the dataset and on the global batch,
and each rank keeps its own slice: no communication is needed. The whole state
is plain Python data, so it goes into the checkpoint and resumes exactly.
"""

from __future__ import annotations

import numpy as np


class StochasticSpecialisationSampler:
    """Yields ``(dataset, row_indices)`` for this rank, one dataset per step.

    Args:
        sizes: dataset name -> number of train rows.
        weights: dataset name -> sampling weight (``cfg.datasets[name].weight``).
        batch_size: rows per rank per step (capped at ``size // world`` for a small dataset).
        seed: seeds both the dataset choice and the row order.
        rank, world: this process's slice of the global batch.
    """

    def __init__(
        self,
        sizes: dict[str, int],
        weights: dict[str, float],
        batch_size: int,
        seed: int,
        rank: int = 0,
        world: int = 1,
    ):
        if not sizes:
            raise ValueError("the sampler needs at least one dataset with train pairs")
        for name, n in sizes.items():
            if n < 2 * world:
                raise ValueError(
                    f"dataset {name!r} has {n} train pairs; at least {2 * world} are needed for in-batch "
                    f"negatives with world size {world}; add pairs or drop it from the stage's datasets"
                )
        self.names = sorted(sizes)
        self.sizes = {n: int(sizes[n]) for n in self.names}
        w = np.array([float(weights[n]) for n in self.names])
        self.probs = w / w.sum()
        self.batch_size, self.rank, self.world = int(batch_size), int(rank), int(world)
        self._choice = np.random.default_rng([seed, 0])
        self._rows = np.random.default_rng([seed, 1])
        self._order: dict[str, list[int]] = {}
        self._pos: dict[str, int] = {n: 0 for n in self.names}
        self.counts: dict[str, int] = {n: 0 for n in self.names}
        self.epochs: dict[str, int] = {n: 0 for n in self.names}

    def per_rank(self, name: str) -> int:
        return min(self.batch_size, self.sizes[name] // self.world)

    def next(self) -> tuple[str, np.ndarray]:
        name = self.names[int(self._choice.choice(len(self.names), p=self.probs))]
        per_rank = self.per_rank(name)
        global_size = per_rank * self.world
        if name not in self._order or self._pos[name] + global_size > self.sizes[name]:
            self._order[name] = self._rows.permutation(self.sizes[name]).tolist()
            self._pos[name] = 0
            self.epochs[name] += 1
        start = self._pos[name] + self.rank * per_rank
        rows = np.asarray(self._order[name][start : start + per_rank], dtype=np.int64)
        # the whole step's rows over all ranks, this rank's slice at [rank * per_rank, (rank + 1) * per_rank)
        self.global_rows = np.asarray(self._order[name][self._pos[name] : self._pos[name] + global_size], dtype=np.int64)
        self._pos[name] += global_size
        self.counts[name] += 1
        return name, rows

    def state_dict(self) -> dict:
        return {
            "choice": self._choice.bit_generator.state,
            "rows": self._rows.bit_generator.state,
            "order": {k: list(v) for k, v in self._order.items()},
            "pos": dict(self._pos),
            "counts": dict(self.counts),
            "epochs": dict(self.epochs),
            "sizes": dict(self.sizes),
        }

    def load_state_dict(self, state: dict) -> None:
        if state["sizes"] != self.sizes:
            raise ValueError(
                f"checkpoint sampler was built for datasets {state['sizes']} but the data now has {self.sizes}; "
                "the data changed since the checkpoint: delete <out>/checkpoints to start the stage afresh"
            )
        self._choice.bit_generator.state = state["choice"]
        self._rows.bit_generator.state = state["rows"]
        self._order = {k: list(v) for k, v in state["order"].items()}
        self._pos, self.counts, self.epochs = dict(state["pos"]), dict(state["counts"]), dict(state["epochs"])
