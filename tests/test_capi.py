"""C API (capi/): built with CMake; vsr_capi_run gives RenderUpscaler's frames; misuse gives a status and one line."""

from __future__ import annotations

import ctypes
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import numpy as np
import pytest
from conftest import gbuffer_frames

from engine.render_api import RenderUpscaler
from export.onnx import one_torch_thread

ROOT = Path(__file__).resolve().parents[1]
H, W = 12, 16  # render size of the test frames
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}  # one thread: quick and steady on a busy 2-core machine


@pytest.fixture(scope="module")
def build(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The CMake build of the repository, configured with this interpreter."""
    if shutil.which("cmake") is None:
        pytest.skip("cmake not installed")
    if not any(shutil.which(cc) for cc in (os.environ.get("CC", "cc"), "cc", "gcc", "clang")):
        pytest.skip("no C compiler (cc, gcc or clang)")
    out = tmp_path_factory.mktemp("capi-build")
    for cmd in (["cmake", "-S", str(ROOT), "-B", str(out), f"-DPython3_EXECUTABLE={sys.executable}",
                 "-DCMAKE_BUILD_TYPE=Release"], ["cmake", "--build", str(out), "--parallel", "2"]):
        res = subprocess.run(cmd, capture_output=True, text=True, check=False)
        assert res.returncode == 0, f"{' '.join(cmd)} failed:\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}"
    return out


@pytest.fixture(scope="module")
def weights(rdg_tiny_weights: Path) -> Path:
    return rdg_tiny_weights  # conftest.py


def frames(n: int = 3, seed: int = 0) -> list[dict]:
    """Random float32 frames in the documented conventions; the history is reset on frame 0."""
    return gbuffer_frames(H, W, n, seed)


def write_frames(path: Path, clip: list[dict]) -> None:
    """vsr_capi_run's input: per frame color, depth, motion, normals, albedo, then jitter_x, jitter_y, reset."""
    blocks = [np.concatenate([*(f[k].ravel() for k in ("color", "depth", "motion", "normals", "albedo")),
                              np.array([*f["jitter"], float(f["reset"])], np.float32)]) for f in clip]
    np.concatenate(blocks).astype(np.float32).tofile(path)


def run_runner(build: Path, *args: object) -> subprocess.CompletedProcess:
    return subprocess.run([str(build / "vsr_capi_run"), *map(str, args)], capture_output=True, text=True, env=ENV,
                          timeout=600, check=False)



# ---------------------------------------------------------------- the runner


def model_file(backend: str, weights: Path, folder: Path) -> Path:
    """The weights as the backend loads them: .safetensors for torch, exported once to .onnx for onnxruntime."""
    if backend == "torch":
        return weights
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    from engine.models import build_model, load_weights
    from export.onnx import export_onnx

    return export_onnx(load_weights(build_model("rdg-tiny", 2), weights).eval(), folder / "rdg-tiny-x2.onnx", "rdg-tiny")


@pytest.mark.parametrize("backend", ["torch", "onnxruntime"])
def test_runner_gives_the_python_api_frames(build: Path, weights: Path, tmp_path: Path, backend: str) -> None:
    # Prepare
    weights = model_file(backend, weights, tmp_path)
    clip = frames()
    write_frames(tmp_path / "in.f32", clip)
    with one_torch_thread(), RenderUpscaler(2, model="rdg-tiny", backend=backend, weights=weights) as up:
        expected = [up.upscale(f["color"], f["depth"], f["motion"], f["normals"], f["albedo"], jitter=f["jitter"],
                               reset=f["reset"]) for f in clip]
    # Execute
    res = run_runner(build, "--in", tmp_path / "in.f32", "--out", tmp_path / "out.f32", "--size", f"{W}x{H}",
                     "--frames", len(clip), "--scale", 2, "--model", "rdg-tiny", "--backend", backend, "--weights", weights)
    # Assert
    assert res.returncode == 0, res.stderr
    got = np.fromfile(tmp_path / "out.f32", np.float32).reshape(len(clip), 2 * H, 2 * W, 3)
    np.testing.assert_allclose(got, np.stack(expected), atol=1e-5)
    assert sum(line.startswith("frame ") and line.endswith(" ms") for line in res.stdout.splitlines()) == len(clip)


@pytest.mark.parametrize("args,code,message", [
    (["--scale", "5"], 2, "scale must be one of 2, 3, 4"),
    (["--scale", "3"], 6, "is a x2 model"),
    (["--weights", "missing.safetensors"], 6, "missing.safetensors not found"),
    (["--size", "16"], 2, "WIDTHxHEIGHT"),
], ids=["scale 5", "scale 3 weights x2", "missing weights", "bad size"])
def test_runner_errors_are_one_line(build: Path, weights: Path, args: list[str], code: int, message: str) -> None:
    # Execute
    res = run_runner(build, "--model", "rdg-tiny", "--weights", weights, "--frames", 1, *args)
    # Assert
    lines = res.stderr.strip().splitlines()
    assert res.returncode == code, res.stderr
    assert len(lines) == 1 and lines[0].startswith("vsr_capi_run: error: ") and message in lines[0]
    assert "Traceback" not in res.stdout + res.stderr


# ---------------------------------------------------------------- the library


def test_misuse_gives_a_status_and_one_line(build: Path, weights: Path) -> None:
    # Execute: NULL pointers, struct sizes, buffer sizes, channels, then Python's own checks (capi/tests/)
    res = subprocess.run([str(build / "vsr_capi_check"), "rdg-tiny", str(weights)], capture_output=True, text=True,
                         env=ENV, timeout=600, check=False)
    # Assert
    assert res.returncode == 0, res.stdout + res.stderr
    assert "FAIL" not in res.stdout and res.stdout.count("ok ") >= 10


class VsrConfig(ctypes.Structure):
    """capi/include/vsr_upscale.h's VsrConfig."""

    _fields_ = [("struct_size", ctypes.c_size_t), ("scale", ctypes.c_int), ("model", ctypes.c_char_p),
                ("backend", ctypes.c_char_p), ("weights", ctypes.c_char_p), ("device", ctypes.c_char_p),
                ("depth_inverted", ctypes.c_int), ("motion_scale", ctypes.c_float * 2), ("output_width", ctypes.c_int),
                ("output_height", ctypes.c_int), ("validate", ctypes.c_int)]


def test_a_host_running_python_lends_its_interpreter(build: Path, weights: Path) -> None:
    if not sysconfig.get_config_var("Py_ENABLE_SHARED"):
        pytest.skip("this Python is linked statically: the library would bring a second interpreter")
    # Prepare: this pytest process is the host, its interpreter already running
    lib = ctypes.CDLL(str(build / "libvsrupscale.so"))
    lib.vsr_last_error.restype = ctypes.c_char_p
    config, up = VsrConfig(), ctypes.c_void_p()
    lib.vsr_config_init(ctypes.byref(config))
    config.model = b"rdg-tiny"
    # Execute
    config.weights = b"missing.safetensors"
    missing = lib.vsr_create(ctypes.byref(config), ctypes.byref(up)), lib.vsr_last_error().decode()
    config.weights = str(weights).encode()
    created = lib.vsr_create(ctypes.byref(config), ctypes.byref(up))
    destroyed = lib.vsr_destroy(up)
    # Assert
    assert config.struct_size == ctypes.sizeof(VsrConfig)
    assert missing == (2, "weights file missing.safetensors not found")  # VSR_ERROR_MODEL
    assert created == 0 and up.value and destroyed == 0


class VsrFrame(ctypes.Structure):
    """capi/include/vsr_upscale.h's VsrFrame."""

    _fields_ = [("struct_size", ctypes.c_size_t), ("width", ctypes.c_int), ("height", ctypes.c_int),
                ("color", ctypes.c_void_p), ("color_channels", ctypes.c_int), ("depth", ctypes.c_void_p),
                ("motion", ctypes.c_void_p), ("normals", ctypes.c_void_p), ("normals_channels", ctypes.c_int),
                ("albedo", ctypes.c_void_p), ("albedo_channels", ctypes.c_int), ("jitter_x", ctypes.c_float),
                ("jitter_y", ctypes.c_float), ("reset", ctypes.c_int), ("exposure", ctypes.c_float)]


def open_library(build: Path, weights: Path, device: bytes | None = None) -> tuple[ctypes.CDLL, ctypes.c_void_p]:
    """The library loaded into this (host) interpreter and an upscaler of the rdg-tiny test weights."""
    if not sysconfig.get_config_var("Py_ENABLE_SHARED"):
        pytest.skip("this Python is linked statically: the library would bring a second interpreter")
    lib = ctypes.CDLL(str(build / "libvsrupscale.so"))
    lib.vsr_last_error.restype = ctypes.c_char_p
    lib.vsr_upscale_cuda.argtypes = [ctypes.c_void_p, ctypes.POINTER(VsrFrame), ctypes.c_void_p, ctypes.c_size_t,
                                     ctypes.c_void_p]
    config, up = VsrConfig(), ctypes.c_void_p()
    lib.vsr_config_init(ctypes.byref(config))
    config.model, config.weights, config.backend, config.device = b"rdg-tiny", str(weights).encode(), b"torch", device
    assert lib.vsr_create(ctypes.byref(config), ctypes.byref(up)) == 0, lib.vsr_last_error()
    return lib, up


def frame_of(f: dict[str, object], pointer) -> VsrFrame:
    """A VsrFrame over the buffers of ``f`` (numpy arrays or CUDA tensors, read through ``pointer``)."""
    fr = VsrFrame(struct_size=ctypes.sizeof(VsrFrame), width=W, height=H, color_channels=3, normals_channels=3,
                  albedo_channels=3, jitter_x=f["jitter"][0], jitter_y=f["jitter"][1], reset=int(f["reset"]))
    for k in ("color", "depth", "motion", "normals", "albedo"):
        setattr(fr, k, pointer(f[k]))
    return fr


def test_the_device_entry_without_cuda_says_so(build: Path, weights: Path) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA device")
    # Prepare
    lib, up = open_library(build, weights)
    f, out = frames(1)[0], np.zeros((2 * H, 2 * W, 3), np.float32)
    # Execute: host buffers stand in for device ones: the call must be refused before any is read
    status = lib.vsr_upscale_cuda(up, frame_of(f, lambda a: a.ctypes.data), out.ctypes.data, out.size, None)
    message = lib.vsr_last_error().decode()
    # Assert: VSR_ERROR_NO_CUDA (6), one line saying what is missing and what to use instead
    assert status == 6 and "needs a CUDA device" in message and "vsr_upscale" in message and "\n" not in message
    assert not out.any()
    assert lib.vsr_destroy(up) == 0


def test_the_device_entry_gives_the_host_entry_frames_on_cuda(build: Path, weights: Path) -> None:
    import torch

    if not torch.cuda.is_available():
        pytest.skip(f"no CUDA device (torch {torch.__version__})")
    # Prepare: the same clip through the host entry and, as CUDA tensors on a stream of ours, the device entry
    clip = frames()
    host_lib, host_up = open_library(build, weights, device=b"cuda")
    expected = []
    for f in clip:
        out = np.zeros((2 * H, 2 * W, 3), np.float32)
        assert host_lib.vsr_upscale(host_up, ctypes.byref(frame_of(f, lambda a: a.ctypes.data)),
                                    out.ctypes.data_as(ctypes.POINTER(ctypes.c_float)), out.size) == 0
        expected.append(out)
    lib, up = open_library(build, weights, device=b"cuda")
    stream = torch.cuda.Stream()
    dev = [{k: torch.from_numpy(v).cuda() if isinstance(v, np.ndarray) else v for k, v in f.items()} for f in clip]
    outs = [torch.zeros((2 * H, 2 * W, 3), device="cuda") for _ in clip]
    torch.cuda.synchronize()
    # Execute
    status = [lib.vsr_upscale_cuda(up, ctypes.byref(frame_of(f, lambda t: t.data_ptr())), o.data_ptr(), o.numel(),
                                   stream.cuda_stream) for f, o in zip(dev, outs)]
    stream.synchronize()
    # Assert
    assert status == [0] * len(clip), lib.vsr_last_error()
    for e, o in zip(expected, outs):
        np.testing.assert_allclose(o.cpu().numpy(), e, atol=1e-4)
    assert lib.vsr_destroy(up) == 0 and host_lib.vsr_destroy(host_up) == 0
