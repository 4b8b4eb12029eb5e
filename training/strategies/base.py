"""The `Strategy` ABC every server-side aggregation rule implements, and the records it works on.

A strategy is a pure function of the clients' reports and the round: it sees full local weights
(numpy arrays by state-dict name), example counts and mean losses, and returns new global weights.
No server state is kept between rounds, so the in-process runner and the Flower ServerApp can call
the very same code and get the same numbers.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

Params = dict[str, np.ndarray]  # state-dict name -> array (float32 on the wire)


@dataclass(frozen=True)
class ClientUpdate:
    """What one client reports after its local round."""

    client: int  # partition id; sums run in this order so both runners round identically
    params: Params  # full local weights after training (not a delta)
    num_examples: int  # training sequences the client holds (FedAvg's n_k)
    loss: float  # mean total loss over the local epoch (FedVSR's L_k)


@dataclass(frozen=True)
class Aggregate:
    """A strategy's answer for one round."""

    params: Params  # the new global weights
    weights: list[float] | None  # mixing weight per update, in client order (None: not a weighted mean)
    beta: float | None = None  # FedVSR's loss-aware share (None for strategies without one)
    hellinger: float | None = None  # FedVSR's distance between uniform and loss-based weights


class Strategy(ABC):
    """Server-side aggregation rule; subclasses live one per file in training/strategies/."""

    name: ClassVar[str]  # key in training.strategies.STRATEGIES
    prox_mu: float = 0.0  # client-side proximal coefficient (non-zero only for FedProx)

    @abstractmethod
    def aggregate(self, updates: Sequence[ClientUpdate], server_round: int, num_rounds: int) -> Aggregate:
        """New global weights from this round's client updates.

        Parameters
        ----------
        updates : the reports of the clients that trained this round (any order).
        server_round : 1-based round number t (Flower's ``server_round``).
        num_rounds : total rounds T of the run.
        """

    def describe(self) -> dict:
        """Options recorded in history.json."""
        return {"strategy": self.name, "prox_mu": self.prox_mu}


def sorted_updates(updates: Sequence[ClientUpdate]) -> list[ClientUpdate]:
    """Updates in client order; refuses an empty round or mismatched tensors."""
    if not updates:
        raise ValueError("no client updates to aggregate; every client of the round failed")
    ups = sorted(updates, key=lambda u: u.client)
    keys = list(ups[0].params)
    for u in ups[1:]:
        if list(u.params) != keys:
            raise ValueError(f"client {u.client} sent tensors {sorted(u.params)[:3]}..., expected {keys[:3]}...")
    return ups


def weighted_mean(params: Sequence[Params], weights: Sequence[float]) -> Params:
    """sum_k w_k * params_k per tensor, accumulated in float64 and cast back to each tensor's dtype."""
    if len(params) != len(weights):
        raise ValueError(f"{len(params)} parameter sets but {len(weights)} weights")
    out: Params = {}
    for key, first in params[0].items():
        acc = np.zeros(first.shape, dtype=np.float64)
        for p, w in zip(params, weights):
            acc += float(w) * p[key].astype(np.float64)
        out[key] = acc.astype(first.dtype)
    return out


def example_weights(updates: Sequence[ClientUpdate]) -> list[float]:
    """n_k / sum n: FedAvg's weights."""
    sizes = np.array([u.num_examples for u in updates], dtype=np.float64)
    if np.any(sizes <= 0):
        raise ValueError(f"every client must report a positive example count, got {sizes.tolist()}")
    return (sizes / sizes.sum()).tolist()
