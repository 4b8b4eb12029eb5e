"""End-to-end behaviour of the streaming engine through `vsr-upscale` (in-process), on tiny clips made in code."""

from __future__ import annotations

import json
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from conftest import Clip, make_clip, probe

from engine.cli import main


def upscale(capsys, src: Path, out: Path, weights: Path, *extra: str) -> dict:
    """Run the CLI in-process with --json; returns the summary."""
    rc = main([str(src), "-o", str(out), "--weights", str(weights), "--quiet", "--json", *extra])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    return json.loads(captured.out)


def test_size_frames_timestamps_audio_metadata(tmp_path, capsys, tiny_model, clip_mp4):
    # Prepare
    out = tmp_path / "out.mp4"
    # Execute
    summary = upscale(capsys, clip_mp4, out, tiny_model[2][0])
    # Assert
    src, dst = probe(clip_mp4), probe(out)
    assert dst.size == (128, 96)
    assert summary["frames_in"] == summary["frames_out"] == len(src.times) == len(dst.times) == 12
    assert dst.times == src.times
    assert dst.packets["audio"] == src.packets["audio"]  # byte-identical, same times
    assert dst.metadata["title"] == src.metadata["title"] == "vsr test clip"
    assert summary["copied_streams"] == 1 and summary["resets"] == 0
    assert set(summary["stage_s"]) == {"decode", "preprocess", "step", "postprocess", "encode"}
    assert oct(out.stat().st_mode & 0o777) != "0o600"  # not left private like the temp file


def test_vfr_timestamps_stay_exact(tmp_path, capsys, tiny_model):
    # Prepare: irregular pts in ms
    pts = (0, 40, 80, 200, 230, 400, 410, 500)
    src = make_clip(tmp_path / "vfr.mkv", Clip(frames=len(pts), pts=pts, time_base=Fraction(1, 1000)))
    out = tmp_path / "vfr_x2.mkv"
    # Execute
    upscale(capsys, src, out, tiny_model[2][0])
    # Assert
    assert probe(out).times == probe(src).times == [Fraction(p, 1000) for p in pts]


def test_odd_size_x3_keeps_exact_size_with_444(tmp_path, capsys, tiny_model):
    # Prepare: 33x25 input -> 99x75 output, which 4:2:0 cannot hold
    src = make_clip(tmp_path / "odd.mkv", Clip(size=(33, 25), frames=6, pix_fmt="yuv444p", audio=False))
    out = tmp_path / "odd_x3.mp4"
    # Execute
    summary = upscale(capsys, src, out, tiny_model[3][0], "--scale", "3")
    # Assert
    p = probe(out)
    assert p.size == (99, 75) and summary["pix_fmt"] == "yuv444p" and len(p.times) == 6


def test_portrait_rotation_is_kept(tmp_path, capsys, tiny_model):
    # Prepare
    import av

    src = tmp_path / "rot.mp4"
    make_clip(src, Clip(size=(48, 64), frames=6, audio=False))
    rotated = tmp_path / "rot90.mp4"
    with av.open(str(src)) as i, av.open(str(rotated), "w") as o:
        if not hasattr(i.streams.video[0], "set_display_rotation"):
            pytest.skip("this PyAV cannot write a display matrix (VideoStream.set_display_rotation)")
        s = o.add_stream_from_template(i.streams.video[0])
        s.set_display_rotation(90)
        for pkt in i.demux(i.streams.video[0]):
            if pkt.size:
                pkt.stream = s
                o.mux(pkt)
    out = tmp_path / "rot_x2.mp4"
    # Execute
    upscale(capsys, rotated, out, tiny_model[2][0])
    # Assert
    p = probe(out)
    assert p.size == (96, 128) and p.rotation == probe(rotated).rotation == 90


def _mean_rgb(path: Path) -> np.ndarray:
    """Mean RGB of the first frame, read with the stream's tagged matrix and range (as the graphs convert)."""
    from engine import colour
    from engine.decode import FrameItem, Source
    from engine.preprocess import Preprocessor, matrix_of, range_of

    with Source(path) as s:
        f = next(i for i in s.items() if isinstance(i, FrameItem)).frame
        pre = Preprocessor(s.info, "uint16", out_sub=(1, 1))  # chroma at full size: means are comparable
        p = pre(f)
        m = colour.to_rgb(colour.RGB if s.info.is_rgb else matrix_of(s.info), range_of(s.info), pre.bits)
        yuv = np.concatenate([p["y"][0], p["uv"][0]]).reshape(3, -1).astype(np.float64)
        return (m[:, :3] @ yuv + m[:, 3:]).mean(axis=1)


