"""No dependency keeps telemetry by default: onnxruntime's event cache, Flower and Ray usage reports are off."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from conftest import ROOT

SESSION = "import onnxruntime as ort\nort.InferenceSession({path!r}, providers=['CPUExecutionProvider'])\n"
SHIPPED = ROOT / "engine" / "weights" / "rvsr-s-x2.onnx"


def _run(code: str, home: Path, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if k not in ("ORT_DISABLE_TELEMETRY", "FLWR_TELEMETRY_ENABLED",
                                                                "RAY_USAGE_STATS_ENABLED", "CI")}
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120,
                          env={**clean, "HOME": str(home), "XDG_CACHE_HOME": str(home / ".cache"), **env})


def test_onnxruntime_records_nothing_in_home(tmp_path):
    # Execute: our backend, and (as a control) onnxruntime alone in a fresh HOME
    ours = _run("from engine.backends.onnxruntime import OnnxRuntimeBackend\n"
                f"OnnxRuntimeBackend({str(SHIPPED)!r})\n", tmp_path / "ours")
    plain = _run(SESSION.format(path=str(SHIPPED)), tmp_path / "plain")
    # Assert
    assert ours.returncode == 0 and plain.returncode == 0, (ours.stderr, plain.stderr)
    assert not list((tmp_path / "ours").rglob("*")), list((tmp_path / "ours").rglob("*"))
    assert ours.stderr == ""
    import onnxruntime

    if tuple(int(v) for v in onnxruntime.__version__.split(".")[:2]) >= (1, 32):  # the builds that record
        assert (tmp_path / "plain" / ".cache" / "Microsoft" / "DeveloperTools").is_dir()


def test_opt_outs_are_set_and_a_users_choice_is_kept(tmp_path):
    # Execute
    code = "import os, engine\nprint([os.environ[k] for k in ('ORT_DISABLE_TELEMETRY', 'FLWR_TELEMETRY_ENABLED', " \
           "'RAY_USAGE_STATS_ENABLED', 'FLWR_DISABLE_UPDATE_CHECK')])"
    default = _run(code, tmp_path)
    chosen = _run(code, tmp_path, RAY_USAGE_STATS_ENABLED="1")
    # Assert
    assert default.stdout.strip() == "['1', '0', '0', '1']", default.stderr
    assert chosen.stdout.strip() == "['1', '0', '1', '1']", chosen.stderr


def test_flower_sends_no_event(tmp_path):
    # Execute: Flower's own event call, after our package set its opt-out
    code = ("import engine\nfrom flwr.supercore.telemetry import EventType, event\n"
            "print(event(EventType.PING).result(timeout=60))")
    res = _run(code, tmp_path, FLWR_HOME=str(tmp_path / "flwr"))
    # Assert
    assert res.stdout.strip() == "disabled", res.stderr
