"""Multi-site roles on 127.0.0.1: `vsr-train keys`, `serve --secure-aggregation --authorized-keys` and three
`join`s (two authorised, one not), each site with its own data folder; plus the roles' one-line errors."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("flwr", reason="flwr not installed (pip install 'flwr>=1.41,<1.43')")

from training.flower_procs import free_port

TRAIN = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "train" / "images"
MODEL = ["--model", "rvsr-tiny", "--scale", "2", "--patch", "16", "--frames", "3", "--batch", "2", "--lr", "2e-3",
         "--threads", "1"]
ROUNDS = 2


def vsr_train(*args: str) -> list[str]:
    return [sys.executable, "-c", "import sys; from training.cli import main; sys.exit(main())", *args]


def site_folder(root: Path, image_set: str, count: int = 2) -> Path:
    """A site's media folder: ``count`` 320x320 crops of one training image set (never Vid4)."""
    from PIL import Image

    sources = sorted((TRAIN / image_set).iterdir())[:count]
    folder = root / "images" / image_set
    folder.mkdir(parents=True)
    for i, src in enumerate(sources):
        with Image.open(src) as img:
            img.convert("RGB").crop((0, 0, 320, 320)).save(folder / f"{i}.png")
    return root


def smooth_folder(root: Path, count: int = 2) -> Path:
    """A site's media folder made in code: smooth colour gradients (easy content, low loss)."""
    from PIL import Image

    folder = root / "images" / "gradients"
    folder.mkdir(parents=True)
    yy, xx = np.mgrid[:320, :320] / 319.0
    for i in range(count):
        a, b = 0.3 + 0.3 * i, 0.8 - 0.3 * i
        img = np.stack([a * yy + (1 - a) * xx, b * xx, 0.5 + 0.4 * np.sin(3 * yy + i)], -1)
        Image.fromarray((img * 255).round().astype(np.uint8)).save(folder / f"{i}.png")
    return root


def flower_processes(root: Path) -> list[int]:
    """Live processes whose FLWR_HOME lies under ``root`` (every Flower process serve and join start)."""
    needle = f"FLWR_HOME={root}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            try:
                if needle in (entry / "environ").read_bytes():
                    if (entry / "stat").read_text().rsplit(")", 1)[1].split()[0] != "Z":
                        found.append(int(entry.name))
            except OSError:
                continue
    return found


def listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def wait_port(port: int, proc: subprocess.Popen, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not listening(port):
        assert proc.poll() is None, f"serve exited with {proc.returncode}: {proc.stderr.read() if proc.stderr else ''}"
        assert time.monotonic() < deadline, "serve never listened"
        time.sleep(0.3)


def site_groups(cache: Path) -> np.ndarray:
    """The sequences a joined site trained on (its cache, in the order node_data concatenates them)."""
    (npz,) = cache.glob("seq-*.npz")
    with np.load(npz) as z:
        return np.concatenate([z[k] for k in sorted(z.files)])


@pytest.mark.skipif(not TRAIN.is_dir(), reason="../shared/data/train not available")
def test_authorised_sites_train_securely_and_a_stranger_is_refused(tmp_path: Path):
    # Prepare: credentials for 3 sites (2 authorised) and one media folder per site
    import torch

    from training.fed_report import load_params
    from training.federated import FedConfig, client_round, initial_params
    from training.flower_secure import tolerance
    from training.partition import ClientData
    from training.strategies import build_strategy
    from training.strategies.fedvsr import anneal, fedvsr_mix
    from training.train import TrainConfig

    keys = tmp_path / "keys"
    assert subprocess.run(vsr_train("keys", "--out", str(keys), "--sites", "3", "--authorize", "2")).returncode == 0
    sites = {1: site_folder(tmp_path / "site-1", "urban100_half"), 2: smooth_folder(tmp_path / "site-2"),
             3: site_folder(tmp_path / "site-3", "urban100_half", 1)}
    out, port = tmp_path / "run", free_port("127.0.0.1")
    env = {**os.environ, "FLWR_TELEMETRY_ENABLED": "0", "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    procs: dict[str, subprocess.Popen] = {}

    def popen(name: str, args: list[str]) -> subprocess.Popen:
        procs[name] = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                                       cwd=tmp_path, start_new_session=True)
        return procs[name]

    # Execute
    try:
        serve = popen("serve", vsr_train("serve", "--secure-aggregation", "--authorized-keys",
                                         str(keys / "authorized.csv"), "--port", str(port), "--min-sites", "2",
                                         "--rounds", str(ROUNDS), "--strategy", "fedvsr", "--local-steps", "2", "--keep-rounds",
                                         "--out", str(out), *MODEL))
        wait_port(port, serve, 300)
        for k, folder in sites.items():
            popen(f"site-{k}", vsr_train("join", "--server", f"127.0.0.1:{port}", "--data", str(folder), "--key",
                                         str(keys / f"site-{k}.key"), "--cache-dir", str(tmp_path / f"cache-{k}"),
                                         "--site-id", str(k), "--threads", "1", "--reconnect-timeout", "5"))
        stranger_rc = procs["site-3"].wait(timeout=600)
        stranger_err = procs["site-3"].stderr.read()
        serve_rc = serve.wait(timeout=900)
        serve_out, serve_err = serve.stdout.read(), serve.stderr.read()
        site_rcs = [procs[f"site-{k}"].wait(timeout=120) for k in (1, 2)]
    finally:
        for p in procs.values():  # everything must have ended by itself; clean up regardless
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGTERM)
                try:
                    p.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    os.killpg(p.pid, signal.SIGKILL)
                    p.wait(timeout=30)
        time.sleep(1.0)
        leftovers = flower_processes(tmp_path)
        for pid in leftovers:
            os.kill(pid, signal.SIGKILL)
    # Assert: the stranger was refused on both sides, the two authorised sites trained every round
    assert stranger_rc == 11 and len(stranger_err.strip().splitlines()) == 1, stranger_err
    assert "refused this site" in stranger_err and "not authorised" in stranger_err
    assert "refused a site whose key is not in --authorized-keys" in serve_out
    assert serve_rc == 0, serve_err
    assert site_rcs == [0, 0]
    assert leftovers == [] and not listening(port)
    history = json.loads((out / "history.json").read_text())
    assert history["secure_aggregation"] is True and len(history["rounds"]) == ROUNDS
    for t, rec in enumerate(history["rounds"], 1):
        assert rec["secure_aggregation"] is True and rec["clients"] == [1, 2] and rec["dropped"] == []
        expected = fedvsr_mix(rec["client_losses"], anneal(t, ROUNDS)).weights
        assert rec["weights"] == pytest.approx(expected, abs=1e-5)
    assert history["rounds"][0]["beta"] > 0  # the two sites' losses differ enough for FedVSR to weigh them
    # Assert: every round's secure global model equals plain aggregation of the same local models
    cfg = TrainConfig(model="rvsr-tiny", scale=2, batch=2, patch=16, frames=3, lr=2e-3)
    fed = FedConfig(strategy="fedvsr", clients=2, rounds=ROUNDS, local_steps=2)
    clients = [ClientData(k, site_groups(tmp_path / f"cache-{k}"), ()) for k in (1, 2)]
    globals_ = [initial_params(cfg)] + [load_params(out / "rounds" / f"round-{t:03d}" / "global.safetensors")
                                        for t in range(1, ROUNDS + 1)]
    assert all(np.array_equal(globals_[-1][k], v) for k, v in load_params(out / "global.safetensors").items())
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the sites ran (--threads 1)
    try:
        for t in range(1, ROUNDS + 1):
            updates = [client_round(globals_[t - 1], c, cfg, fed, t) for c in clients]
            plain = build_strategy("fedvsr").aggregate(updates, t, ROUNDS)
            diff = max(float(np.abs(globals_[t][k].astype(np.float64) - plain.params[k]).max()) for k in plain.params)
            assert [round(u.loss, 6) for u in updates] == history["rounds"][t - 1]["client_losses"]
            assert 0 < diff <= tolerance(2), (t, diff)
    finally:
        torch.set_num_threads(threads)


