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
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        nrm = rng.normal(size=(H, W, 3)).astype(np.float32)
        nrm[..., 2] = np.abs(nrm[..., 2])
        out.append({"color": rng.uniform(0, 1, (H, W, 3)).astype(np.float32),
                    "depth": rng.uniform(0.0, 1.0, (H, W)).astype(np.float32),
                    "motion": rng.normal(0, 1.5, (H, W, 2)).astype(np.float32),
                    "normals": nrm / np.linalg.norm(nrm, axis=-1, keepdims=True),
                    "albedo": rng.uniform(0, 1, (H, W, 3)).astype(np.float32),
                    "jitter": tuple(float(j) for j in rng.uniform(-0.5, 0.5, 2)), "reset": i == 0})
    return out


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
