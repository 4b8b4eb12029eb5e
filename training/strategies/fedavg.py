"""FedAvg (McMahan et al., 2017): the global model is the example-weighted mean of the client models."""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

from training.strategies.base import Aggregate, ClientUpdate, Strategy, example_weights, sorted_updates, weighted_mean


class FedAvg(Strategy):
    """theta = sum_k (n_k / n) theta_k, with n_k the number of training sequences client k holds."""

    name: ClassVar[str] = "fedavg"

    def aggregate(self, updates: Sequence[ClientUpdate], server_round: int, num_rounds: int) -> Aggregate:
        ups = sorted_updates(updates)
        weights = example_weights(ups)
        return Aggregate(weighted_mean([u.params for u in ups], weights), weights)
