"""TensorRT export: profiles, cache keys, stale/foreign engines, TensorRT-RTX CPU AOT builds, CLI, GPU parity."""

from __future__ import annotations

import dataclasses
import importlib.util
import json

import numpy as np
import pytest

from engine.errors import BackendError, UsageError
from engine.backends.trt_cache import (EngineKey, Profile, mismatch, parse_profile, parse_target, profile_for, read_key,
                          write_sidecar)

HAS_RTX = importlib.util.find_spec("tensorrt_rtx") is not None
needs_rtx = pytest.mark.skipif(not HAS_RTX, reason="tensorrt_rtx not importable (pip install tensorrt-rtx)")
TINY = "36x64"  # static LR profile that keeps an rvsr-tiny AOT build under a second
KEY = EngineKey("ab" * 32, "36x64", "fp32", "tensorrt_rtx", "1.7.1.116", "", ("sm89",))


# ---------------------------------------------------------------- profiles, targets, keys (always run)

@pytest.mark.parametrize("text,want", [
    ("720p", Profile((720, 1280), (720, 1280), (720, 1280))),
    ("dynamic", Profile((16, 16), (720, 1280), (1080, 1920))),
    ("36x64", Profile((36, 64), (36, 64), (36, 64))),
    ("32x32:540p:1080x1920", Profile((32, 32), (540, 960), (1080, 1920))),
])
def test_parse_profile(text, want):
    # Execute / Assert
    assert parse_profile(text) == want
    assert parse_profile(want.slug) == want  # the slug in file names parses back


@pytest.mark.parametrize("text", ["4k", "720", "0x64", "64x64:32x32:128x128", "1x1:2x2"])
def test_parse_profile_rejects(text):
    with pytest.raises(UsageError):
        parse_profile(text)


def test_profile_for_picks_static_preset_else_dynamic():
    # Execute / Assert
    assert profile_for((1080, 1920)).static and profile_for((1080, 1920)).slug == "1080x1920"
    assert not profile_for((700, 1000)).static and profile_for((700, 1000)).accepts((700, 1000))
    assert Profile((16, 16), (720, 1280), (1080, 1920)).shapes(3, 2)[2] == (1, 3, 2160, 3840)


@pytest.mark.parametrize("text,want", [("sm89", "sm89"), ("SM_120", "sm120"), ("8.6", "sm86"), ("12.0", "sm120")])
def test_parse_target(text, want):
    assert parse_target(text) == want


def test_every_key_field_changes_the_engine_name():
    # Prepare
    changes = {"onnx_sha256": "cd" * 32, "profile": "dynamic", "precision": "fp16", "flavour": "tensorrt",
               "trt_version": "10.9.0", "gpu_name": "NVIDIA GeForce RTX 4090", "targets": ("sm86",)}
    # Execute
    names = {KEY.filename("m")} | {dataclasses.replace(KEY, **{f: v}).filename("m") for f, v in changes.items()}
    # Assert
    assert set(changes) == {f.name for f in dataclasses.fields(EngineKey)}  # a new field needs a case here
    assert len(names) == len(changes) + 1


def test_mismatch_names_what_differs():
    # Prepare: this machine has TensorRT 10.9 on an RTX 4090 (sm89)
    want = EngineKey("ab" * 32, "36x64", "fp32", "tensorrt", "10.9.0", "NVIDIA GeForce RTX 4090", ("sm89",))
    # Execute / Assert
    assert mismatch(want, want) is None
    old = dataclasses.replace(want, trt_version="10.3.0", gpu_name="NVIDIA GeForce RTX 3090", targets=("sm86",))
    reason = mismatch(old, want)
    assert "10.3.0" in reason and "RTX 3090" in reason and "sm86" in reason
    aot = dataclasses.replace(want, flavour="tensorrt_rtx", gpu_name="", targets=("sm86", "sm89"))
    assert mismatch(aot, dataclasses.replace(want, flavour="tensorrt_rtx")) is None  # AOT engine: any sm89 GPU


def test_foreign_and_modified_engines_are_detected(tmp_path):
    # Prepare
    engine = tmp_path / "m.engine"
    engine.write_bytes(b"\0" * 128)
    # Execute / Assert: no sidecar -> foreign
    with pytest.raises(BackendError, match="foreign engine"):
        read_key(engine)
    write_sidecar(engine, KEY, 0.5)
    assert read_key(engine) == KEY
    engine.write_bytes(b"\1" * 128)
    with pytest.raises(BackendError, match="changed since it was built"):
        read_key(engine)
    doc = json.loads((tmp_path / "m.engine.json").read_text())
    (tmp_path / "m.engine.json").write_text(json.dumps({**doc, "version": 0}))
    with pytest.raises(BackendError, match="older vsr-export"):
        read_key(engine)


# ---------------------------------------------------------------- TensorRT-RTX ahead-of-time builds (no GPU needed)

@needs_rtx
@pytest.mark.parametrize("precision,targets", [("fp32", ("sm89",)), ("fp16", ("sm86", "sm120"))])
def test_rtx_aot_build(tmp_path, tiny_model, precision, targets):
    from export.tensorrt import BuildOptions, build_engine

    # Prepare
    opts = BuildOptions(profile=parse_profile(TINY), precision=precision, targets=targets)
    lines: list[str] = []
    # Execute
    res = build_engine(tiny_model[2][0], tmp_path / "tiny.engine", opts, report=lines.append)
    # Assert
    assert res.path.stat().st_size == res.size > 10_000
    assert (res.key.flavour, res.key.precision, res.key.targets, res.key.gpu_name) == \
        ("tensorrt_rtx", precision, targets, "")
    assert read_key(res.path) == res.key  # sidecar written and consistent with the bytes
    assert any("Building engine" in line for line in lines)  # IProgressMonitor reported phases


