"""FedVSR's loss-aware aggregation: blend uniform and loss-based client weights by their Hellinger distance.

Each client reports its mean total loss L_k over the local epoch. In round t of T (t from 1):

    s   = 1 - t/T                       annealing: the loss term fades out towards the end
    q_k = L_k^(-s) / sum_j L_j^(-s)     lower loss -> larger weight
    u_k = 1/K                           (or n_k/n with ``by_size``)
    H   = sqrt(1/2 sum_k (sqrt(u_k) - sqrt(q_k))^2)
    beta = 0 if H < 0.05 else (H - 0.05) / 0.95
    w_k = (1 - beta) u_k + beta q_k,    theta = sum_k w_k theta_k

Full weights are averaged; the server keeps no state. In the last round s = 0, so q = u and beta = 0.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from training.strategies.base import Aggregate, ClientUpdate, Strategy, sorted_updates, weighted_mean

H_THRESHOLD = 0.05  # Hellinger distances below this are treated as noise: plain averaging


@dataclass(frozen=True)
class FedVsrMix:
    """The weighting of one round, with its intermediate quantities (for logs and tests)."""

    weights: list[float]  # w_k, sums to 1
    beta: float  # share of the loss-based weights
    hellinger: float  # H(u, q)
    loss_weights: list[float]  # q_k
    base_weights: list[float]  # u_k


def anneal(server_round: int, num_rounds: int) -> float:
    """s = 1 - t/T for round t (1-based) of T."""
    if num_rounds < 1 or not 1 <= server_round <= num_rounds:
        raise ValueError(f"round {server_round} is outside 1..{num_rounds}")
    return 1.0 - server_round / num_rounds


def hellinger(p: np.ndarray, q: np.ndarray) -> float:
    """Hellinger distance of two discrete distributions, in [0, 1]."""
    return float(np.sqrt(0.5 * np.sum((np.sqrt(p) - np.sqrt(q)) ** 2)))


def fedvsr_mix(
    losses: Sequence[float], s: float, sizes: Sequence[int] | None = None, threshold: float = H_THRESHOLD
) -> FedVsrMix:
    """FedVSR's client weights from losses L_k and the annealing exponent s (see the module docstring).

    ``sizes`` (example counts) folds data size into both u and q; None keeps u uniform as in the paper.
    """
    loss = np.asarray(losses, dtype=np.float64)
    if loss.ndim != 1 or loss.size == 0 or not np.all(np.isfinite(loss)) or np.any(loss <= 0):
        raise ValueError(f"FedVSR needs one positive finite loss per client, got {list(losses)}")
    prior = np.ones_like(loss) if sizes is None else np.asarray(sizes, dtype=np.float64)
    if prior.shape != loss.shape or np.any(prior <= 0):
        raise ValueError(f"sizes must be one positive count per client, got {sizes}")
    u = prior / prior.sum()
    logq = np.log(prior) - s * np.log(loss)  # q ~ n_k^[sizes] * L_k^-s, normalised in log space
    q = np.exp(logq - logq.max())
    q /= q.sum()
    h = hellinger(u, q)
    beta = 0.0 if h < threshold else min(1.0, (h - threshold) / (1.0 - threshold))
    w = (1.0 - beta) * u + beta * q
    return FedVsrMix(w.tolist(), beta, h, q.tolist(), u.tolist())


class FedVSR(Strategy):
    """Loss-aware weighted mean of full client weights (FedVSR, 2025)."""

    name: ClassVar[str] = "fedvsr"

    def __init__(self, by_size: bool = False, threshold: float = H_THRESHOLD) -> None:
        self.by_size = by_size  # fold example counts into u and q (off in the paper)
        self.threshold = threshold  # Hellinger dead zone

    def aggregate(self, updates: Sequence[ClientUpdate], server_round: int, num_rounds: int) -> Aggregate:
        ups = sorted_updates(updates)
        sizes = [u.num_examples for u in ups] if self.by_size else None
        mix = fedvsr_mix([u.loss for u in ups], anneal(server_round, num_rounds), sizes, self.threshold)
        return Aggregate(weighted_mean([u.params for u in ups], mix.weights), mix.weights, mix.beta, mix.hellinger)

    def describe(self) -> dict:
        return {**super().describe(), "by_size": self.by_size, "threshold": self.threshold}
