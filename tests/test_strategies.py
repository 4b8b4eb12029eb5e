"""Aggregation strategies as pure functions: FedVSR's weighting against the issue's test vectors, and
FedAvg / FedProx / FedMedian on hand-checkable parameter sets."""

from __future__ import annotations

import numpy as np
import pytest

from training.strategies import ClientUpdate, build_strategy
from training.strategies.base import weighted_mean
from training.strategies.fedmedian import FedMedian
from training.strategies.fedprox import FedProx
from training.strategies.fedvsr import FedVSR, anneal, fedvsr_mix


def _updates(losses, sizes=None, values=None):
    """K updates whose single tensor 'w' is filled with ``values[k]`` (default k)."""
    sizes = sizes or [10] * len(losses)
    values = values if values is not None else list(range(len(losses)))
    return [ClientUpdate(k, {"w": np.full((2, 3), v, np.float32), "b": np.array([v], np.float32)}, n, loss)
            for k, (loss, n, v) in enumerate(zip(losses, sizes, values))]


@pytest.mark.parametrize("losses, s, h, beta, weights", [
    ([0.03, 0.04, 0.05, 0.06], 0.99, 0.091, 0.043, [0.254, 0.251, 0.248, 0.247]),
    ([0.02, 0.05, 0.08, 0.12], 0.99, 0.238, 0.197, [0.309, 0.244, 0.228, 0.219]),
    ([0.03, 0.04, 0.05, 0.06], 0.5, None, 0.0, [0.25, 0.25, 0.25, 0.25]),
])
def test_fedvsr_mix_matches_issue_vectors(losses, s, h, beta, weights):
    # Execute
    mix = fedvsr_mix(losses, s)
    # Assert (the issue gives three decimals)
    if h is not None:
        assert mix.hellinger == pytest.approx(h, abs=1e-3)
    assert mix.beta == pytest.approx(beta, abs=1e-3)
    assert mix.weights == pytest.approx(weights, abs=1e-3)
    assert sum(mix.weights) == pytest.approx(1.0, abs=1e-12)


def test_fedvsr_below_threshold_is_exactly_uniform_and_last_round_too():
    # Prepare: H(u, q) = 0.046 < 0.05 for these losses at s = 0.5
    mix = fedvsr_mix([0.03, 0.04, 0.05, 0.06], 0.5)
    # Assert
    assert 0 < mix.hellinger < 0.05 and mix.beta == 0.0 and mix.weights == [0.25] * 4
    assert anneal(10, 10) == 0.0 and fedvsr_mix([0.01, 0.5], anneal(10, 10)).weights == [0.5, 0.5]
    assert anneal(1, 4) == pytest.approx(0.75)
    with pytest.raises(ValueError):
        anneal(0, 4)


def test_fedvsr_aggregate_favours_low_loss_and_ignores_reply_order():
    # Prepare: client 0 (value 0) has by far the lowest loss
    ups = _updates([0.02, 0.05, 0.08, 0.12], values=[0.0, 1.0, 2.0, 3.0])
    strategy = FedVSR()
    # Execute
    agg = strategy.aggregate(ups, server_round=1, num_rounds=100)
    shuffled = strategy.aggregate([ups[2], ups[0], ups[3], ups[1]], server_round=1, num_rounds=100)
    # Assert
    assert agg.weights == pytest.approx([0.309, 0.244, 0.228, 0.219], abs=1e-3)
    expected = float(np.dot(agg.weights, [0, 1, 2, 3]))
    np.testing.assert_allclose(agg.params["w"], np.full((2, 3), expected), rtol=1e-6)
    assert expected < 1.5  # pulled towards the low-loss client, below the plain mean
    np.testing.assert_array_equal(agg.params["w"], shuffled.params["w"])
    assert agg.params["w"].dtype == np.float32


def test_fedvsr_size_weighting_is_optional():
    # Prepare: equal losses, unequal sizes
    ups = _updates([0.05, 0.05], sizes=[30, 10], values=[0.0, 4.0])
    # Execute
    plain = FedVSR().aggregate(ups, 1, 2)
    sized = FedVSR(by_size=True).aggregate(ups, 1, 2)
    # Assert
    assert plain.weights == pytest.approx([0.5, 0.5]) and plain.params["w"][0, 0] == pytest.approx(2.0)
    assert sized.weights == pytest.approx([0.75, 0.25]) and sized.params["w"][0, 0] == pytest.approx(1.0)


@pytest.mark.parametrize("losses", [[0.1, 0.0], [0.1, -1.0], [0.1, float("nan")], []])
def test_fedvsr_refuses_bad_losses(losses):
    with pytest.raises(ValueError):
        fedvsr_mix(losses, 0.5)


def test_fedavg_and_fedprox_weight_by_examples():
    # Prepare
    ups = _updates([0.5, 0.1, 0.3], sizes=[10, 30, 60], values=[1.0, 2.0, 3.0])
    # Execute
    avg = build_strategy("fedavg").aggregate(ups, 1, 3)
    prox = build_strategy("fedprox", prox_mu=0.01).aggregate(ups, 1, 3)
    # Assert: (10*1 + 30*2 + 60*3) / 100 = 2.5, losses play no part
    assert avg.weights == pytest.approx([0.1, 0.3, 0.6])
    np.testing.assert_allclose(avg.params["w"], 2.5, rtol=1e-7)
    np.testing.assert_array_equal(avg.params["b"], prox.params["b"])
    assert build_strategy("fedprox").prox_mu == 1e-3 and build_strategy("fedavg").prox_mu == 0.0
    assert build_strategy("fedprox", prox_mu=0.01).prox_mu == 0.01
    with pytest.raises(ValueError):
        FedProx(-1.0)


def test_fedmedian_is_coordinatewise_and_robust_to_an_outlier():
    # Prepare: one client sends a wild model
    ups = _updates([0.1] * 5, values=[1.0, 2.0, 3.0, 4.0, 1e6])
    ups[0].params["w"][0, 0] = 100.0  # a second, coordinate-local outlier
    # Execute
    agg = FedMedian().aggregate(ups, 1, 1)
    # Assert
    assert agg.weights is None and agg.beta is None
    assert agg.params["w"][0, 0] == 4.0 and agg.params["w"][1, 2] == 3.0
    assert agg.params["b"][0] == 3.0
    even = FedMedian().aggregate(ups[:4], 1, 1)
    assert even.params["b"][0] == 2.5


def test_weighted_mean_and_inputs_are_checked():
    # Prepare
    a = {"x": np.array([1.0], np.float32)}
    b = {"y": np.array([1.0], np.float32)}
    # Assert
    with pytest.raises(ValueError):
        weighted_mean([a], [0.5, 0.5])
    with pytest.raises(ValueError, match="tensors"):
        build_strategy("fedavg").aggregate([ClientUpdate(0, a, 1, 0.1), ClientUpdate(1, b, 1, 0.1)], 1, 1)
    with pytest.raises(ValueError, match="no client updates"):
        build_strategy("fedvsr").aggregate([], 1, 1)
    with pytest.raises(ValueError, match="unknown strategy"):
        build_strategy("fedsgd")
