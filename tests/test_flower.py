"""Flower: records and the ServerApp strategy in process, then a real TLS deployment on 127.0.0.1
(SuperLink + 2 SuperNodes + `flwr run`) checked against the in-process runner."""

from __future__ import annotations

import datetime
import ipaddress
import os
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("flwr", reason="flwr not installed (pip install 'flwr>=1.41,<1.43')")

from flwr.app import Message, Metadata, MetricRecord, RecordDict

from engine.errors import UsageError
from training.federated import FedConfig, initial_params, new_history, run_federated
from training.flower_app import VsrFlowerStrategy, from_record, to_record
from training.flower_run import Deployment, TlsFiles, check_deployment, launch
from training.partition import partition
from training.strategies import ClientUpdate, build_strategy
from training.train import TrainConfig

CFG = TrainConfig(model="rvsr-tiny", scale=2, batch=2, patch=16, frames=3, lr=2e-3)
TOLERANCE = 1e-6  # max |flower - in-process| per weight; both run the same float32 code, so ~exact


@pytest.fixture(autouse=True)
def quiet_flower(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("FLWR_TELEMETRY_ENABLED", "0")
    monkeypatch.setenv("FLWR_DISABLE_UPDATE_CHECK", "1")
    monkeypatch.setenv("FLWR_HOME", str(tmp_path / "flwr-home"))


def training_groups() -> dict[str, np.ndarray]:
    """Smooth gradients (easy) and noise (hard) so that FedVSR's weights are not uniform."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:32, :32] / 31.0
    smooth = np.stack([np.stack([np.stack([a * yy, b * xx, (1 - yy)], -1)] * 4)
                       for a, b in rng.uniform(0.2, 1.0, (4, 2))])
    return {"images/smooth": (smooth * 255).astype(np.uint8),
            "video/noise": rng.integers(0, 256, size=(4, 4, 32, 32, 3), dtype=np.uint8)}


def make_tls(folder: Path) -> TlsFiles:
    """A throwaway CA and a SuperLink certificate for 127.0.0.1 / localhost."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.timezone.utc)
    life = (now - datetime.timedelta(minutes=5), now + datetime.timedelta(hours=2))

    def cert(subject: str, key, issuer: str, signer, ca: bool) -> x509.Certificate:
        b = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
             .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)])).public_key(key.public_key())
             .serial_number(x509.random_serial_number()).not_valid_before(life[0]).not_valid_after(life[1])
             .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
        if not ca:
            b = (b.add_extension(x509.SubjectAlternativeName(
                    [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]), critical=False)
                 .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False))
        return b.sign(signer, hashes.SHA256())

    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    pem = serialization.Encoding.PEM
    files = TlsFiles(folder / "ca.pem", folder / "superlink.pem", folder / "superlink.key")
    folder.mkdir(parents=True, exist_ok=True)
    files.ca.write_bytes(cert("vsr-test-ca", ca_key, "vsr-test-ca", ca_key, True).public_bytes(pem))
    files.cert.write_bytes(cert("127.0.0.1", key, "vsr-test-ca", ca_key, False).public_bytes(pem))
    files.key.write_bytes(key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    return files


def processes_with_home(home: Path) -> list[int]:
    """Live processes whose environment has FLWR_HOME=home (every Flower process `launch` starts)."""
    needle = f"FLWR_HOME={home}".encode() + b"\0"
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            try:
                if needle in (entry / "environ").read_bytes() + b"\0":
                    state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
                    if state != "Z":
                        found.append(int(entry.name))
            except OSError:
                continue
    return found


def test_records_round_trip_exactly():
    params = initial_params(CFG)
    back = from_record(to_record(params))
    assert list(back) == list(params)
    assert all(np.array_equal(back[k], params[k]) and back[k].dtype == params[k].dtype for k in params)


def test_flower_strategy_aggregates_with_the_pure_function():
    # Prepare: two replies as a SuperNode would send them, in reverse client order
    start = initial_params(CFG)
    ups = [ClientUpdate(k, {n: a + k for n, a in start.items()}, 4 + k, loss) for k, loss in ((0, 0.02), (1, 0.3))]
    replies = [Message(RecordDict({"arrays": to_record(u.params), "metrics": MetricRecord(
        {"num-examples": u.num_examples, "loss": u.loss, "partition-id": u.client})}),
        metadata=Metadata(run_id=1, message_id=f"m{u.client}", src_node_id=100 + u.client, dst_node_id=0,
                          reply_to_message_id="i", group_id="1", created_at=0.0, ttl=60.0, message_type="train"))
        for u in reversed(ups)]
    fed = FedConfig(strategy="fedvsr", clients=2, rounds=4)
    pure = build_strategy("fedvsr")
    history = new_history(CFG, fed, "flower", [], "")
    strategy = VsrFlowerStrategy(pure, fed, history)
    # Execute
    arrays, metrics = strategy.aggregate_train(1, replies)
    # Assert
    expected = pure.aggregate(ups, 1, 4)
    got = from_record(arrays)
    assert all(np.array_equal(got[k], expected.params[k]) for k in got)
    assert metrics["beta"] == pytest.approx(expected.beta) and expected.beta > 0
    assert history["rounds"][0]["clients"] == [0, 1] and history["rounds"][0]["weights"][0] > 0.5


def test_plain_http_is_refused_off_loopback(tmp_path: Path):
    check_deployment(Deployment(host="127.0.0.1"))
    check_deployment(Deployment(host="::1"))
    with pytest.raises(UsageError, match="unencrypted"):
        check_deployment(Deployment(host="10.0.0.7"))
    with pytest.raises(UsageError, match="not found"):
        check_deployment(Deployment(host="10.0.0.7", tls=TlsFiles(tmp_path / "a", tmp_path / "b", tmp_path / "c")))


def test_tls_deployment_two_rounds_matches_in_process(tmp_path: Path):
    # Prepare
    from training.fed_report import load_params

    groups = training_groups()
    data = tmp_path / "seqs.npz"
    np.savez(data, **groups)
    fed = FedConfig(strategy="fedvsr", clients=2, rounds=2, partition="content", local_steps=2)
    dep = Deployment(host="127.0.0.1", tls=make_tls(tmp_path / "tls"), threads=1, startup_timeout=300, run_timeout=600)
    out = tmp_path / "flower-run"
    home = out / "flower" / "flwr-home"
    # Execute
    try:
        history = launch(CFG, fed, data, out, dep, "test", log=lambda s: None)
    finally:
        leftovers = processes_with_home(home)
        for pid in leftovers:  # launch must have stopped them all; clean up anyway so the run stays tidy
            os.kill(pid, 9)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the ClientApps ran (Deployment.threads)
    try:
        expected, expected_history = run_federated(partition(groups, 2, "content"), CFG, fed, None, log=lambda s: None)
    finally:
        torch.set_num_threads(threads)
    # Assert
    assert leftovers == []
    assert "https://127.0.0.1" in (out / "flower" / "superlink.log").read_text()
    got = load_params(out / "global.safetensors")
    start = initial_params(CFG)
    assert any(not np.array_equal(got[k], start[k]) for k in start)
    assert max(float(np.abs(got[k] - expected[k]).max()) for k in expected) <= TOLERANCE
    assert [r["client_losses"] for r in history["rounds"]] == [r["client_losses"] for r in expected_history["rounds"]]
    assert history["runner"] == "flower" and history["rounds"][0]["beta"] > 0
    assert (out / "history.png").exists()
