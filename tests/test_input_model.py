"""The default model follows the input: lossless input gets the BI-trained weights, lossy input the real-world ones."""

from __future__ import annotations

import json
from pathlib import Path

import av
import numpy as np
import pytest
from conftest import Clip, make_clip, pattern

from engine.cli import main
from engine.decode import Source, Window


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


X264_CRF12 = {"preset": "ultrafast", "crf": "12"}


def x265_clip(path: Path, crf: int) -> Path:
    """64x64 H.265 of the test pattern at ``crf`` (x265 wants at least 64 px a side)."""
    options = {"preset": "ultrafast", "crf": str(crf), "x265-params": "log-level=none"}
    return make_clip(path, Clip(codec="libx265", size=(64, 64), audio=False, options=options))


@pytest.mark.parametrize(("name", "make", "lossless"), [
    ("ffv1.mkv", lambda p: make_clip(p, Clip(codec="ffv1", audio=False, options={})), True),
    ("qp0.mkv", lambda p: make_clip(p, Clip(audio=False, options={"preset": "ultrafast", "qp": "0"})), True),
    ("crf28.mp4", lambda p: make_clip(p, Clip(audio=False, options={"preset": "ultrafast", "crf": "28"})), False),
    # a low CRF is not lossless (the file may be a re-encode of compressed video); 160x96: about 1 bit a pixel
    ("crf12.mp4", lambda p: make_clip(p, Clip(size=(160, 96), audio=False, options=X264_CRF12)), False),
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


@pytest.mark.parametrize(("name", "make", "crf"), [
    ("crf12.mp4", lambda p: make_clip(p, Clip(audio=False, options=X264_CRF12)), ("x264", 12)),
    ("crf20_x265.mkv", lambda p: x265_clip(p, 20), ("x265", 20)),  # x265 keeps its settings beside the headers
    ("abr.mp4", lambda p: make_clip(p, Clip(audio=False, options={"preset": "ultrafast", "b": "50k"})), None),
    ("ffv1.mkv", lambda p: make_clip(p, Clip(codec="ffv1", audio=False, options={})), None),
])
def test_rate_factor_is_read_from_the_encoder_settings(tmp_path, name, make, crf):
    # Prepare
    path = make(tmp_path / name)
    # Execute
    with Source(path) as src:
        info = src.info
    # Assert
    assert info.crf == crf


def test_rate_factor_is_read_at_the_file_start_and_after_a_seek(tmp_path):
    # Prepare: x264 writes its settings in an SEI of the first frame only; a segment seeks past it
    path = make_clip(tmp_path / "crf12.mp4", Clip(frames=48, audio=False, options={**X264_CRF12, "g": "12"}))
    with av.open(str(path)) as c:
        keys = [p.pts for p in c.demux(c.streams.video[0]) if p.is_keyframe and p.pts is not None]
    window = Window(warm_pts=keys[2], start_pts=keys[2], seek_pts=keys[2])  # the third keyframe, frame 24
    # Execute
    with Source(path) as whole, Source(path, window) as segment:
        infos = whole.info, segment.info
    # Assert: both read the rate factor, so a segment says what a single pass says
    assert [i.crf for i in infos] == [("x264", 12.0)] * 2


def run_cli(capsys, src: Path, out: Path, *extra: str) -> tuple[dict, str]:
    rc = main([str(src), "-o", str(out), "--backend", "onnxruntime", "--json", *extra])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    return json.loads(captured.out), captured.err


def test_default_model_follows_the_input(tmp_path, capsys):
    # Prepare: the same content lossless, through x264 at CRF 28 and at CRF 12
    clean = make_clip(tmp_path / "clean.mkv", Clip(codec="ffv1", frames=3, audio=False, options={}))
    lossy = make_clip(tmp_path / "lossy.mp4", Clip(frames=3, audio=False, options={"preset": "ultrafast", "crf": "28"}))
    near = make_clip(tmp_path / "near.mp4", Clip(size=(160, 96), frames=3, audio=False, options=X264_CRF12))
    # Execute
    s_clean, err_clean = run_cli(capsys, clean, tmp_path / "a.mkv")
    s_lossy, err_lossy = run_cli(capsys, lossy, tmp_path / "b.mkv")
    s_forced, err_forced = run_cli(capsys, clean, tmp_path / "c.mkv", "--model", "rvsr-s-real")
    s_x4, _ = run_cli(capsys, clean, tmp_path / "d.mkv", "--scale", "4")
    s_near, err_near = run_cli(capsys, near, tmp_path / "e.mkv")
    s_x3, err_x3 = run_cli(capsys, clean, tmp_path / "f.mkv", "--scale", "3")
    # Assert: the lossless input says which model it got and how to get the other one; the low-CRF input keeps the
    # real-world model and is told of the other
    assert s_clean["model"] == "rvsr-s-clean" and "lossless input (ffv1): model rvsr-s-clean" in err_clean
    assert "--model rvsr-s-real" in err_clean
    assert s_lossy["model"] == "rvsr-s-real" and "lossless" not in err_lossy
    assert s_forced["model"] == "rvsr-s-real" and "lossless" not in err_forced
    assert s_x4["model"] == "rvsr-m-clean"
    assert s_near["model"] == "rvsr-s-real" and "x264 CRF 12 input: model rvsr-s-real" in err_near
    assert "--model rvsr-s-clean is sharper" in err_near and "CRF" not in err_lossy
    assert s_x3["model"] == "rvsr-s-real" and "lossless" not in err_x3  # x3: one model for every input
