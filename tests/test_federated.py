"""Partitions, stateless client rounds and the in-process federated runner (tiny data made in code)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from training.federated import FedConfig, client_round, initial_params, local_steps, run_federated
from training.partition import ClientData, partition
from training.train import TrainConfig

CFG = TrainConfig(model="rvsr-tiny", scale=2, batch=2, patch=16, frames=3, lr=2e-3)


def tagged_groups() -> dict[str, np.ndarray]:
    """Sequences whose pixels all equal a unique id, so partitions can be traced back."""
    sizes = {"video/clip_a": 6, "video/clip_b": 4, "images/set_x": 12, "images/set_y": 3}
    out, next_id = {}, 1
    for name, n in sizes.items():
        ids = np.arange(next_id, next_id + n, dtype=np.uint8)
        out[name] = np.broadcast_to(ids[:, None, None, None, None], (n, 2, 4, 4, 3)).copy()
        next_id += n
    return out


def ids(c: ClientData) -> list[int]:
    return sorted(int(s[0, 0, 0, 0]) for s in c.seqs)


def all_ids(clients: list[ClientData]) -> list[int]:
    return sorted(i for c in clients for i in ids(c))


def training_groups(seed: int = 0) -> dict[str, np.ndarray]:
    """Two content types: smooth gradients (easy) and noise (hard), 4 frames of 32x32."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:32, :32] / 31.0
    smooth = []
    for _ in range(4):
        a, b, c = rng.uniform(0.2, 1.0, 3)
        frames = [np.stack([a * yy, b * xx, c * (1 - yy)], -1) for _ in range(4)]
        smooth.append((np.stack(frames) * 255).astype(np.uint8))
    noise = rng.integers(0, 256, size=(4, 4, 32, 32, 3), dtype=np.uint8)
    return {"images/smooth": np.stack(smooth), "video/noise": noise}


def test_iid_partition_covers_every_sequence_once():
    # Prepare
    groups = tagged_groups()
    # Execute
    clients = partition(groups, 4, "iid", seed=3)
    again = partition(groups, 4, "iid", seed=3)
    # Assert
    assert all_ids(clients) == list(range(1, 26))
    assert [len(c.seqs) for c in clients] == [7, 6, 6, 6]
    assert [ids(c) for c in clients] == [ids(c) for c in again]
    assert [ids(c) for c in clients] != [ids(c) for c in partition(groups, 4, "iid", seed=4)]


def test_content_equal_partition_gives_equal_shares_of_few_types():
    # Prepare: 25 sequences of three content types (images/set_x 12, images/set_y 3, video 10)
    groups = tagged_groups()
    # Execute
    clients = partition(groups, 4, "content-equal")
    # Assert: near-equal sizes, every sequence once, each client at most two content types in type order
    assert [len(c.seqs) for c in clients] == [7, 6, 6, 6]
    assert all_ids(clients) == list(range(1, 26))
    assert clients[0].sources == ("images/set_x",) and clients[-1].sources == ("video/clip_a", "video/clip_b")
    assert all(len({s.split("/")[0] if s.startswith("video/") else s for s in c.sources}) <= 2 for c in clients)


def test_content_partition_gives_clients_different_sources():
    # Prepare: three content types (video, set_x, set_y)
    groups = tagged_groups()
    # Execute
    three = partition(groups, 3, "content")
    four = partition(groups, 4, "content")
    two = partition(groups, 2, "content")
    # Assert: one type per client, every sequence used once
    assert [c.sources for c in three] == [("images/set_x",), ("images/set_y",), ("video/clip_a", "video/clip_b")]
    for split in (two, three, four):
        assert all_ids(split) == list(range(1, 26))
    # more clients than types: the largest type (set_x, 12) is halved; fewer: the two smallest merge
    assert sorted(len(c.seqs) for c in four) == [3, 6, 6, 10]
    assert sum(c.sources == ("images/set_x",) for c in four) == 2
    assert sorted(len(c.seqs) for c in two) == [12, 13]


