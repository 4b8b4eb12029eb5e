"""Flower ServerApp and ClientApp: the FedVSR family on a real SuperLink + SuperNodes deployment.

The server strategy subclasses Flower's message-API FedAvg and overrides only ``aggregate_train``
(and ``configure_train``, to send FedProx's mu); the arithmetic is the same pure `Strategy.aggregate`
the in-process runner calls, and clients run the same `client_round`. Components for a Flower App:

    serverapp = "training.flower_app:server_app"
    clientapp = "training.flower_app:client_app"

Run config (set by training/flower_run.py): ``train`` and ``fed`` (JSON of TrainConfig / FedConfig),
``out`` (folder for the outputs, on the SuperLink's machine), ``command``, ``round-timeout`` (s).
``secure-aggregation`` (SecAgg+ rounds, training/flower_secure.py), ``keep-rounds`` (write each round's
global model to ``out``/rounds/round-TTT/).
Node config (per SuperNode): ``data`` (an .npz of uint8 sequences, e.g. the cache); ``partition-id``
(the site's id in the history; default: its Flower node id mod 2^31); ``num-partitions`` (split ``data`` like the
in-process runner; 0 or absent = the whole file is this site's); ``threads`` (torch CPU threads, 0 =
default); ``local-steps`` (this site's cap on steps per round); ``status`` (a file the site appends
"round t" to after each local round, read by `vsr-train join`).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable
from dataclasses import fields
from logging import INFO, WARNING
from pathlib import Path
from typing import Any

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from flwr.common.logger import log
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import FedAvg as FlowerFedAvg

from training.federated import FedConfig, client_round, initial_params, new_history, round_record
from training.partition import ClientData, partition
from training.strategies import ClientUpdate, Params, Strategy, build_strategy
from training.train import TrainConfig


def to_record(params: Params) -> ArrayRecord:
    """numpy state dict -> ArrayRecord (names kept)."""
    return ArrayRecord(array_dict={k: Array(np.ascontiguousarray(v)) for k, v in params.items()})


def from_record(record: ArrayRecord) -> Params:
    """ArrayRecord -> numpy state dict."""
    return {k: a.numpy() for k, a in record.items()}


def number(value: object) -> float:
    """A scalar record value as float; anything else is a malformed message."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    raise ValueError(f"expected a number in the Flower message, got {value!r}")


def _dataclass_from_json(kind: type, text: str) -> Any:
    raw = json.loads(text)
    known = {f.name for f in fields(kind)}
    return kind(**{k: v for k, v in raw.items() if k in known})


def read_run_config(run_config: dict) -> tuple[TrainConfig, FedConfig]:
    """TrainConfig and FedConfig from the run config's JSON strings."""
    return (_dataclass_from_json(TrainConfig, str(run_config["train"])),
            _dataclass_from_json(FedConfig, str(run_config["fed"])))


def node_data(node_config: dict, cfg: TrainConfig, fed: FedConfig, node_id: int = 0) -> ClientData:
    """This SuperNode's training material, from its node config (see the module docstring)."""
    from training.fed_report import load_groups

    if "data" not in node_config:
        raise ValueError("SuperNode needs --node-config 'data=\"/path/seqs.npz\"' (vsr-train join sets it)")
    # default id: Flower's node id (uint64) folded into 31 bits, so it fits a MetricRecord int and stays unique
    pid, parts = int(node_config.get("partition-id", node_id % 2**31)), int(node_config.get("num-partitions", 0))
    groups = load_groups(cfg, str(node_config["data"]))
    if parts == 0:
        return ClientData(pid, np.concatenate([groups[g] for g in sorted(groups)]), tuple(sorted(groups)))
    if parts != fed.clients or not 0 <= pid < parts:
        raise ValueError(f"node config partition-id={pid} num-partitions={parts} does not fit --clients {fed.clients}")
    return partition(groups, parts, fed.partition, cfg.seed)[pid]


# ---------------------------------------------------------------- client

def _secure_only(msg: Message, context: Context, call_next: Any) -> Message:
    """Flower's `secaggplus_mod` on SecAgg+ messages only; plain rounds pass straight through."""
    from flwr.client.mod import secaggplus_mod
    from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_CONFIGS

    if RECORD_KEY_CONFIGS in msg.content.config_records:
        return secaggplus_mod(msg, context, call_next)
    return call_next(msg, context)


client_app = ClientApp()


