"""The motion input of video graphs with an aligned history blend: the host estimate, the contract, the stepper."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from conftest import ROOT

from engine import colour
from engine.errors import ModelError
from engine.flow import MotionEstimator
from engine.graph import MOTION_UNIT, spec_from_metadata

SHIPPED = ROOT / "engine" / "weights" / "rvsr-s-real-x2.onnx"  # rvsr-s-real: the aligned blend (engine/models)


def _texture(h: int, w: int, seed: int = 0) -> np.ndarray:
    """Smooth uint8 grey texture: something optical flow can follow."""
    noise = np.random.default_rng(seed).random((h, w)).astype(np.float32)
    return np.clip(cv2.GaussianBlur(noise, (0, 0), 2.0) * 600 - 170, 16, 235).astype(np.uint8)


def _pan(tex: np.ndarray, t: int, step: int, w: int) -> np.ndarray:
    """Frame t of a pan to the left by ``step`` pixels a frame, as a (1, 1, H, w) plane."""
    return tex[None, None, :, t * step : t * step + w].copy()


def test_estimate_follows_a_pan_and_starts_from_zero() -> None:
    # Prepare: content moving 3 pixels to the left per frame; the same frames as 10-bit samples
    tex = _texture(64, 140)
    frames = [_pan(tex, t, 3, 96) for t in range(3)]
    # Execute
    est, deep = MotionEstimator(), MotionEstimator(bits=10)
    motion = [est(f, fresh=t == 0) for t, f in enumerate(frames)]
    deep_motion = [deep(f.astype(np.uint16) << 2, fresh=t == 0) for t, f in enumerate(frames)]
    after_cut = est(frames[0], fresh=True)
    # Assert: int32 in 1/64 pixel; each pixel was 3 pixels to the right before (x), no vertical motion (y)
    assert motion[1].dtype == np.int32 and motion[1].shape == (1, 2, 64, 96)
    inner = motion[2][0, :, 8:-8, 8:-8] / MOTION_UNIT
    assert abs(np.median(inner[0]) - 3.0) < 0.1 and abs(np.median(inner[1])) < 0.1
    assert not motion[0].any() and not after_cut.any()
    assert np.array_equal(deep_motion[2], motion[2])


def test_large_planes_get_their_flow_at_a_bounded_size() -> None:
    # Prepare: a 1280 x 720 pan of 6 pixels a frame (flow_factor 2: DIS runs at 640 x 360)
    from engine.flow import flow_factor

    tex = _texture(720, 1400, seed=2)
    frames = [_pan(tex, t, 6, 1280) for t in range(2)]
    est = MotionEstimator()
    # Execute
    est(frames[0], fresh=True)
    motion = est(frames[1])
    # Assert: full-size motion in full-size pixels
    assert flow_factor(720, 1280) == 2 and flow_factor(360, 640) == 1
    assert motion.shape == (1, 2, 720, 1280)
    inner = motion[0, :, 32:-32, 32:-32] / MOTION_UNIT
    assert abs(np.median(inner[0]) - 6.0) < 0.2 and abs(np.median(inner[1])) < 0.2


def test_frames_too_small_for_the_flow_get_zero_motion() -> None:
    # Prepare: 8x6 frames (DIS needs about 12 pixels a side), as a hostile or thumbnail-sized input has
    est = MotionEstimator()
    a, b = (np.random.default_rng(s).integers(0, 256, (1, 1, 6, 8), dtype=np.uint8) for s in (0, 1))
    # Execute
    est(a, fresh=True)
    motion = est(b)
    # Assert: no error; the blend falls back to the still history
    assert motion.shape == (1, 2, 6, 8) and not motion.any()


def test_motion_flag_is_checked_in_metadata(tmp_path) -> None:
    # Prepare: a video graph's metadata with a bad flag, and a G-buffer graph claiming the video motion input
    base = {"vsr.format": "2", "vsr.kind": "video", "vsr.scale": "2", "vsr.hidden": "[[4, 1]]",
            "vsr.frame_dtype": "uint8", "vsr.state_dtype": "float32"}
    # Execute / Assert
    assert spec_from_metadata({**base, "vsr.motion": "1"}, "m.onnx").frame_inputs[-1] == "motion"
    assert "motion" not in spec_from_metadata(base, "m.onnx").frame_inputs  # files from before the flag
    for bad in ({**base, "vsr.motion": "yes"}, {**base, "vsr.kind": "gbuffer", "vsr.frame_dtype": "float32",
                                                  "vsr.motion": "1"}):
        with pytest.raises(ModelError, match="vsr.motion"):
            spec_from_metadata(bad, "m.onnx")


def test_stepper_feeds_the_motion_and_drops_it_at_a_reset() -> None:
    # Prepare: the shipped x2 real-world graph; a pan of 2 LR pixels a frame as 4:2:0 planes
    pytest.importorskip("onnxruntime")
    from engine.backends.onnxruntime import OnnxRuntimeBackend
    from engine.step import Stepper, step

    backend = OnnxRuntimeBackend(SHIPPED, threads=1)
    assert backend.io_spec().motion
    consts = {"to_rgb": colour.to_rgb(1, colour.LIMITED, 8), "from_rgb": colour.from_rgb(1, colour.LIMITED, 8),
              "peak": colour.peak(8)}
    tex = _texture(48, 120, seed=1)
    frames = [{"y": _pan(tex, t, 2, 64), "uv": np.full((1, 2, 24, 32), 128, np.uint8)} for t in range(6)]
    zero = np.zeros((1, 2, 48, 64), np.int32)
    # Execute: the stepper (motion estimated) against the same graph given no motion; then a reset mid-stream
    stepper = Stepper(backend, consts)
    with_motion = [stepper(f)["y_out"][0, 0].astype(np.float32) for f in frames]
    state: dict = {}
    without = []
    for f in frames:
        out, state = step(backend, {**f, **consts, "motion": zero}, state)
        without.append(out["y_out"][0, 0].astype(np.float32))
    after_reset = stepper(frames[3], reset=True)["y_out"]
    fresh = Stepper(backend, consts)(frames[3])["y_out"]
    # Assert: along the motion (4 output pixels a frame) the estimated motion steadies the output; a reset starts
    # from zero state and zero motion, as a new stream does
    def change(outs: list[np.ndarray]) -> float:
        return float(np.mean([np.abs(b[:, 8:-16] - a[:, 12:-12]).mean() for a, b in zip(outs, outs[1:])]))

    assert change(with_motion) < 0.8 * change(without)
    assert np.array_equal(after_reset, fresh)


def test_pipeline_motion_from_the_decode_thread_equals_the_steppers(tmp_path, monkeypatch) -> None:
    # Prepare: the default x2 model for lossy input (rvsr-s-real, motion input) on a moving clip with a scene cut
    from conftest import Clip, make_clip

    import engine.pipeline
    import engine.step
    from engine.cli import main

    class Still:  # no motion at all: what the graph would do with the still history only
        def __init__(self, bits: int) -> None:
            pass

        def __call__(self, y, fresh=False):
            return np.zeros((1, 2, *y.shape[2:]), np.int32)

    src = make_clip(tmp_path / "cut.mp4", Clip(frames=16, cut_at=10, audio=False))
    outs = {}
    # Execute: the motion estimated on the pipeline's decode thread, then by the Stepper, then none
    for name, pipeline_estimator, stepper_estimator in (("decode", MotionEstimator, MotionEstimator),
                                                        ("stepper", lambda bits: None, MotionEstimator),
                                                        ("still", Still, Still)):
        monkeypatch.setattr(engine.pipeline, "MotionEstimator", pipeline_estimator)
        monkeypatch.setattr(engine.step, "MotionEstimator", stepper_estimator)
        out = tmp_path / f"{name}.mkv"
        assert main([str(src), "-o", str(out), "--codec", "ffv1", "--quiet"]) == 0
        outs[name] = [f.to_ndarray(format="rgb24") for f in _decode(out)]
    # Assert: the same frames, bit for bit, wherever the motion is estimated; and the motion is used
    assert len(outs["decode"]) == 16
    assert all(np.array_equal(a, b) for a, b in zip(outs["decode"], outs["stepper"]))
    assert not all(np.array_equal(a, b) for a, b in zip(outs["decode"], outs["still"]))


def _decode(path):
    import av

    with av.open(str(path)) as c:
        yield from c.decode(video=0)
