"""FedProx (Li et al., 2020): FedAvg's server rule plus a proximal term mu/2 ||w - w_global||^2 on clients."""

from __future__ import annotations

from typing import ClassVar

from training.strategies.fedavg import FedAvg

DEFAULT_MU = 1e-3  # proximal coefficient; small because the loss is a per-pixel mean (~1e-2)


class FedProx(FedAvg):
    """Aggregates like FedAvg; the difference is client-side: local_train gets ``prox=(global, mu)``."""

    name: ClassVar[str] = "fedprox"

    def __init__(self, mu: float = DEFAULT_MU) -> None:
        if mu < 0:
            raise ValueError(f"FedProx mu must be >= 0, got {mu}")
        self.prox_mu = float(mu)
