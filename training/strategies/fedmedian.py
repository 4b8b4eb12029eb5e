"""FedMedian (Yin et al., 2018): the coordinate-wise median of the client models (robust to outliers)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

import numpy as np

from training.strategies.base import Aggregate, ClientUpdate, Params, Strategy, sorted_updates


def coordinate_median(params: Sequence[Params]) -> Params:
    """Element-wise median over clients of each tensor (mean of the middle two for an even count)."""
    out: Params = {}
    for key, first in params[0].items():
        stack = np.stack([p[key].astype(np.float64) for p in params])
        out[key] = np.median(stack, axis=0).astype(first.dtype)
    return out


class FedMedian(Strategy):
    """Ignores losses and example counts; the history records no weights for it."""

    name: ClassVar[str] = "fedmedian"

    def aggregate(self, updates: Sequence[ClientUpdate], server_round: int, num_rounds: int) -> Aggregate:
        ups = sorted_updates(updates)
        return Aggregate(coordinate_median([u.params for u in ups]), None)
