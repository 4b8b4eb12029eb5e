"""Hardware video (engine/hwvideo.py): probes that open the real thing, the encoder choice, CPU runs unchanged."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import probe

from engine.cli import main
from engine.device_frames import DevicePlanes, download, is_hw_frame
from engine.errors import BackendError
from engine.hwvideo import FAST_PRESET, Probe, choose_encoder, plan_video, probe_cuda, probe_encoder


def cuda_device() -> bool:
    """A CUDA device FFmpeg can open (what NVDEC needs)."""
    return probe_cuda().available


def run_cli(capsys, *args: str) -> tuple[int, dict | None, str]:
    rc = main([*map(str, args)])
    captured = capsys.readouterr()
    return rc, json.loads(captured.out) if rc == 0 and "--json" in args else None, captured.err


def frames_of(path: Path) -> np.ndarray:
    import av

    with av.open(str(path)) as c:
        return np.stack([f.to_ndarray(format="rgb24") for f in c.decode(video=0)])


# ---------------------------------------------------------------- probes


def test_probes_open_the_real_encoder_and_name_what_is_missing() -> None:
    # Execute
    x264, missing = probe_encoder("libx264"), probe_encoder("no_such_encoder")
    # Assert: a real encoder opens; an unknown one is refused with the reason
    assert x264 == Probe(True, "libx264 opened")
    assert not missing.available and missing.reason == "no_such_encoder is not in this FFmpeg build"


def test_without_a_gpu_the_probes_say_unavailable_with_a_reason() -> None:
    if cuda_device():
        pytest.skip("this machine has a CUDA device")
    # Execute
    cuda, nvenc = probe_cuda("h264"), probe_encoder("h264_nvenc")
    plan = plan_video("auto", "h264", None, "libx264", None)
    # Assert: one line each, saying why; the plan is today's CPU video
    assert not cuda.available and ("CUDA" in cuda.reason or "hardware decoding" in cuda.reason)
    assert not nvenc.available and "h264_nvenc" in nvenc.reason
    assert "\n" not in cuda.reason + nvenc.reason
    assert (plan.hwaccel, plan.decode, plan.encoder, plan.preset, plan.gpu) == (None, "cpu", "libx264", None, False)
    assert plan.notes == (f"decoder: CPU ({cuda.reason})", "encoder libx264 (no CUDA device)")
    with pytest.raises(BackendError, match="--hwaccel cuda: .*--hwaccel auto"):
        plan_video("cuda", "h264", None, "libx264", None)


# ---------------------------------------------------------------- the encoder choice (a decision table)


def opened(name: str) -> Probe:
    return Probe(True, f"{name} opened")


def refused(name: str) -> Probe:
    return Probe(False, f"{name} did not open (Function not implemented)")


@pytest.mark.parametrize("asked,default,preset,mode,gpu,probe_fn,want", [
    ("ffv1", "libx264", None, "auto", True, opened, ("ffv1", None, "(--codec)")),
    (None, "libx264", None, "none", True, opened, ("libx264", None, "(--hwaccel none)")),
    (None, "libx264", None, "auto", False, opened, ("libx264", None, "(no CUDA device)")),
    (None, "libvpx-vp9", None, "auto", True, opened, ("libvpx-vp9", None, "no NVENC encoder for libvpx-vp9")),
    (None, "libx264", None, "auto", True, opened, ("h264_nvenc", None, "NVENC: h264_nvenc opened")),
    (None, "libx265", None, "auto", True, opened, ("hevc_nvenc", None, "NVENC")),
    (None, "libx264", None, "auto", True, refused, ("libx264", FAST_PRESET["libx264"], "no NVENC on this GPU")),
    (None, "libx264", "slow", "auto", True, refused, ("libx264", None, "did not open")),
], ids=["asked", "none", "no gpu", "vp9", "nvenc", "hevc nvenc", "h100 no nvenc", "preset asked"])
def test_encoder_choice(asked, default, preset, mode, gpu, probe_fn, want) -> None:
    # Execute: the probe result is given, as a GPU without NVENC (H100/H200) cannot be made on this machine
    encoder, fast, why = choose_encoder(asked, default, preset, mode, gpu, probe=probe_fn)
    # Assert
    assert (encoder, fast) == want[:2] and want[2] in why


# ---------------------------------------------------------------- runs


def test_cpu_video_is_unchanged_and_the_summary_says_why(tmp_path, capsys, tiny_model, clip_mp4) -> None:
    # Execute: the default (auto) and hardware video off
    weights = tiny_model[2][0]
    rc_a, auto, err_a = run_cli(capsys, clip_mp4, "-o", tmp_path / "auto.mp4", "--weights", weights, "--json")
    rc_n, off, err_n = run_cli(capsys, clip_mp4, "-o", tmp_path / "off.mp4", "--weights", weights, "--json",
                               "--hwaccel", "none")
    # Assert: same encoder and frames; the JSON says which decoder/encoder and why
    assert rc_a == rc_n == 0, err_a + err_n
    assert off["decoder"] == "cpu" and off["codec"] == "libx264"
    assert off["video_notes"] == ["decoder: CPU (--hwaccel none)", "encoder libx264 (--hwaccel none)"]
    np.testing.assert_array_equal(frames_of(tmp_path / "auto.mp4"), frames_of(tmp_path / "off.mp4"))
    assert probe(tmp_path / "auto.mp4").times == probe(clip_mp4).times
    if not cuda_device():
        assert auto["decoder"] == "cpu" and auto["codec"] == "libx264" and not auto["video_gpu"]
        assert auto["video_notes"][1] == "encoder libx264 (no CUDA device)"
        assert "decoder" not in err_a  # a CPU machine prints what it always printed


def test_hwaccel_cuda_without_a_device_is_a_backend_error(tmp_path, capsys, tiny_model, clip_mp4) -> None:
    if cuda_device():
        pytest.skip("this machine has a CUDA device")
    # Execute
    out = tmp_path / "out.mp4"
    rc, _, err = run_cli(capsys, clip_mp4, "-o", out, "--weights", tiny_model[2][0], "--hwaccel", "cuda")
    # Assert
    assert rc == 7 and err.count("\n") == 1 and "--hwaccel cuda: " in err and not out.exists()


# ---------------------------------------------------------------- NVDEC frames read through DLPack


@pytest.mark.parametrize("layout,host,dtype", [("nv12", "yuv420p", "uint8"), ("p010le", "yuv420p10le", "uint16")])
def test_dlpack_planes_equal_the_preprocessor_planes(layout: str, host: str, dtype: str) -> None:
    pytest.importorskip("torch")
    import av

    from conftest import pattern

    from engine.decode import VideoInfo
    from engine.preprocess import Preprocessor, SceneCutDetector

    # Prepare: host frames in NVDEC's layouts take the same DLPack path as CUDA frames
    rgb = pattern(3, 64, 48)
    frame = av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(format=layout)
    info = VideoInfo(64, 48, 1, None, 0, 0, layout, 10 if dtype == "uint16" else 8, False, 1, 1, 1, 1, 0, "h264")
    planes = DevicePlanes((64, 48), dtype, SceneCutDetector().opts.thumb, device="cpu")
    # Execute
    got, want = planes(frame), Preprocessor(info, dtype)(frame)
    small = planes(frame.reformat(width=32, height=24))
    thumb = planes.thumbnail(got["y"])
    host_thumb = frame.reformat(width=32, height=18, format="gray").to_ndarray()
    # Assert: the same integer planes as the host path; stragglers resized; a comparable scene-cut thumbnail
    assert Preprocessor(info, dtype).format == host and not is_hw_frame(frame) and download(frame) is frame
    for k in ("y", "uv"):
        assert str(got[k].dtype) == f"torch.{dtype}" and got[k].is_contiguous()
        np.testing.assert_array_equal(got[k].numpy(), want[k])
        assert small[k].shape == got[k].shape
    assert thumb.shape == (18, 32) and np.abs(thumb - host_thumb).mean() < 1.0  # grey levels (0.4 measured)


# ---------------------------------------------------------------- on a GPU


def test_nvdec_decodes_the_frames_the_cpu_decodes(tmp_path, capsys, tiny_model, clip_mp4) -> None:
    if not cuda_device():
        pytest.skip(f"NVDEC not available: {probe_cuda().reason}")
    # Execute: lossless output, so only the decoder can differ
    common = ("--weights", tiny_model[2][0], "--json", "--codec", "ffv1", "--pix-fmt", "yuv420p")
    _, gpu, err = run_cli(capsys, clip_mp4, "-o", tmp_path / "gpu.mkv", *common, "--hwaccel", "cuda")
    _, cpu, _ = run_cli(capsys, clip_mp4, "-o", tmp_path / "cpu.mkv", *common, "--hwaccel", "none")
    # Assert
    assert gpu is not None, err
    assert gpu["decoder"] == "nvdec" and cpu["decoder"] == "cpu" and gpu["frames_in"] == cpu["frames_in"]
    assert "decoder: NVDEC" in err
    np.testing.assert_array_equal(frames_of(tmp_path / "gpu.mkv"), frames_of(tmp_path / "cpu.mkv"))


def test_nvenc_is_used_where_it_opens(tmp_path, capsys, tiny_model, clip_mp4) -> None:
    if not cuda_device():
        pytest.skip(f"NVENC needs a CUDA device: {probe_cuda().reason}")
    nvenc = probe_encoder("h264_nvenc")
    # Execute
    _, summary, err = run_cli(capsys, clip_mp4, "-o", tmp_path / "out.mp4", "--weights", tiny_model[2][0], "--json")
    # Assert: NVENC where it opens; else (H100/H200) the CPU encoder at a fast preset, said in the summary
    assert summary is not None, err
    if nvenc.available:
        assert summary["codec"] == "h264_nvenc"
    else:
        assert summary["codec"] == "libx264" and "no NVENC on this GPU" in summary["video_notes"][1]
        assert f"preset {FAST_PRESET['libx264']}" in summary["video_notes"][1]
    assert probe(tmp_path / "out.mp4").times == probe(clip_mp4).times


def test_nvdec_frames_reach_a_cuda_backend_without_a_host_copy(tmp_path, capsys, tiny_model, clip_mp4) -> None:
    torch = pytest.importorskip("torch")
    if not (cuda_device() and torch.cuda.is_available()):
        pytest.skip(f"NVDEC and torch CUDA needed: {probe_cuda().reason}; torch CUDA {torch.cuda.is_available()}")
    from engine.device_frames import device_frames_missing

    if device_frames_missing():
        pytest.skip(device_frames_missing())
    # Execute: the same safetensors weights on torch-cuda, NVDEC frames on the GPU, against the CPU path
    common = ("--weights", tiny_model[2][1], "--backend", "torch", "--json", "--codec", "ffv1", "--pix-fmt", "yuv420p")
    _, gpu, err = run_cli(capsys, clip_mp4, "-o", tmp_path / "gpu.mkv", *common, "--hwaccel", "cuda")
    _, cpu, _ = run_cli(capsys, clip_mp4, "-o", tmp_path / "cpu.mkv", *common, "--hwaccel", "none")
    # Assert
    assert gpu is not None, err
    assert any("on the GPU (DLPack, no host copy)" in n for n in gpu["video_notes"]), gpu["video_notes"]
    assert gpu["frames_in"] == cpu["frames_in"] and gpu["resets"] == cpu["resets"]
    diff = np.abs(frames_of(tmp_path / "gpu.mkv").astype(int) - frames_of(tmp_path / "cpu.mkv").astype(int))
    assert diff.max() <= 2  # one torch model on two devices: rounding of the integer planes may differ by a step
