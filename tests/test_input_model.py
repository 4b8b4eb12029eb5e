"""The default model follows the input: lossless input gets the BI-trained weights, lossy input the real-world ones."""

from __future__ import annotations

import json
from pathlib import Path

import av
import numpy as np
import pytest
from conftest import Clip, make_clip, pattern

from engine.cli import main
from engine.decode import Source


def noisy_clip(path: Path, options: dict[str, str], frames: int = 12) -> Path:
    """64x48 4:4:4 H.264 of the test pattern with fresh noise (+-8 levels) every frame: about 14 bits per pixel at
    CRF 1, under 1 at CRF 35."""
    rng = np.random.default_rng(0)
    with av.open(str(path), "w") as out:
        v = out.add_stream("libx264", rate=24, options={"preset": "ultrafast", **options})
        v.width, v.height, v.pix_fmt = 64, 48, "yuv444p"
        for i in range(frames):
            img = np.clip(pattern(i, 64, 48).astype(int) + rng.integers(-8, 9, (48, 64, 3)), 0, 255).astype(np.uint8)
            out.mux(v.encode(av.VideoFrame.from_ndarray(img, format="rgb24")))
        out.mux(v.encode())
    return path


@pytest.mark.parametrize(("name", "make", "lossless"), [
    ("ffv1.mkv", lambda p: make_clip(p, Clip(codec="ffv1", audio=False, options={})), True),
    ("qp0.mkv", lambda p: make_clip(p, Clip(audio=False, options={"preset": "ultrafast", "qp": "0"})), True),
    ("crf28.mp4", lambda p: make_clip(p, Clip(audio=False, options={"preset": "ultrafast", "crf": "28"})), False),
    # 4:4:4 H.264 has the lossless profile either way: the bit rate decides
    ("crf1_444.mkv", lambda p: noisy_clip(p, {"crf": "1"}), True),
    ("crf35_444.mkv", lambda p: noisy_clip(p, {"crf": "35"}), False),
])
def test_lossless_is_read_from_codec_mode_and_bit_rate(tmp_path, name, make, lossless):
    # Prepare
    path = make(tmp_path / name)
    # Execute
    with Source(path) as src:
        info = src.info
    # Assert
    assert info.lossless is lossless, (info.codec, info.pix_fmt)


def run_cli(capsys, src: Path, out: Path, *extra: str) -> tuple[dict, str]:
    rc = main([str(src), "-o", str(out), "--backend", "onnxruntime", "--json", *extra])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    return json.loads(captured.out), captured.err


def test_default_model_follows_the_input(tmp_path, capsys):
    # Prepare: the same content lossless and through x264 at CRF 28
    clean = make_clip(tmp_path / "clean.mkv", Clip(codec="ffv1", frames=3, audio=False, options={}))
    lossy = make_clip(tmp_path / "lossy.mp4", Clip(frames=3, audio=False, options={"preset": "ultrafast", "crf": "28"}))
    # Execute
    s_clean, err_clean = run_cli(capsys, clean, tmp_path / "a.mkv")
    s_lossy, err_lossy = run_cli(capsys, lossy, tmp_path / "b.mkv")
    s_forced, err_forced = run_cli(capsys, clean, tmp_path / "c.mkv", "--model", "rvsr-s-real")
    s_x4, _ = run_cli(capsys, clean, tmp_path / "d.mkv", "--scale", "4")
    # Assert: the lossless input says which model it got and how to get the other one
    assert s_clean["model"] == "rvsr-s" and "lossless input (ffv1): model rvsr-s" in err_clean
    assert "--model rvsr-s-real" in err_clean
    assert s_lossy["model"] == "rvsr-s-real" and "lossless" not in err_lossy
    assert s_forced["model"] == "rvsr-s-real" and "lossless" not in err_forced
    assert s_x4["model"] == "rvsr-m"