def test_role_errors_are_one_line_with_their_exit_codes(tmp_path: Path):
    # Prepare
    keys = tmp_path / "keys"
    cases = [
        (["keys", "--out", str(keys), "--sites", "2", "--authorize", "3"], 2, "--authorize"),
        (["serve", "--out", str(tmp_path / "o"), "--authorized-keys", str(tmp_path / "none.csv"),
          "--tls-ca", "a", "--tls-cert", "b", "--tls-key", "c"], 2, "not found"),
        (["serve", "--out", str(tmp_path / "o"), "--authorized-keys", str(tmp_path / "none.csv")], 2, "needs TLS"),
        (["serve", "--out", str(tmp_path / "o"), "--secure-aggregation", "--strategy", "fedmedian"], 2, "weighted"),
        (["join", "--server", "127.0.0.1", "--data", str(tmp_path)], 2, "HOST:PORT"),
        (["join", "--server", "10.1.2.3:9093", "--data", str(tmp_path)], 2, "plain HTTP"),
        (["join", "--server", "127.0.0.1:9", "--data", str(tmp_path)], 3, "no training m"),
        (["join", "--server", "127.0.0.1:9", "--data", str(tmp_path), "--key", str(tmp_path / "k")], 3, "not found"),
    ]
    for argv, code, words in cases:
        # Execute
        res = subprocess.run(vsr_train(*argv), capture_output=True, text=True, cwd=tmp_path)
        # Assert
        assert res.returncode == code and words in res.stderr, (argv, res.returncode, res.stderr)
        assert len(res.stderr.strip().splitlines()) == 1, res.stderr


def test_authorized_csv_round_trip_and_bad_lines(tmp_path: Path):
    from engine.errors import UsageError
    from training.keys import make_keys, read_authorized

    make_keys(tmp_path, 3, 2)
    sites = read_authorized(tmp_path / "authorized.csv")
    assert [s.name for s in sites] == ["site-1", "site-2"]
    assert sites[0].public_key == (tmp_path / "site-1.pub").read_text().split(" site-1")[0]
    assert (tmp_path / "site-1.key").stat().st_mode & 0o077 == 0
    bad = tmp_path / "bad.csv"
    bad.write_text("site,public_key\nsite-1,ssh-rsa AAAA\n")
    with pytest.raises(UsageError, match="line 2"):
        read_authorized(bad)
