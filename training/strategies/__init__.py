"""Federated aggregation strategies, looked up by name (one file each, all under `Strategy`)."""

from __future__ import annotations

from collections.abc import Callable

from training.strategies.base import Aggregate, ClientUpdate, Params, Strategy
from training.strategies.fedavg import FedAvg
from training.strategies.fedmedian import FedMedian
from training.strategies.fedprox import FedProx
from training.strategies.fedvsr import FedVSR

# name -> constructor from (prox_mu, by_size); options a strategy does not use are ignored
STRATEGIES: dict[str, Callable[[float, bool], Strategy]] = {
    "fedvsr": lambda mu, by_size: FedVSR(by_size=by_size),
    "fedavg": lambda mu, by_size: FedAvg(),
    "fedprox": lambda mu, by_size: FedProx(mu),
    "fedmedian": lambda mu, by_size: FedMedian(),
}


def build_strategy(name: str, prox_mu: float = 1e-3, by_size: bool = False) -> Strategy:
    """Strategy ``name`` with its options; unknown names raise ValueError listing the known ones."""
    if name not in STRATEGIES:
        raise ValueError(f"unknown strategy {name!r}; known: {', '.join(STRATEGIES)}")
    return STRATEGIES[name](prox_mu, by_size)


__all__ = ["STRATEGIES", "Aggregate", "ClientUpdate", "Params", "Strategy", "build_strategy"]