@pytest.mark.parametrize("tags", [{"colorspace": 1, "color_range": 2, "color_primaries": 1, "color_trc": 1},
                                  {"colorspace": 5, "color_range": 1, "color_primaries": 5, "color_trc": 6}])
def test_colour_tags_and_matrix_are_honoured(tmp_path, capsys, tiny_model, tags):
    # Prepare
    src = make_clip(tmp_path / "c.mp4", Clip(frames=4, audio=False, colour=tags))
    out = tmp_path / "c_x2.mp4"
    # Execute
    upscale(capsys, src, out, tiny_model[2][0])
    # Assert: tags copied, and colours come back where they were (a wrong matrix/range shifts them)
    assert probe(out).colour == probe(src).colour == tags
    assert np.abs(_mean_rgb(out) - _mean_rgb(src)).max() < 0.03


def test_10bit_input_gives_10bit_output(tmp_path, capsys, tiny_model):
    # Prepare
    src = make_clip(tmp_path / "deep.mkv", Clip(frames=4, pix_fmt="yuv420p10le", audio=False))
    out = tmp_path / "deep_x2.mkv"
    # Execute
    summary = upscale(capsys, src, out, tiny_model[2][0])
    # Assert
    assert summary["pix_fmt"] == probe(out).pix_fmt == "yuv420p10le"


def test_fps_gives_constant_rate_in_sync_with_audio(tmp_path, capsys, tiny_model, clip_mp4):
    # Prepare: 12 frames at 24 fps = 0.5 s
    out = tmp_path / "fps30.mp4"
    # Execute
    summary = upscale(capsys, clip_mp4, out, tiny_model[2][0], "--fps", "30")
    # Assert: 15 frames, n/30 apart from the same start, audio untouched
    src, p = probe(clip_mp4), probe(out)
    assert summary["frames_in"] == 12 and summary["frames_out"] == len(p.times) == 15
    steps = np.diff([float(t) for t in p.times])
    assert np.allclose(steps, 1 / 30, atol=1e-3)
    assert p.times[0] == src.times[0]
    assert p.packets["audio"] == src.packets["audio"]


def test_scene_cut_resets_state(tmp_path, capsys, tiny_model):
    # Prepare
    src = make_clip(tmp_path / "cut.mp4", Clip(frames=16, cut_at=9, audio=False))
    out = tmp_path / "cut_x2.mp4"
    # Execute
    summary = upscale(capsys, src, out, tiny_model[2][0])
    # Assert
    assert summary["resets"] == 1 and summary["reset_frames"] == [9]


def test_subtitles_and_no_audio(tmp_path, capsys, tiny_model):
    # Prepare
    import av

    if not hasattr(av.container.OutputContainer, "add_mux_stream"):
        pytest.skip("this PyAV cannot create a subtitle stream from code (no OutputContainer.add_mux_stream)")
    src = make_clip(tmp_path / "subs.mkv", Clip(frames=12, subtitles=True))
    out = tmp_path / "subs_x2.mkv"
    # Execute
    upscale(capsys, src, out, tiny_model[2][0], "--no-audio")
    # Assert
    p, s = probe(out), probe(src)
    assert p.packets["subtitle"] == s.packets["subtitle"] and len(s.packets["subtitle"]) == 2
    assert "audio" not in p.packets and "audio" in s.packets


