"""Secure aggregation that keeps FedVSR's loss-aware weights: Flower's SecAgg+ over pre-weighted models.

Each round has two phases:

1. ``train.local``: every site trains on its own data, keeps its weights theta_k in its Flower context
   and reports two scalars only, its mean loss L_k and its example count n_k;
2. SecAgg+ (Flower's `SecAggPlusWorkflow` on the server, `secaggplus_mod` on the sites): the server
   sends each site its mixing weight w_k, computed by the same pure `Strategy` from the reported
   scalars; the site multiplies theta_k by w_k *before* quantising and masking, and the server can
   only unmask the sum. Its result is sum_k w'_k theta_k / sum_k w'_k with w'_k = round(w_k Q) / Q.

So the server learns L_k and n_k per site, never theta_k. A site that drops out after phase 1 is
left out of the sum (SecAgg+ removes its masks while enough shares remain) and the survivors'
weights are renormalised. Quantisation bounds the difference to plain aggregation: see `tolerance`.
"""

from __future__ import annotations

import time
import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Context, Message
from flwr.common import (Code, FitIns, FitRes, Parameters, Status, ndarrays_to_parameters,
                         parameters_to_ndarrays)
from flwr.compat.common import recorddict_compat as compat
from flwr.server.compat.grid_client_proxy import GridClientProxy
from flwr.server.compat.legacy_context import LegacyContext
from flwr.server.strategy import Strategy as LegacyStrategy
from flwr.server.workflow import SecAggPlusWorkflow
from flwr.server.workflow.constant import MAIN_CONFIGS_RECORD, MAIN_PARAMS_RECORD
from flwr.server.workflow.constant import Key as WorkflowKey
from flwr.serverapp import Grid

from training.strategies import Params

Q = 2**22  # SecAgg+ quantization_range and max_weight: w_k travels as the integer round(w_k * Q)
CLIP = 8.0  # SecAgg+ clipping_range c: every w_k * theta_k entry must lie in [-c, c]
MOD = 2**32  # SecAgg+ modulus_range (masks are uniform in [0, MOD)); allows up to MOD / Q = 1024 sites
THRESHOLD = 0.5  # SecAgg+ reconstruction_threshold as a share of num_shares (at least 2 shares)
LOCAL = "vsr.local"  # record of a site's trained weights between the two phases (site-side context)
LOCAL_ROUND = "vsr.local.round"  # record of the round they belong to (record names are shared across types)
LOCAL_TRAIN = "train.local"  # message type of phase 1


def tolerance(sites: int, clip: float = CLIP, q: int = Q) -> float:
    """Largest |secure - plain| of one aggregate entry over ``sites`` sites.

    Stochastic rounding adds < 2c/Q per site; rounding w_k to w'_k = round(w_k Q)/Q moves the mix by at
    most K c / Q; the float32 result adds c / Q at most. Total (3K + 1) c / Q (1.3e-5 for K = 2).
    """
    return (3 * sites + 1) * clip / q


def weight_to_int(weight: float) -> int:
    """w_k in [0, 1] as the integer SecAgg+ carries (its ``num_examples`` slot)."""
    if not 0.0 <= weight <= 1.0:
        raise ValueError(f"a mixing weight must be in [0, 1], got {weight}")
    return int(round(weight * Q))


def weighted_reply(msg: Message, context: Context) -> Message:
    """Site side, inside `secaggplus_mod`: this site's stored theta_k as a legacy FitRes with the mixing
    weight from the server in ``num_examples`` (the mod scales, quantises and masks it)."""
    config = msg.content.config_records["fitins.config"]
    server_round, q = int(config["server-round"]), int(config["weight-q"])
    stored = context.state.config_records.get(LOCAL_ROUND)
    if stored is None or int(stored["round"]) != server_round or LOCAL not in context.state.array_records:
        raise RuntimeError(f"round {server_round}: this site holds no locally trained weights for it")
    arrays = [a.numpy() for a in context.state.array_records[LOCAL].values()]
    peak = max(float(np.abs(a).max()) for a in arrays if a.size) * q / Q
    if peak > CLIP:
        raise ValueError(f"weights reach {peak:.3g} after mixing, beyond SecAgg+'s clipping range {CLIP}")
    del context.state.array_records[LOCAL]
    res = FitRes(Status(Code.OK, ""), ndarrays_to_parameters(arrays), num_examples=q, metrics={})
    return Message(compat.fitres_to_recorddict(res, keep_input=False), reply_to=msg)