def local_round(msg: Message, context: Context) -> ClientUpdate:
    """One local round on this SuperNode's data from the global weights in ``msg``."""
    from dataclasses import replace

    import torch

    cfg, fed = read_run_config(context.run_config)
    node = context.node_config
    if int(node.get("threads", 0)):
        torch.set_num_threads(int(node["threads"]))
    if "local-steps" in node:
        fed = replace(fed, local_steps=int(node["local-steps"]))
    data = node_data(node, cfg, fed, context.node_id)
    config = msg.content.config_records["config"]
    t = int(number(config["server-round"]))
    update = client_round(from_record(msg.content.array_records["arrays"]), data, cfg, fed, t,
                          number(config.get("proximal-mu", 0.0)))
    if node.get("status"):
        with open(str(node["status"]), "a") as f:
            f.write(f"round {t} loss {update.loss:.6g}\n")
    return update


def _metrics(update: ClientUpdate) -> MetricRecord:
    metrics = MetricRecord()
    metrics["num-examples"], metrics["loss"], metrics["partition-id"] = update.num_examples, update.loss, update.client
    return metrics


@client_app.train(mods=[_secure_only])
def client_train(msg: Message, context: Context) -> Message:
    """Plain round: train and reply with full weights, n_k and L_k. SecAgg+ round (called from
    `secaggplus_mod`): reply with the weights kept from ``train.local``, to be weighted and masked."""
    if "fitins.config" in msg.content.config_records:
        from training.flower_secure import weighted_reply

        return weighted_reply(msg, context)
    update = local_round(msg, context)
    return Message(RecordDict({"arrays": to_record(update.params), "metrics": _metrics(update)}), reply_to=msg)


@client_app.train("local")
def client_train_local(msg: Message, context: Context) -> Message:
    """Phase 1 of a secure round: train, keep the weights here, reply with n_k and L_k only."""
    from training.flower_secure import keep_local

    update = local_round(msg, context)
    keep_local(context, int(number(msg.content.config_records["config"]["server-round"])), to_record(update.params))
    return Message(RecordDict({"metrics": _metrics(update)}), reply_to=msg)


# ---------------------------------------------------------------- server


class VsrFlowerStrategy(FlowerFedAvg):
    """Flower FedAvg whose aggregation is delegated to a `training.strategies.Strategy`.

    All K clients train every round (fraction 1, no federated evaluation); Vid4 scoring of the global
    model runs on the server through ``evaluate_fn``. Each round is appended to ``history``.
    """

    def __init__(self, strategy: Strategy, fed: FedConfig, history: dict) -> None:
        super().__init__(fraction_train=1.0, fraction_evaluate=0.0, min_train_nodes=fed.clients,
                         min_available_nodes=fed.clients)
        self.strategy, self.fed, self.history = strategy, fed, history
        self._t0 = time.monotonic()

    def configure_train(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                        grid: Grid) -> Iterable[Message]:
        self._t0 = time.monotonic()
        config["proximal-mu"] = float(self.strategy.prox_mu)
        return super().configure_train(server_round, arrays, config, grid)

    def aggregate_train(self, server_round: int,
                        replies: Iterable[Message]) -> tuple[ArrayRecord | None, MetricRecord | None]:
        valid, failed = self._check_and_log_replies(replies, is_train=True)
        if not valid:
            raise RuntimeError(f"round {server_round}: no client returned an update ({len(failed)} failed)")
        updates = [update_from_reply(m.content) for m in valid]
        agg = self.strategy.aggregate(updates, server_round, self.fed.rounds)
        if not self.history["clients"]:  # sizes are all the server learns about the partitions
            self.history["clients"] = [{"client": u.client, "sequences": u.num_examples}
                                       for u in sorted(updates, key=lambda u: u.client)]
        rec = round_record(server_round, updates, agg, None, time.monotonic() - self._t0)
        self.history["rounds"].append({**rec, "secure_aggregation": False})
        metrics = MetricRecord()
        metrics["mean-loss"], metrics["clients"] = float(np.mean([u.loss for u in updates])), len(updates)
        if agg.beta is not None:
            metrics["beta"] = agg.beta
        return to_record(agg.params), metrics


def update_from_reply(content: RecordDict) -> ClientUpdate:
    """A client's reply as the `ClientUpdate` the pure strategies take."""
    arrays = next(iter(content.array_records.values()), None)  # none in a secure round's phase 1
    metrics = next(iter(content.metric_records.values()))
    return ClientUpdate(int(number(metrics["partition-id"])), {} if arrays is None else from_record(arrays),
                        int(number(metrics["num-examples"])), number(metrics["loss"]))