def test_quantity_skew_keeps_iid_content_with_unequal_sizes():
    # Execute
    clients = partition(tagged_groups(), 4, "quantity", seed=0)
    # Assert
    sizes = [len(c.seqs) for c in clients]
    assert sum(sizes) == 25 and min(sizes) >= 1 and max(sizes) - min(sizes) > 3
    assert all_ids(clients) == list(range(1, 26))


def test_partition_refuses_impossible_requests():
    with pytest.raises(ValueError, match="cannot feed"):
        partition(tagged_groups(), 26, "iid")
    with pytest.raises(ValueError, match="unknown partition"):
        partition(tagged_groups(), 2, "dirichlet")


def test_local_round_length_is_one_epoch_unless_capped():
    assert local_steps(25, CFG, FedConfig()) == 13  # ceil(25 / batch 2)
    assert local_steps(25, CFG, FedConfig(local_epochs=2)) == 25
    assert local_steps(25, CFG, FedConfig(local_steps=4)) == 4
    assert local_steps(1, CFG, FedConfig()) == 1


def test_client_round_is_stateless_and_deterministic():
    # Prepare
    data = ClientData(0, training_groups()["video/noise"], ("video/noise",))
    fed = FedConfig(clients=1, rounds=2, local_steps=3)
    start = initial_params(CFG)
    # Execute
    a = client_round(start, data, CFG, fed, server_round=1)
    b = client_round(start, data, CFG, fed, server_round=1)
    c = client_round(start, data, CFG, fed, server_round=2)
    # Assert
    assert a.num_examples == 4 and np.isfinite(a.loss) and a.loss > 0
    assert all(np.array_equal(a.params[k], b.params[k]) for k in start) and a.loss == b.loss
    assert any(not np.array_equal(a.params[k], start[k]) for k in start)
    assert a.loss != c.loss  # round 2 draws other batches at another learning rate


def test_fedprox_term_pulls_the_client_towards_the_global_model():
    # Prepare
    data = ClientData(1, training_groups()["video/noise"], ("video/noise",))
    fed = FedConfig(clients=1, rounds=1, local_steps=6)
    start = initial_params(CFG)

    def drift(mu: float) -> float:
        upd = client_round(start, data, CFG, fed, 1, mu=mu)
        return float(sum(((upd.params[k] - start[k]) ** 2).sum() for k in start))

    # Execute / Assert: a large mu keeps the local model measurably closer
    assert drift(50.0) < 0.9 * drift(0.0)


def test_run_federated_writes_global_weights_history_and_plot(tmp_path: Path):
    # Prepare
    from safetensors import safe_open

    from engine.models import build_model, load_weights

    clients = partition(training_groups(), 2, "content")
    fed = FedConfig(strategy="fedvsr", clients=2, rounds=2, local_steps=3)
    scores = iter([{"y_psnr": 20.0, "y_ssim": 0.5}, {"y_psnr": 21.0, "y_ssim": 0.6}])
    # Execute
    params, _ = run_federated(clients, CFG, fed, tmp_path, "vsr-train test", log=lambda s: None,
                              evaluate=lambda p: next(scores))
    again, _ = run_federated(clients, CFG, fed, None, log=lambda s: None)
    # Assert: files and their formats
    saved = json.loads((tmp_path / "history.json").read_text())
    assert [r["round"] for r in saved["rounds"]] == [1, 2] and saved["command"] == "vsr-train test"
    first = saved["rounds"][0]
    assert len(first["client_losses"]) == 2 and sum(first["weights"]) == pytest.approx(1.0, abs=1e-5)
    assert first["beta"] > 0  # smooth vs noise clients: losses differ enough in round 1 of 2 (s = 0.5)
    assert first["weights"][1] < first["weights"][0]  # the noisy (high-loss) client counts less
    assert saved["rounds"][1]["beta"] == 0.0  # last round: s = 0, plain mean
    assert [r["eval_psnr"] for r in saved["rounds"]] == [20.0, 21.0]
    assert (tmp_path / "history.png").stat().st_size > 1000
    with safe_open(str(tmp_path / "global.safetensors"), "np") as f:
        assert f.metadata() == {"model": "rvsr-tiny", "scale": "2"}
    load_weights(build_model("rvsr-tiny", 2), tmp_path / "global.safetensors")  # strict load
    # the global model moved, and the run is reproducible in its seed
    start = initial_params(CFG)
    assert any(not np.array_equal(params[k], start[k]) for k in start)
    assert all(np.array_equal(params[k], again[k]) for k in params)


