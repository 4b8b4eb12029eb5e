"""Tests of the quality harness (benchmarks/quality.py, methods.py, quality_report.py, cli.py) on tiny clips made here."""

from __future__ import annotations

import json
import math
from pathlib import Path

import av
import numpy as np
import pytest
import torch

from benchmarks.cli import main
from benchmarks.methods import bicubic_factory, load_model, load_torch_model, torch_factory
from benchmarks.metrics import frame_metrics
from benchmarks.quality import evaluate, read_frames, to_uint8
from training.validate import validate
from engine.models import build_model
from training.degrade import bicubic_down, imresize

FRAMES, H, W = 5, 48, 64  # tiny clip: frames, height, width


def moving_texture(seed: int) -> list[np.ndarray]:
    """FRAMES uint8 RGB frames of a random texture panning diagonally (1-2 px per frame)."""
    rng = np.random.default_rng(seed)
    big = rng.integers(0, 256, (H // 4 + 8, W // 4 + 8, 3)).astype(np.float64)
    big = np.kron(big, np.ones((4, 4, 1)))  # blocky, so flow has edges to follow
    return [np.ascontiguousarray(big[2 * t : 2 * t + H, t : t + W]).astype(np.uint8) for t in range(FRAMES)]


def write_ffv1(path: Path, frames: list[np.ndarray]) -> None:
    """Lossless FFV1 RGB mkv of ``frames``."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream("ffv1", rate=25)
        stream.width, stream.height, stream.pix_fmt = W, H, "bgr0"
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("clips")
    for i, name in enumerate(("alpha", "beta")):
        write_ffv1(root / f"{name}.mkv", moving_texture(i))
    (root / "notes.txt").write_text("not a clip")
    return root


@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from safetensors.torch import save_file

    torch.manual_seed(0)
    model = build_model("rvsr-tiny", 2)
    path = tmp_path_factory.mktemp("weights") / "tiny.safetensors"
    save_file(model.state_dict(), str(path), metadata={"model": "rvsr-tiny", "scale": "2"})
    return path


def test_clips_decode_losslessly(dataset: Path) -> None:
    frames = list(read_frames(dataset / "alpha.mkv"))
    assert len(frames) == FRAMES
    assert all(np.array_equal(a, b) for a, b in zip(frames, moving_texture(0)))


def test_cli_end_to_end_writes_json_md_png(dataset: Path, weights: Path, tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    # Prepare
    out = tmp_path / "q.json"
    # Execute: the clean protocol and one codec round trip in one run
    rc = main(["quality", "--dataset", str(dataset), "--scale", "2", "--weights", str(weights), "--json", str(out),
               "--degrade", "bi,x264:40", "--compare", str(weights)])
    # Assert
    assert rc == 0
    report = json.loads(out.read_text())
    assert {"dataset", "scale", "model", "weights_sha256", "machine", "runs", "degrades"} <= set(report)
    assert report["model"] == "rvsr-tiny" and report["scale"] == 2 and len(report["weights_sha256"]) == 16
    assert report["degrades"] == ["bi", "x264:40"]
    bi, x264 = report["runs"]["bi"], report["runs"]["x264:40"]
    assert list(bi["clips"]) == ["alpha", "beta"]
    for scores in [c["methods"] for c in bi["clips"].values()] + [bi["mean"]]:
        assert list(scores) == ["bicubic", "lanczos", "framewise", "recurrent", "recurrent:tiny"]
        for s in scores.values():
            assert {"y_psnr", "y_ssim", "rgb_psnr", "warp_error", "static_flicker", "reset_jump", "frames",
                    "seconds"} <= set(s)
    bic = bi["mean"]["bicubic"]
    assert all(math.isfinite(bic[k]) for k in ("y_psnr", "y_ssim", "rgb_psnr", "warp_error"))
    assert 0 < bic["y_ssim"] < 1
    assert x264["mean"]["bicubic"]["y_psnr"] < bic["y_psnr"] - 0.5  # CRF 40 loses detail on random texture
    assert bi["clips"]["alpha"]["methods"]["recurrent"]["frames"] == FRAMES
    assert bi["mean"]["recurrent"]["frames"] == 2 * FRAMES
    assert bi["mean"]["recurrent:tiny"]["y_psnr"] == bi["mean"]["recurrent"]["y_psnr"]  # same weights, same run
    md = out.with_suffix(".md").read_text()
    assert "LR: x264:40" in md and "| **mean** | recurrent |" in md and md in capsys.readouterr().out
    png = tmp_path / "q_crops.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_bad_degrade_is_a_usage_error(dataset: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # Execute
    rc = main(["quality", "--dataset", str(dataset), "--scale", "2", "--methods", "bicubic", "--degrade", "x264:99"])
    # Assert
    assert rc == 2 and "x264:99" in capsys.readouterr().err


def test_bicubic_scores_follow_the_protocol(dataset: Path) -> None:
    # Prepare: the protocol written out by hand for clip beta
    gts = moving_texture(1)
    by_hand = [frame_metrics(imresize(bicubic_down(gt, 2), (H, W)), gt)["y_psnr"] for gt in gts]
    # Execute
    res = evaluate({"bicubic": bicubic_factory(2)}, dataset, 2, clips=["beta"], warp=False)
    # Assert
    assert res["clips"]["beta"]["methods"]["bicubic"]["y_psnr"] == pytest.approx(np.mean(by_hand))
    assert res["mean"]["bicubic"]["warp_error"] is None


def test_frames_are_cropped_to_the_scale_and_outputs_quantised_by_rounding(dataset: Path) -> None:
    # Execute: 64x48 does not divide by 3 horizontally
    res = evaluate({"bicubic": bicubic_factory(3)}, dataset, 3, max_frames=1, warp=False)
    # Assert
    assert (res["clips"]["alpha"]["width"], res["clips"]["alpha"]["height"]) == (63, 48)
    got = to_uint8(np.array([[[-0.1, 0.6 / 255, 1.4 / 255, 1.2]]], np.float32))
    np.testing.assert_array_equal(got, [[[0, 1, 1, 255]]])


def test_framewise_resets_hidden_state_and_recurrent_carries_it() -> None:
    # Prepare
    torch.manual_seed(0)
    model = build_model("rvsr-tiny", 2).eval()
    frames = [bicubic_down(f, 2) for f in moving_texture(0)[:2]]
    recurrent, framewise = torch_factory(model, True)(), torch_factory(model, False)()
    # Execute
    rec = [recurrent(f) for f in frames]
    fbf = [framewise(f) for f in frames]
    # Assert: same first frame; different second frame; frame-by-frame equals a fresh stepper
    np.testing.assert_array_equal(rec[0], fbf[0])
    assert not np.array_equal(rec[1], fbf[1])
    np.testing.assert_array_equal(fbf[1], torch_factory(model, True)()(frames[1]))


def test_training_validation_matches_recurrent_run_and_restores_state(dataset: Path) -> None:
    # Prepare
    torch.manual_seed(0)
    model = build_model("rvsr-tiny", 2).train()
    threads = torch.get_num_threads()
    full = evaluate({"recurrent": torch_factory(model.eval())}, dataset, 2, max_frames=3, warp=False)
    model.train()
    # Execute
    fast = validate(model, dataset, 2, max_frames=3)
    # Assert
    assert fast["y_psnr"] == pytest.approx(full["mean"]["recurrent"]["y_psnr"])
    assert fast["y_ssim"] == pytest.approx(full["mean"]["recurrent"]["y_ssim"])
    assert fast["frames"] == 6 and set(fast["clips"]) == {"alpha", "beta"}
    assert model.training and torch.get_num_threads() == threads


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # the legacy TorchScript exporter
def test_onnx_weights_match_torch(dataset: Path, weights: Path, tmp_path: Path) -> None:
    # Prepare: export the same weights with the one exporter (integer RGB planes in and out)
    pytest.importorskip("onnx")
    from export.onnx import export_onnx

    _, model = load_torch_model(weights, 2)
    path = export_onnx(model, tmp_path / "tiny.onnx", "rvsr-tiny")
    methods = {"recurrent": load_model(2, weights=path).make(True)}
    # Execute
    got = evaluate(methods, dataset, 2, warp=False)
    want = evaluate({"recurrent": torch_factory(model)}, dataset, 2, warp=False)
    # Assert: float32 in both; only rare rounding flips after quantisation
    assert got["mean"]["recurrent"]["y_psnr"] == pytest.approx(want["mean"]["recurrent"]["y_psnr"], abs=0.01)


@pytest.mark.parametrize(
    ("extra", "code", "needle"),
    [
        (["--dataset", "/nonexistent/vid4"], 3, "not found"),
        (["--model", "rvsr-nope"], 6, "unknown model"),
        (["--scale", "5"], 2, "--scale"),
        (["--scale", "4"], 6, "x2 model"),
        (["--methods", "bicubic,magic"], 2, "--methods"),
    ],
)
def test_cli_errors_are_one_line(dataset: Path, weights: Path, extra: list[str], code: int, needle: str,
                                 capsys: pytest.CaptureFixture[str]) -> None:
    # Prepare: defaults overridden by ``extra`` (argparse keeps the last value)
    args = ["quality", "--dataset", str(dataset), "--scale", "2", "--max-frames", "1"]
    if "--model" not in extra:
        args += ["--weights", str(weights)]
    # Execute
    rc = main(args + extra)
    # Assert
    err = capsys.readouterr().err
    assert rc == code
    assert err.startswith("vsr-bench: error: ") and needle in err and err.count("\n") == 1


def test_cli_empty_dataset(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "readme.txt").write_text("no videos here")
    rc = main(["quality", "--dataset", str(tmp_path), "--scale", "2", "--methods", "bicubic"])
    assert rc == 3 and "no videos" in capsys.readouterr().err


def test_default_model_is_the_one_vsr_upscale_picks_per_lr_kind(dataset: Path, tmp_path: Path) -> None:
    # Prepare: no --model/--weights, clean and compressed LR
    out = tmp_path / "d.json"
    # Execute
    rc = main(["quality", "--dataset", str(dataset), "--scale", "2", "--methods", "recurrent", "--max-frames", "2",
               "--degrade", "bi,x264:12,x264:40", "--json", str(out)])
    # Assert: clean LR ran the BI-trained weights, compressed LR (even at a low CRF) the real-world ones, all named
    assert rc == 0
    report = json.loads(out.read_text())
    models = {name: run["model"] for name, run in report["runs"].items()}
    assert models == {"bi": "rvsr-s-clean", "x264:12": "rvsr-s-real", "x264:40": "rvsr-s-real"}
    assert report["model"] == "rvsr-s-clean, rvsr-s-real"
    assert "LR: bi (model rvsr-s-clean)" in out.with_suffix(".md").read_text()
