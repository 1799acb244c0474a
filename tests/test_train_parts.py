"""Training parts: the warm-up/cosine schedule and its resume, atomic checkpoints, length-bucketed omni embedding."""

from __future__ import annotations

import math

import pytest
import torch

from sail_core.train.checkpoint import latest_checkpoint, list_checkpoints, load_checkpoint, save_checkpoint
from transformers import get_cosine_schedule_with_warmup


def _lrs(scheduler, optimizer, steps: int) -> list[float]:
    """The lr each of the next ``steps`` optimiser steps runs with (read before the step, as the loop does)."""
    out = []
    for _ in range(steps):
        out.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return out


def _optimizer(peak: float = 0.1) -> torch.optim.Optimizer:
    return torch.optim.AdamW([torch.nn.Parameter(torch.zeros(2))], lr=peak)


def test_warmup_then_cosine_matches_the_formula():
    opt = _optimizer(0.1)
    lrs = _lrs(get_cosine_schedule_with_warmup(opt, num_warmup_steps=4, num_training_steps=12), opt, 12)
    # warm-up: step/4 of the peak (the first step runs at 0); then 0.5 (1 + cos(pi (step - 4) / 8))
    assert lrs[:5] == pytest.approx([0.0, 0.025, 0.05, 0.075, 0.1])
    assert lrs[6] == pytest.approx(0.1 * 0.5 * (1 + math.cos(math.pi / 4)))   # 0.08536
    assert lrs[8] == pytest.approx(0.05)
    assert lrs[11] == pytest.approx(0.1 * 0.5 * (1 + math.cos(math.pi * 7 / 8)))  # 0.00381
    assert all(a >= b for a, b in zip(lrs[4:], lrs[5:]))


def test_schedule_resumes_from_a_checkpoint_at_the_same_lr(tmp_path):
    opt = _optimizer()
    reference = _lrs(get_cosine_schedule_with_warmup(opt, 3, 10), opt, 10)

    opt = _optimizer()
    scheduler = get_cosine_schedule_with_warmup(opt, 3, 10)
    first = _lrs(scheduler, opt, 5)
    save_checkpoint(tmp_path, 5, {"optimizer": opt.state_dict(), "scheduler": scheduler.state_dict()})

    opt = _optimizer()  # a fresh process: new optimiser and scheduler, then the checkpoint's state
    scheduler = get_cosine_schedule_with_warmup(opt, 3, 10)
    state = load_checkpoint(latest_checkpoint(tmp_path))
    opt.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    assert first + _lrs(scheduler, opt, 5) == pytest.approx(reference)


def test_checkpoints_are_atomic_pruned_and_warn_on_mismatch(tmp_path):
    for step in (2, 4, 6):
        save_checkpoint(tmp_path, step, {"w": torch.tensor([step]), "meta": {"seed": 0, "steps": 10}}, keep=2)
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step_0000004.pt", "step_0000006.pt"]
    assert not list(tmp_path.glob(".*tmp"))
    (tmp_path / ".step_0000008.pt.tmp").write_bytes(b"half-written")  # a crash mid-save is ignored
    last = latest_checkpoint(tmp_path)
    assert last.name == "step_0000006.pt"
    state = load_checkpoint(last, expect={"seed": 0, "steps": 10})
    assert state["step"] == 6 and state["w"].item() == 6
    with pytest.warns(UserWarning, match="checkpoint has seed=0 but this run has seed=1"):
        load_checkpoint(last, expect={"seed": 1, "steps": 10})


def test_embed_samples_chunked_equals_one_padded_forward():
    import numpy as np

    from sail_core.model.assembly import OmniSample, collate
    from sail_core.model.omni import build_model
    from sail_core.features.embed import embed_samples

    import tiny_pairs_data

    cfg = tiny_pairs_data.fast_config().model
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    rng = np.random.default_rng(0)
    feat = lambda: rng.normal(size=(1280, 7, 7)).astype(np.float32)  # noqa: E731
    samples = [
        OmniSample("Represent this genre label.", "Romance"),
        OmniSample("Find a movie.", "Alien Day (1979). Sci-Fi, Horror, Thriller", cover=feat()),
        OmniSample("Find a movie.", None, audio=rng.normal(size=96).astype(np.float32)),
        OmniSample("x", "a", frames=np.stack([feat(), feat()])),
        OmniSample("Find a movie.", "Love Story", cover=feat(), frames=np.stack([feat()]),
                   audio=rng.normal(size=96).astype(np.float32)),
    ]
    modes = {"vision": "features", "audio": "feats"}
    direct = model(collate(samples, model.tokenizer, **modes))
    chunked = embed_samples(model, model, samples, modes, chunk=2)
    assert torch.allclose(direct, chunked, atol=1e-5)
    chunked.sum().backward()
    assert model.perceiver is not None and any(p.grad is not None for p in model.perceiver.parameters())


def test_media_lr_puts_new_modules_in_their_own_group():
    from sail_core.model.omni import build_model
    from sail_core.train.loop import MEDIA_MODULES, _param_groups

    import tiny_pairs_data

    cfg = tiny_pairs_data.fast_config()
    model = build_model(cfg.model)
    stage = cfg.train.stages[0].model_copy(update={"media_lr": None})
    assert len(_param_groups(model, stage)) == 1
    groups = _param_groups(model, stage.model_copy(update={"media_lr": 1e-3}))
    assert [g.get("lr") for g in groups] == [None, 1e-3]
    names = {id(p): n for n, p in model.named_parameters()}
    assert all(names[id(p)].startswith(MEDIA_MODULES) for p in groups[1]["params"])
    assert not any(names[id(p)].startswith(MEDIA_MODULES) for p in groups[0]["params"])
    assert any(names[id(p)].startswith("audio.") for p in groups[1]["params"])
    n_trainable = sum(p.requires_grad for p in model.parameters())
    assert len(groups[0]["params"]) + len(groups[1]["params"]) == n_trainable