def secure_rounds(grid: Grid, context: Context, strategy: Strategy, fed: FedConfig, history: dict, params: Params,
                  after_round: Callable[[int, ArrayRecord], object], timeout: float) -> Params:
    """``fed.rounds`` rounds of local training + SecAgg+ (training/flower_secure.py); returns the weights."""
    from training.flower_secure import LOCAL_TRAIN, secure_mean, wait_for_sites

    if strategy.name == "fedmedian":
        raise ValueError("FedMedian is not a weighted sum, so SecAgg+ cannot compute it; use fedvsr or fedavg")
    for t in range(1, fed.rounds + 1):
        t0 = time.monotonic()
        nodes = wait_for_sites(grid, fed.clients, timeout)
        content = RecordDict({"arrays": to_record(params), "config": ConfigRecord(
            {"server-round": t, "proximal-mu": float(strategy.prox_mu)})})
        replies = grid.send_and_receive([Message(content, dst_node_id=n, message_type=LOCAL_TRAIN, group_id=str(t))
                                         for n in nodes], timeout=timeout)
        reports = {m.metadata.src_node_id: update_from_reply(m.content) for m in replies if not m.has_error()}
        if len(reports) < 2:
            raise RuntimeError(f"round {t}: {len(reports)} of {len(nodes)} sites trained; SecAgg+ needs two")
        agg = strategy.aggregate(list(reports.values()), t, fed.rounds)  # no weights here: only the mix
        order = sorted(reports, key=lambda n: reports[n].client)  # the strategy's weights follow client order
        mix = dict(zip(order, agg.weights or []))
        params, summed = secure_mean(grid, context, t, mix, params, timeout)
        rec = round_record(t, list(reports.values()), agg, None, time.monotonic() - t0)
        dropped = sorted(reports[n].client for n in order if n not in summed)
        history["rounds"].append({**rec, "secure_aggregation": True, "dropped": dropped})
        if not history["clients"]:
            history["clients"] = [{"client": u.client, "sequences": u.num_examples}
                                  for u in sorted(reports.values(), key=lambda u: u.client)]
        after_round(t, to_record(params))
    return params


server_app = ServerApp()


@server_app.main()
def server_main(grid: Grid, context: Context) -> None:
    """Run ``fed.rounds`` rounds over the connected SuperNodes and write the outputs to ``out``."""
    from training.fed_report import vid4_evaluator, write_global, write_history, write_outputs

    cfg, fed = read_run_config(context.run_config)
    out = Path(str(context.run_config["out"]))
    secure = bool(context.run_config.get("secure-aggregation", False))
    history = {**new_history(cfg, fed, "flower", [], str(context.run_config.get("command", ""))),
               "secure_aggregation": secure}
    rule = build_strategy(fed.strategy, fed.prox_mu, fed.size_weighted)
    timeout = float(context.run_config.get("round-timeout", 3600))
    evaluate = vid4_evaluator(cfg, fed.eval_frames, fed.eval_dir)

    def after_round(server_round: int, arrays: ArrayRecord) -> MetricRecord | None:
        if server_round == 0:
            return None
        scores = evaluate(from_record(arrays)) if evaluate else {}
        if context.run_config.get("keep-rounds", False):
            write_global(out / "rounds" / f"round-{server_round:03d}", from_record(arrays), cfg, history)
        history["rounds"][-1].update(eval_psnr=scores.get("y_psnr"), eval_ssim=scores.get("y_ssim"))
        write_history(out, history)
        log(INFO, "round %d: %s", server_round, json.dumps(history["rounds"][-1]))
        if not scores:
            return None
        record = MetricRecord()
        for key, value in scores.items():
            record[key] = value
        return record

    if secure:
        from training.flower_secure import CLIP, Q, tolerance

        history["secagg"] = {"quantization_range": Q, "clipping_range": CLIP,
                             "tolerance_per_round": tolerance(fed.clients)}
        params = secure_rounds(grid, context, rule, fed, history, initial_params(cfg), after_round, timeout)
    else:
        result = VsrFlowerStrategy(rule, fed, history).start(
            grid=grid, initial_arrays=to_record(initial_params(cfg)), num_rounds=fed.rounds, timeout=timeout,
            evaluate_fn=after_round)
        params = from_record(result.arrays)
    if len(history["rounds"]) != fed.rounds:
        log(WARNING, "only %d of %d rounds completed", len(history["rounds"]), fed.rounds)
    write_outputs(out, params, cfg, history)
