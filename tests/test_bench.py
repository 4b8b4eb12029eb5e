"""vsr-bench latency / --compare / pipeline / report: tiny rvsr-tiny runs on CPU; no timing assertions."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from benchmarks.cli import main
from engine.backends.base import Backend
from engine.graph import VIDEO, GraphSpec

FAST = ["--warmup", "1", "--steps", "3", "--threads", "1", "--no-bicubic"]


class CountingBackend(Backend):
    """Fake x2 backend: the hidden state counts the steps it went through; calls are logged by name."""

    def __init__(self, label: str, log: list[str]) -> None:
        self.name, self.log = label, log
        self.seen: list[int] = []  # hidden counter received at each call (-1 = fresh state)

    def io_spec(self) -> GraphSpec:
        return GraphSpec(kind=VIDEO, model="fake", scale=2, hidden=((1, 1),), weights="-")

    def run(self, feeds):
        self.log.append(self.name)
        n = int(feeds["hidden_in0"]) if "hidden_in0" in feeds else -1
        self.seen.append(n)
        return {"y_out": feeds["y"].repeat(2, 2).repeat(2, 3), "uv_out": feeds["uv"].repeat(2, 2).repeat(2, 3),
                "hidden_out0": n + 1}

    def close(self) -> None:
        pass


def test_latency_writes_json_md_png_and_lists_unavailable_backends(tiny_model, tmp_path: Path) -> None:
    # Prepare: ONNX only, so torch-cpu has no .safetensors sibling and must be reported, not dropped
    onnx = Path(shutil.copy(tiny_model[2][0], tmp_path / "tiny.onnx"))
    out = tmp_path / "lat.json"
    # Execute
    code = main(["latency", "--weights", str(onnx), "--backend", "onnxruntime-cpu,torch-cpu",
                 "--sizes", "16x16,16x24", *FAST, "--json", str(out)])
    # Assert
    assert code == 0
    report = json.loads(out.read_text())
    rows = report["results"]
    assert [(r["backend"], r["size"], r["out_size"]) for r in rows] == [
        ("onnxruntime-cpu", [16, 16], [32, 32]), ("onnxruntime-cpu", [16, 24], [32, 48])]
    for r in rows:
        assert len(r["steps_ms"]) == 3 and r["p50_ms"] <= r["p99_ms"] and r["fps"] > 0
        assert r["params"] > 0 and r["gmac"]["16x16"] > 0 and r["rss_peak_mb"] > 0 and r["gpu_peak_mb"] is None
    assert report["unavailable"] == [{"backend": "torch-cpu", "model": str(onnx),
                                      "reason": f"no tiny.safetensors beside --weights {onnx} (torch-cpu loads .safetensors)"}]
    assert {"cpu", "cpu_count", "platform"} <= set(report["machine"])
    md = out.with_suffix(".md").read_text()
    assert "| onnxruntime-cpu | rvsr-tiny x2 | 16x24 | 32x48 |" in md and "- torch-cpu (" in md
    assert out.with_suffix(".png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_timed_steps_carry_the_hidden_state() -> None:
    # Prepare
    from benchmarks.latency import frame_feeds, timed_steps

    backend = CountingBackend("a", [])
    # Execute
    times, timer = timed_steps(backend, frame_feeds(8, 8), warmup=2, steps=4)
    # Assert: one fresh start, then every step sees the previous one's state
    assert backend.seen == [-1, 0, 1, 2, 3, 4] and len(times) == 4 and timer == "perf_counter"


def test_compare_interleaves_abba_with_separate_states() -> None:
    # Prepare
    from benchmarks.compare import interleaved, ratio_stats
    from benchmarks.latency import frame_feeds

    log: list[str] = []
    a, b = CountingBackend("A", log), CountingBackend("B", log)
    # Execute
    ta, tb = interleaved(a, b, frame_feeds(8, 8), warmup=1, steps=4)
    stats = ratio_stats([2.0, 4.0, 6.0], [1.0, 2.0, 2.0])
    # Assert
    assert "".join(log) == "AB" + "AB" + "BA" + "AB" + "BA"
    assert a.seen == b.seen == [-1, 0, 1, 2, 3] and len(ta) == len(tb) == 4
    assert stats["ratio_median"] == 2.0 and stats["pairs"] == 3 and stats["ratio_p10"] <= 2.0 <= stats["ratio_p90"]


def test_compare_cli_reports_ratios(tiny_model, tmp_path: Path) -> None:
    # Prepare
    out = tmp_path / "cmp.json"
    # Execute
    code = main(["latency", "--weights", str(tiny_model[2][0]), "--sizes", "16x16", *FAST,
                 "--compare", "onnxruntime-cpu", "torch-cpu", "--json", str(out)])
    # Assert
    assert code == 0
    report = json.loads(out.read_text())
    assert report["kind"] == "compare" and report["a"].startswith("onnxruntime-cpu") and report["b"].startswith("torch-cpu")
    (row,) = report["results"]
    ratios = np.asarray(row["a_ms"]) / np.asarray(row["b_ms"])
    assert row["pairs"] == 3 and row["ratio_median"] == pytest.approx(float(np.median(ratios)))
    assert "A/B median" in out.with_suffix(".md").read_text()


def test_onnx_macs_match_count_macs(tiny_model) -> None:
    # Prepare
    from benchmarks.latency import conv_macs_per_pixel
    from engine.models import build_model, count_macs

    net = build_model("rvsr-tiny", 2)
    # Execute
    params, per_px = conv_macs_per_pixel(tiny_model[2][0])
    # Assert
    assert per_px * 18 * 32 == count_macs(net, 18, 32)
    assert params >= sum(p.numel() for p in net.parameters())  # the ONNX also holds the fixed bicubic kernel


def _fake_latency(backend: str, size: list[int], scale: int) -> dict:
    row = {"backend": backend, "model": "rvsr-s", "scale": scale, "size": size, "p50_ms": 10.0, "fps": 100.0}
    cpu = {"cpu": "Test CPU", "cpu_count": 4, "platform": "Linux"}
    machine = {**cpu, "gpu": "Test GPU"} if backend == "tensorrt" else cpu
    return {"kind": "latency", "created": "now", "machine": machine, "config": {"steps": 3, "warmup": 1},
            "results": [row, {**row, "backend": "torch-cpu", "p50_ms": 20.0}] if backend != "tensorrt" else [row],
            "bicubic": [{"size": size, "scale": scale, "ms": 2.0}], "unavailable": []}


def test_report_cpu_quotes_ratios_and_regenerates_its_section(tmp_path: Path) -> None:
    # Prepare
    src = tmp_path / "lat.json"
    src.write_text(json.dumps(_fake_latency("onnxruntime-cpu", [180, 320], 2)))
    out = tmp_path / "R.md"
    out.write_text("# Results\n\nhand-written intro\n")
    # Execute: twice, so the second run must replace the first section
    assert main(["report", str(src), "--out", str(out)]) == 0
    assert main(["report", str(src), "--out", str(out)]) == 0
    # Assert
    text = out.read_text()
    assert text.startswith("# Results\n\nhand-written intro\n") and text.count("### Latency") == 1
    assert "| rvsr-s x2 | 180x320 | 5.0x | 10.0x | 0.50 |" in text and "No GPU on this machine" in text
    assert "Machine: Test CPU, 4 cores" in text and "RDG-s 7.93 ms" in text


def test_report_gpu_lists_ours_beside_the_anchors(tmp_path: Path) -> None:
    # Prepare
    src = tmp_path / "lat.json"
    src.write_text(json.dumps(_fake_latency("tensorrt", [270, 480], 4)))
    # Execute
    assert main(["report", str(src), "--out", str(tmp_path / "R.md")]) == 0
    # Assert
    text = (tmp_path / "R.md").read_text()
    assert "| 270x480 x4 | RDG-s: 7.93 ms on RTX 3090" in text and "tensorrt rvsr-s: 10.00 ms | 100.0 |" in text
    assert "| 180x320 x4 | DAP-128: 38.00 ms on RTX 2080 Ti (DAP paper, 180x320 -> 720p) | not measured |" in text


def test_pipeline_reports_stages_waits_and_ratio(tiny_model, clip_mp4: Path, tmp_path: Path) -> None:
    # Prepare
    out = tmp_path / "pipe.json"
    # Execute
    code = main(["pipeline", str(clip_mp4), "--weights", str(tiny_model[2][0]), "--backend", "onnxruntime",
                 "--repeat", "1", "--threads", "1", "--json", str(out)])
    # Assert
    assert code == 0
    report = json.loads(out.read_text())
    assert report["full"]["frames"] == report["decode_encode_only"]["frames"] == 12
    assert set(report["full"]["stage_ms"]) == {"decode", "preprocess", "step", "postprocess", "encode"}
    assert set(report["full"]["queue_wait_ms"]) == {"decode", "step", "encode"} and report["fps_ratio"] > 0
    assert "decode+encode only" in out.with_suffix(".md").read_text()


@pytest.mark.parametrize(("argv", "code", "needle"), [
    (["latency", "--sizes", "10y3"], 2, "--sizes takes HxW"),
    (["latency", "--backend", "cuda"], 2, "--backend takes a comma list"),
    (["latency", "--sizes", "16x16", "--json", "/nonexistent/x.json"], 5, "does not exist"),
    (["latency", "--weights", "/nonexistent/w.onnx"], 6, "neither w.onnx nor w.safetensors"),
    (["pipeline", "/nonexistent.mp4"], 3, "not found"),
    (["latency", "--compare", "rvsr-s", "rvsr-m"], 2, "needs exactly one --backend"),
])
def test_errors_are_one_line(argv: list[str], code: int, needle: str, capsys: pytest.CaptureFixture[str]) -> None:
    # Execute
    rc = main(argv)
    # Assert
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == code and len(err) == 1 and err[0].startswith("vsr-bench: error: ") and needle in err[0]


def test_report_rejects_a_compare_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # Prepare
    src = tmp_path / "cmp.json"
    src.write_text(json.dumps({"kind": "compare"}))
    # Execute
    rc = main(["report", str(src), "--out", str(tmp_path / "R.md")])
    # Assert
    assert rc == 3 and "is not a `vsr-bench latency --json` report" in capsys.readouterr().err
