"""Learnable softmax temperatures, one per dataset, stored as ``log(tau)``.

The log parameterisation keeps tau positive and makes its updates scale-free;
the value is clamped to ``[min_tau, max_tau]`` (default 0.01..1.0: open_clip's
logit-scale cap of 100 is tau >= 0.01) so that it cannot collapse or explode.
"""

from __future__ import annotations

import math

import torch
from torch import nn

MIN_TAU = 0.01
MAX_TAU = 1.0


class LearnableTemperatures(nn.Module):
    """``tau[name]`` for each dataset, initialised from its ``temperature_init``."""

    def __init__(self, inits: dict[str, float], min_tau: float = MIN_TAU, max_tau: float = MAX_TAU):
        super().__init__()
        if not inits:
            raise ValueError("LearnableTemperatures needs at least one dataset (name -> temperature_init)")
        for name, tau in inits.items():
            if not min_tau <= tau <= max_tau:
                raise ValueError(
                    f"datasets.{name}.temperature_init={tau} is outside the allowed range "
                    f"[{min_tau}, {max_tau}]; pick a value in range (0.02-0.05 is usual)"
                )
        self.min_tau, self.max_tau = float(min_tau), float(max_tau)
        self.log_tau = nn.ParameterDict(
            {name: nn.Parameter(torch.tensor(math.log(tau), dtype=torch.float32)) for name, tau in inits.items()}
        )

    def forward(self, name: str) -> torch.Tensor:
        if name not in self.log_tau:
            raise KeyError(f"no temperature for dataset {name!r}; known: {sorted(self.log_tau)}")
        return self.log_tau[name].exp().clamp(self.min_tau, self.max_tau)

    def values(self) -> dict[str, float]:
        """Current (clamped) temperatures, for logging."""
        return {name: float(self(name).detach()) for name in self.log_tau}