def test_lossless_ffv1_gbrp_matches_backend_exactly(tmp_path, capsys, tiny_model):
    # Prepare: RGB lossless input, so decoded frames are known exactly
    src = make_clip(tmp_path / "rgb.mkv", Clip(frames=5, codec="ffv1", pix_fmt="bgr0", audio=False, options={}))
    out = tmp_path / "rgb_x2.mkv"
    # Execute
    upscale(capsys, src, out, tiny_model[2][0], "--codec", "ffv1", "--pix-fmt", "gbrp")
    # Assert: each output frame is the backend's output, rounded to 8 bits
    import av

    from engine import colour
    from engine.backends.onnxruntime import OnnxRuntimeBackend
    from engine.step import Stepper

    with av.open(str(src)) as c:
        lrs = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    with av.open(str(out)) as c:
        got = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    rgb = {"to_rgb": colour.to_rgb(colour.RGB, colour.FULL, 8), "from_rgb": colour.from_rgb(colour.RGB, colour.FULL, 8),
           "peak": colour.peak(8)}
    with OnnxRuntimeBackend(tiny_model[2][0]) as backend:
        stepper = Stepper(backend, rgb)
        for lr, frame in zip(lrs, got, strict=True):
            planes = lr.transpose(2, 0, 1)[None]  # R, G, B -> the gbrp planes: y = G, uv = (B, R)
            out = stepper({"y": np.ascontiguousarray(planes[:, 1:2]), "uv": np.ascontiguousarray(planes[:, [2, 0]])})
            g, (b, r) = out["y_out"][0, 0], out["uv_out"][0]
            assert np.array_equal(np.stack([r, g, b], axis=-1), frame)  # integer planes: exactly what is encoded


def test_resolution_change_mid_stream_resets_and_keeps_output_size(tmp_path, capsys, tiny_model):
    # Prepare: an MPEG-TS whose H.264 switches from 64x48 to 80x60 after 6 frames (in-band SPS)
    import av

    from conftest import pattern

    src = tmp_path / "switch.ts"
    with av.open(str(src), "w") as out:
        v = out.add_stream("libx264", rate=24, options={"preset": "ultrafast"})
        v.width, v.height, v.pix_fmt = 64, 48, "yuv420p"
        second = av.CodecContext.create("libx264", "w")
        second.width, second.height, second.pix_fmt, second.time_base = 80, 60, "yuv420p", Fraction(1, 24)
        second.options = {"preset": "ultrafast"}  # no B-frames: dts stay increasing across the switch
        v.codec_context.time_base = Fraction(1, 24)
        for n, (ctx, w, h) in enumerate([(v.codec_context, 64, 48)] * 6 + [(second, 80, 60)] * 6):
            f = av.VideoFrame.from_ndarray(pattern(n, w, h), format="rgb24").reformat(format="yuv420p")
            f.pts, f.time_base = n, Fraction(1, 24)
            packets = ctx.encode(f) + (ctx.encode(None) if n in (5, 11) else [])
            for p in packets:
                p.stream, p.time_base = v, Fraction(1, 24)
                out.mux(p)
    out = tmp_path / "switch_x2.mp4"
    # Execute
    summary = upscale(capsys, src, out, tiny_model[2][0])
    # Assert: one reset at the switch, every frame at 2x the first size
    assert summary["reset_frames"] == [6] and summary["frames_out"] == 12
    assert probe(out).size == (128, 96)


def test_every_shipped_video_model_runs_without_torch(tmp_path):
    # Prepare: a fresh interpreter where torch, safetensors and onnx cannot be imported (a core install)
    import subprocess
    import sys

    from conftest import ROOT
    from engine.registry import RENDER_MODELS, SHIPPED

    src = make_clip(tmp_path / "tiny.mp4", Clip(size=(32, 24), frames=3, audio=False))
    models = [(m, s) for m, s in sorted(SHIPPED) if m not in RENDER_MODELS]
    code = f"""
import sys
sys.modules.update({{m: None for m in ("torch", "safetensors", "onnx")}})
from engine.cli import main
for model, scale in {models!r}:
    rc = main([{str(src)!r}, "-o", {str(tmp_path)!r} + f"/{{model}}-x{{scale}}.mkv", "--model", model,
               "--scale", str(scale), "--backend", "onnxruntime", "--quiet"])
    assert rc == 0, (model, scale, rc)
assert "torch" not in [m for m, v in sys.modules.items() if v is not None]
print("ok")
"""
    # Execute
    res = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    # Assert
    assert res.returncode == 0 and res.stdout.strip() == "ok", res.stderr[-2000:]
    for model, scale in models:
        assert probe(tmp_path / f"{model}-x{scale}.mkv").size == (32 * scale, 24 * scale)
