"""Flower ServerApp and ClientApp: the FedVSR family on a real SuperLink + SuperNodes deployment.

The server strategy subclasses Flower's message-API FedAvg and overrides only ``aggregate_train``
(and ``configure_train``, to send FedProx's mu); the arithmetic is the same pure `Strategy.aggregate`
the in-process runner calls, and clients run the same `client_round`. Components for a Flower App:

    serverapp = "training.flower_app:server_app"
    clientapp = "training.flower_app:client_app"

Run config (set by training/flower_run.py): ``train`` and ``fed`` (JSON of TrainConfig / FedConfig),
``out`` (folder for the outputs, on the SuperLink's machine), ``command``, ``round-timeout`` (s).
Node config (per SuperNode): ``partition-id``; ``data`` (an .npz of uint8 sequences, e.g. the cache);
``num-partitions`` (split ``data`` like the in-process runner; 0 = the whole file is this client's);
``threads`` (torch CPU threads, 0 = default).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
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


def node_data(node_config: dict, cfg: TrainConfig, fed: FedConfig) -> ClientData:
    """This SuperNode's training material, from its node config (see the module docstring)."""
    from training.fed_report import load_groups

    if "partition-id" not in node_config or "data" not in node_config:
        raise ValueError("SuperNode needs --node-config 'partition-id=N data=\"/path/seqs.npz\"'")
    pid, parts = int(node_config["partition-id"]), int(node_config.get("num-partitions", 0))
    groups = load_groups(cfg, str(node_config["data"]))
    if parts == 0:
        return ClientData(pid, np.concatenate([groups[g] for g in sorted(groups)]), tuple(sorted(groups)))
    if parts != fed.clients or not 0 <= pid < parts:
        raise ValueError(f"node config partition-id={pid} num-partitions={parts} does not fit --clients {fed.clients}")
    return partition(groups, parts, fed.partition, cfg.seed)[pid]


# ---------------------------------------------------------------- client

client_app = ClientApp()


@client_app.train()
def client_train(msg: Message, context: Context) -> Message:
    """One local round on this SuperNode's partition; replies with full weights, n_k and L_k."""
    import torch

    cfg, fed = read_run_config(context.run_config)
    if int(context.node_config.get("threads", 0)):
        torch.set_num_threads(int(context.node_config["threads"]))
    data = node_data(context.node_config, cfg, fed)
    config = msg.content.config_records["config"]
    update = client_round(from_record(msg.content.array_records["arrays"]), data, cfg, fed,
                          int(number(config["server-round"])), number(config.get("proximal-mu", 0.0)))
    metrics = MetricRecord()
    metrics["num-examples"], metrics["loss"], metrics["partition-id"] = update.num_examples, update.loss, update.client
    return Message(RecordDict({"arrays": to_record(update.params), "metrics": metrics}), reply_to=msg)


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
        self.history["rounds"].append(round_record(server_round, updates, agg, None, time.monotonic() - self._t0))
        metrics = MetricRecord()
        metrics["mean-loss"], metrics["clients"] = float(np.mean([u.loss for u in updates])), len(updates)
        if agg.beta is not None:
            metrics["beta"] = agg.beta
        return to_record(agg.params), metrics


def update_from_reply(content: RecordDict) -> ClientUpdate:
    """A client's reply as the `ClientUpdate` the pure strategies take."""
    arrays = next(iter(content.array_records.values()))
    metrics = next(iter(content.metric_records.values()))
    return ClientUpdate(int(number(metrics["partition-id"])), from_record(arrays),
                        int(number(metrics["num-examples"])), number(metrics["loss"]))


server_app = ServerApp()


@server_app.main()
def server_main(grid: Grid, context: Context) -> None:
    """Run ``fed.rounds`` rounds over the connected SuperNodes and write the outputs to ``out``."""
    from training.fed_report import vid4_evaluator, write_history, write_outputs

    cfg, fed = read_run_config(context.run_config)
    out = Path(str(context.run_config["out"]))
    history = new_history(cfg, fed, "flower", [], str(context.run_config.get("command", "")))
    strategy = VsrFlowerStrategy(build_strategy(fed.strategy, fed.prox_mu, fed.size_weighted), fed, history)
    evaluate = vid4_evaluator(cfg, fed.eval_frames, fed.eval_dir)

    def after_round(server_round: int, arrays: ArrayRecord) -> MetricRecord | None:
        if server_round == 0:
            return None
        scores = evaluate(from_record(arrays)) if evaluate else {}
        history["rounds"][-1].update(eval_psnr=scores.get("y_psnr"), eval_ssim=scores.get("y_ssim"))
        write_history(out, history)
        log(INFO, "round %d: %s", server_round, json.dumps(history["rounds"][-1]))
        if not scores:
            return None
        record = MetricRecord()
        for key, value in scores.items():
            record[key] = value
        return record

    result = strategy.start(grid=grid, initial_arrays=to_record(initial_params(cfg)), num_rounds=fed.rounds,
                            timeout=float(context.run_config.get("round-timeout", 3600)),
                            evaluate_fn=after_round)
    if len(history["rounds"]) != fed.rounds:
        log(WARNING, "only %d of %d rounds completed", len(history["rounds"]), fed.rounds)
    write_outputs(out, from_record(result.arrays), cfg, history)