@needs_rtx
def test_rtx_aot_build_of_the_aligned_model(tmp_path):
    # block matching + GridSample (rvsr-sa) must be accepted by TensorRT's ONNX parser and builder
    import torch

    from engine.models import build_model
    from export.onnx import export_onnx
    from export.tensorrt import BuildOptions, build_engine

    torch.manual_seed(0)
    onnx_path = export_onnx(build_model("rvsr-sa", 2), tmp_path / "sa.onnx", "rvsr-sa")
    res = build_engine(onnx_path, tmp_path / "sa.engine", BuildOptions(profile=parse_profile(TINY), targets=("sm89",)))
    assert res.path.stat().st_size > 10_000


@needs_rtx
def test_rtx_has_no_hopper_target(tmp_path, tiny_model):
    from export.tensorrt import BuildOptions, build_engine

    with pytest.raises(BackendError, match=r"no engine for SM90 \(Hopper\)"):
        build_engine(tiny_model[2][0], tmp_path / "x.engine", BuildOptions(targets=("sm90",)))


@needs_rtx
def test_engine_cache_reuses_then_rebuilds_stale(tmp_path, tiny_model):
    from export.tensorrt import BuildOptions, ensure_engine

    # Prepare
    opts = BuildOptions(profile=parse_profile(TINY), targets=("sm89",))
    first = ensure_engine(tiny_model[2][0], opts, cache_dir=tmp_path)
    # Execute
    again = ensure_engine(tiny_model[2][0], opts, cache_dir=tmp_path)
    first.path.write_bytes(first.path.read_bytes()[:1000])  # truncated copy, e.g. an interrupted sync
    lines: list[str] = []
    rebuilt = ensure_engine(tiny_model[2][0], opts, cache_dir=tmp_path, report=lines.append)
    other = ensure_engine(tiny_model[3][0], opts, cache_dir=tmp_path)
    # Assert
    assert not first.cached and again.cached and again.path == first.path
    assert not rebuilt.cached and rebuilt.size == first.size
    assert any(line.startswith("stale engine") and "changed since it was built" in line for line in lines)
    assert other.path != first.path  # another ONNX -> another key


@needs_rtx
def test_cli_trt(tmp_path, tiny_model, capsys):
    from export.cli import main

    # Prepare
    out = tmp_path / "cli.engine"
    # Execute
    rc = main(["trt", "--onnx", str(tiny_model[2][0]), "--out", str(out), "--fp16", "--profile", TINY,
               "--target", "sm89", "--quiet"])
    bad = main(["trt", "--onnx", str(tiny_model[2][0]), "--out", str(out), "--target", "sm90"])
    # Assert
    cap = capsys.readouterr()
    assert rc == 0 and out.exists() and "fp16, profile 36x64, targets sm89" in cap.out
    assert bad == 7 and cap.err.count("\n") == 1 and "Hopper" in cap.err and "Traceback" not in cap.err


def test_cli_trt_usage_errors(tmp_path, tiny_model, capsys):
    from export.cli import main

    # Execute
    rc_profile = main(["trt", "--onnx", str(tiny_model[2][0]), "--out", str(tmp_path / "x"), "--profile", "4k"])
    rc_target = main(["trt", "--onnx", str(tiny_model[2][0]), "--out", str(tmp_path / "x"), "--target", "ampere"])
    # Assert
    err = capsys.readouterr().err
    assert (rc_profile, rc_target) == (2, 2) and err.count("\n") == 2 and "Traceback" not in err


# ---------------------------------------------------------------- execution (needs a GPU)

def _gpu_reason() -> str | None:
    from engine.backends.tensorrt import unavailable_reason

    return unavailable_reason()


def test_tensorrt_backend_parity_with_onnxruntime(tmp_path):
    reason = _gpu_reason()
    if reason:
        pytest.skip(f"TensorRT backend unavailable: {reason}")
    from engine.backends.onnxruntime import OnnxRuntimeBackend
    from engine.backends.tensorrt import TensorRTBackend, find_builder
    from engine.registry import shipped_file
    from export.onnx import sample_feeds

    # Prepare: the shipped x2 model, fp16 engine built before the first frame
    path = shipped_file("rvsr-s-real", 2)
    worst = 0
    # Execute: each backend feeds back its own state for 8 steps
    with OnnxRuntimeBackend(path) as ref, TensorRTBackend(path, cache_dir=tmp_path, builder=find_builder()) as trt:
        trt.prepare(36, 64)
        spec = ref.io_spec()
        s_ref: dict = {}
        s_trt: dict = {}
        for i in range(8):
            feeds = sample_feeds(spec, (36, 64), seed=i)
            a, b = ref.run({**feeds, **s_ref}), trt.run({**feeds, **s_trt})
            s_ref, s_trt = spec.next_state(a), trt.io_spec().next_state(b)
            worst = max(worst, int(np.abs(a["y_out"].astype(int) - b["y_out"].astype(int)).max()))
    # Assert: fp16 engine vs fp32 reference within 3 code values
    assert worst <= 3
