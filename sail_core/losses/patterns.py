"""Dataset-driven pattern matching: one Matryoshka InfoNCE per ``query->target`` modality pattern.

A batch of pair rows from ONE dataset is shown to the model under every pattern
the dataset lists (``image->text``, ``omni->omni``, ...). All inputs of all
patterns are embedded together, once (identical inputs de-duplicated), giving
``z`` (U, D); each pattern then indexes its query and target rows out of ``z``.
A row whose side lacks the pattern's modality (an item without audio for
``audio->text``, free text for ``text->image``'s target) is *invalid* for that
pattern: it is neither a query nor an in-batch negative there
(``valid`` in :func:`sail_core.losses.infonce.compute_loss_from_embeddings`).
A modality that no pattern names is never embedded, so it contributes no loss.

Terms: ``nce_<name>_<dim>_loss`` with ``name`` the pattern made name-safe
(``image->text`` -> ``image2text``), one per pattern with at least one valid
row in the (global) batch and Matryoshka dim. The trainer **sums** them: each
pattern is its own retrieval task, as each Matryoshka dim is.

Example::

    pairs = [PatternPairs("image->text", q_idx, t_idx)]      # indices into z, -1 = missing
    terms = pattern_losses(loss_fn, z, "xmodal", pairs, query_keys=qk, target_keys=tk)
    # {"nce_image2text_384_loss": ..., "nce_image2text_128_loss": ..., ...}
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.distributed as dist

from sail_core.losses.gather import world
from sail_core.losses.infonce import InfoNCELoss


def split_pattern(pattern: str) -> tuple[str, str]:
    """``"image->text"`` -> ``("image", "text")``."""
    q, sep, t = pattern.partition("->")
    if not sep or not q or not t:
        raise ValueError(f"pattern {pattern!r} must be QUERY->TARGET, e.g. image->text")
    return q.strip(), t.strip()


def pattern_name(pattern: str) -> str:
    """Metric-safe name: ``"image->text"`` -> ``"image2text"``."""
    q, t = split_pattern(pattern)
    return f"{q}2{t}"


@dataclass
class PatternPairs:
    """Where one pattern's rows live in the embedded batch ``z``.

    ``query_index``/``target_index`` (B,) int64 index ``z``; -1 marks a side that
    lacks the modality (the row is then invalid). ``negative_index`` (B, H) for
    hard negatives, -1 likewise.
    """

    pattern: str
    query_index: torch.Tensor
    target_index: torch.Tensor
    negative_index: torch.Tensor | None = None

    @property
    def valid(self) -> torch.Tensor:
        return (self.query_index >= 0) & (self.target_index >= 0)


def _global_count(valid: torch.Tensor) -> int:
    n = valid.sum().to(torch.int64).reshape(1)
    if world()[1] > 1:
        dist.all_reduce(n)
    return int(n.item())


def any_valid(pairs: list[PatternPairs]) -> bool:
    """Whether some pattern has a valid row anywhere in the (global) batch; same answer on every rank."""
    return any(_global_count(pp.valid) > 0 for pp in pairs)


def pattern_losses(
    loss_fn: InfoNCELoss,
    z: torch.Tensor,
    dataset: str,
    pairs: list[PatternPairs],
    *,
    query_keys: torch.Tensor | None = None,
    target_keys: torch.Tensor | None = None,
    negative_keys: torch.Tensor | None = None,
    detach_targets: bool = False,
) -> dict[str, torch.Tensor]:
    """Matryoshka InfoNCE terms of every pattern with a valid row (see the module docstring).

    ``detach_targets``: no gradient flows through the targets and hard negatives (the
    dataset's ``target_gradient: false``); the same rows still get gradient where another
    pattern uses them as queries.
    """
    terms: dict[str, torch.Tensor] = {}
    for pp in pairs:
        valid = pp.valid
        if _global_count(valid) == 0:
            continue
        q = z[pp.query_index.clamp_min(0).to(z.device)]
        t = z[pp.target_index.clamp_min(0).to(z.device)]
        hn = hv = None
        if pp.negative_index is not None:
            hn = z[pp.negative_index.clamp_min(0).to(z.device)]
            hv = pp.negative_index >= 0
        if detach_targets:
            t = t.detach()
            hn = hn.detach() if hn is not None else None
        terms.update(loss_fn(
            q, t, dataset, hard_negatives=hn, query_keys=query_keys, target_keys=target_keys,
            hard_negative_keys=negative_keys, valid=valid, hard_negative_valid=hv,
            prefix=f"nce_{pattern_name(pp.pattern)}",
        ))
    return terms