def test_cli_federated_run_and_one_line_errors(tmp_path: Path, capsys: pytest.CaptureFixture):
    # Prepare
    from training.cli import main

    data = tmp_path / "seqs.npz"
    np.savez(data, **training_groups())
    common = ["--model", "rvsr-tiny", "--scale", "2", "--batch", "2", "--patch", "16", "--frames", "3",
              "--data", str(data)]
    # Execute
    rc = main(["--strategy", "fedmedian", "--clients", "2", "--rounds", "1", "--partition", "iid",
               "--local-steps", "2", "--out", str(tmp_path / "run"), *common])
    # Assert
    assert rc == 0 and (tmp_path / "run" / "global.safetensors").exists()
    assert json.loads((tmp_path / "run" / "history.json").read_text())["rounds"][0]["weights"] is None
    capsys.readouterr()
    for bad in (["--clients", "9"], ["--prox-mu", "-1"], ["--model", "nope"], ["--patch", "15"]):
        rc = main(["--strategy", "fedprox", "--out", str(tmp_path / "bad"), *common, *bad])
        err = capsys.readouterr().err
        assert rc != 0 and err.startswith("vsr-train: error:") and err.count("\n") == 1, err


def test_benchmark_compares_all_strategies_and_their_costs(tmp_path: Path):
    # Prepare
    from benchmarks.federated import main

    data = tmp_path / "seqs.npz"
    np.savez(data, **training_groups())
    args = ["--out", str(tmp_path / "bench"), "--model", "rvsr-tiny", "--clients", "2", "--rounds", "2",
            "--local-steps", "2", "--batch", "2", "--patch", "16", "--frames", "3", "--eval-frames", "0",
            "--data", str(data)]
    # Execute: a full run, then the same command again (every strategy already finished)
    assert main(args) == 0
    first = json.loads((tmp_path / "bench" / "summary.json").read_text())
    assert main(args) == 0
    # Assert: one row per strategy with training and aggregation times; FedAvg is the 1.0 reference
    summary = json.loads((tmp_path / "bench" / "summary.json").read_text())
    rows = summary["strategies"]
    assert list(rows) == ["fedvsr", "fedavg", "fedprox", "fedmedian"]
    assert all(r["train_sec"] > 0 and r["agg_sec"] > 0 for r in rows.values())
    assert rows["fedavg"]["train_vs_fedavg"] == 1.0 and rows["fedavg"]["agg_vs_fedavg"] == 1.0
    assert {k: r["train_sec"] for k, r in rows.items()} == {k: r["train_sec"] for k, r in first["strategies"].items()}
    assert summary["train"]["hf_weight"] == 1.0
    history = json.loads((tmp_path / "bench" / "fedavg" / "history.json").read_text())
    assert history["train"]["hf_weight"] == 0.0  # the baselines train on Charbonnier alone
    over = summary["overheads"]
    assert set(over) == set(rows) and all(o["step_vs_fedavg"] > 0 and o["agg_ms"] > 0 for o in over.values())
    md = (tmp_path / "bench" / "summary.md").read_text()
    assert "aggregation vs FedAvg" in md and (tmp_path / "bench" / "compare.png").stat().st_size > 1000