def keep_local(context: Context, server_round: int, record: ArrayRecord) -> None:
    """Site side, phase 1: hold this round's trained weights until the SecAgg+ phase asks for them."""
    context.state.array_records[LOCAL] = record
    context.state.config_records[LOCAL_ROUND] = ConfigRecord({"round": server_round})


class _Weighting(LegacyStrategy):
    """The legacy strategy `SecAggPlusWorkflow` drives: hands out the mixing weights, keeps the sum."""

    def __init__(self, grid: Grid, run_id: int, server_round: int, weights: dict[int, float]) -> None:
        self.grid, self.run_id, self.round, self.weights = grid, run_id, server_round, weights
        self.result: list[np.ndarray] | None = None  # the unmasked weighted mean, in state-dict order
        self.summed: list[int] = []  # node ids whose masked models entered the sum

    def configure_fit(self, server_round, parameters, client_manager):  # type: ignore[no-untyped-def]
        empty = Parameters(tensors=[], tensor_type="numpy.ndarray")  # the sites already hold theta_k
        return [(GridClientProxy(nid, self.grid, self.run_id),
                 FitIns(empty, {"server-round": self.round, "weight-q": weight_to_int(w)}))
                for nid, w in self.weights.items()]

    def aggregate_fit(self, server_round, results, failures):  # type: ignore[no-untyped-def]
        if results:
            self.result = parameters_to_ndarrays(results[0][1].parameters)
            self.summed = sorted(int(proxy.node_id) for proxy, _ in results)
        return None, {}

    def initialize_parameters(self, client_manager):  # type: ignore[no-untyped-def]
        return None

    def configure_evaluate(self, server_round, parameters, client_manager):  # type: ignore[no-untyped-def]
        return []

    def aggregate_evaluate(self, server_round, results, failures):  # type: ignore[no-untyped-def]
        return None, {}

    def evaluate(self, server_round, parameters):  # type: ignore[no-untyped-def]
        return None


def secure_mean(grid: Grid, context: Context, server_round: int, weights: dict[int, float],
                template: Params, timeout: float) -> tuple[Params, list[int]]:
    """Sum_k w_k theta_k over the sites ``weights`` names (node id -> w_k) with SecAgg+.

    Returns the mean (named and typed like ``template``) and the node ids that made it into the sum.
    """
    weighting = _Weighting(grid, context.run_id, server_round, weights)
    legacy = LegacyContext(context, strategy=weighting)
    legacy.state.config_records[MAIN_CONFIGS_RECORD] = ConfigRecord({WorkflowKey.CURRENT_ROUND: server_round})
    legacy.state.array_records[MAIN_PARAMS_RECORD] = ArrayRecord()
    workflow = SecAggPlusWorkflow(num_shares=1.0, reconstruction_threshold=THRESHOLD, max_weight=float(Q),
                                  clipping_range=CLIP, quantization_range=Q, modulus_range=MOD, timeout=timeout)
    workflow(grid, legacy)
    if weighting.result is None:
        raise RuntimeError(f"round {server_round}: secure aggregation halted (too few sites answered for "
                           "SecAgg+ to unmask the sum); see the ServerApp log")
    if len(weighting.result) != len(template):
        raise RuntimeError(f"round {server_round}: the secure sum has {len(weighting.result)} tensors, "
                           f"the model {len(template)}")
    out: Params = {}
    for (name, ref), arr in zip(template.items(), weighting.result):
        arr = np.asarray(arr, dtype=np.float64).reshape(ref.shape)
        out[name] = (np.rint(arr) if np.issubdtype(ref.dtype, np.integer) else arr).astype(ref.dtype)
    return out, weighting.summed


def wait_for_sites(grid: Grid, count: int, timeout: float) -> list[int]:
    """Node ids of the connected sites once at least ``count`` are there (sorted)."""
    deadline = time.monotonic() + timeout
    while True:
        nodes = sorted(grid.get_node_ids())
        if len(nodes) >= count:
            return nodes
        if time.monotonic() > deadline:
            raise RuntimeError(f"only {len(nodes)} of {count} sites connected within {timeout:.0f} s")
        time.sleep(1.0)

