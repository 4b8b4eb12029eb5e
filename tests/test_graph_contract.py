"""The graph contract (engine/graph.py): metadata validated against the graph, colour constants, clear errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import ROOT

from engine import colour
from engine.errors import ModelError


def _with_meta(src: Path, dst: Path, **meta: str) -> Path:
    """A copy of the ONNX ``src`` whose vsr.* metadata has ``meta`` (keys with '_' for '.') overwritten."""
    onnx = pytest.importorskip("onnx")
    proto = onnx.load(str(src))
    want = {**{p.key: p.value for p in proto.metadata_props}, **{k.replace("_", ".", 1): v for k, v in meta.items()}}
    del proto.metadata_props[:]
    onnx.helper.set_model_props(proto, want)
    onnx.save(proto, str(dst))
    return dst


@pytest.mark.parametrize("meta,needle", [
    ({"vsr_hidden": json.dumps([[100_000_000, 4], [3, 2]])}, "100000000 channels"),  # MemoryError before
    ({"vsr_hidden": json.dumps([[4, 1]])}, "do not match its vsr.* metadata"),
    ({"vsr_hidden": "[[4, 1], [5, 2]]"}, "5 channels"),
    ({"vsr_scale": "0"}, "metadata scale is '0'"),  # blamed on the encoder before
    ({"vsr_scale": "abc"}, "metadata scale is 'abc'"),
    ({"vsr_scale": "3"}, "upscales x2"),  # a plausible lie: caught by the probe step
    ({"vsr_frame_dtype": "uint16"}, "vsr.frame_dtype says uint16"),
    ({"vsr_format": "1"}, "older vsr-export"),
], ids=["huge state", "hidden count", "hidden channels", "scale 0", "scale abc", "scale lie", "dtype lie", "old"])
def test_lying_or_broken_onnx_metadata_is_a_model_error(tiny_model, tmp_path, meta, needle):
    # Prepare
    from engine.backends.onnxruntime import OnnxRuntimeBackend

    bad = _with_meta(tiny_model[2][0], tmp_path / "bad.onnx", **meta)
    # Execute / Assert
    with pytest.raises(ModelError, match=needle) as info:
        OnnxRuntimeBackend(bad)
    assert "\n" not in str(info.value) and isinstance(info.value, LookupError)


def test_cli_exits_6_with_one_line_for_a_bad_scale(tiny_model, tmp_path):
    # Prepare
    from conftest import make_clip

    bad = _with_meta(tiny_model[2][0], tmp_path / "bad.onnx", vsr_scale="0")
    clip = make_clip(tmp_path / "in.mp4")
    # Execute
    res = subprocess.run([sys.executable, "-m", "engine.cli", str(clip), "-o", str(tmp_path / "out.mp4"),
                          "--weights", str(bad), "--backend", "onnxruntime"], cwd=ROOT, capture_output=True, text=True)
    # Assert: the model is blamed, not the encoder, and nothing is written
    assert res.returncode == 6, res.stderr
    assert res.stderr.count("\n") == 1 and "scale" in res.stderr and "Traceback" not in res.stderr
    assert not (tmp_path / "out.mp4").exists()


@pytest.mark.parametrize("scale", ["abc", "0", "7"])
def test_bad_safetensors_scale_is_a_model_error(tiny_model, tmp_path, scale):
    # Prepare
    from safetensors.numpy import load_file, save_file

    from engine.backends.torch import TorchBackend
    from export.cli import main

    bad = tmp_path / "bad.safetensors"
    save_file(load_file(str(tiny_model[2][1])), str(bad), metadata={"model": "rvsr-tiny", "scale": scale})
    # Execute / Assert: the backend and the exporter give the same one-line ModelError
    with pytest.raises(ModelError, match=f"metadata scale is '{scale}'"):
        TorchBackend(bad)
    assert main(["onnx", "--scale", "2", "--weights", str(bad), "--out", str(tmp_path / "x.onnx")]) == 6


@pytest.mark.parametrize("matrix", [1, 5, 9])
@pytest.mark.parametrize("rng,bits", [(colour.LIMITED, 8), (colour.FULL, 8), (colour.LIMITED, 10)])
def test_colour_constants_round_trip_and_hit_the_reference_points(matrix, rng, bits):
    # Prepare
    fwd, inv = colour.from_rgb(matrix, rng, bits), colour.to_rgb(matrix, rng, bits)
    rgb = np.array([[1.0, 0.0, 0.0, 0.5], [1.0, 0.0, 1.0, 0.5], [1.0, 0.0, 0.0, 0.5]])  # white, black, green, grey
    # Execute
    code = fwd[:, :3] @ rgb + fwd[:, 3:]
    back = inv[:, :3] @ code + inv[:, 3:]
    # Assert: white and black land on the range's end points, neutral chroma on the mid code
    unit = 2 ** (bits - 8)
    lo, hi = (16 * unit, 235 * unit) if rng == colour.LIMITED else (0, 2**bits - 1)
    mid = 128 * unit if rng == colour.LIMITED else 2 ** (bits - 1)
    np.testing.assert_allclose(code[:, :2], [[hi, lo], [mid, mid], [mid, mid]], atol=1e-3)
    np.testing.assert_allclose(back, rgb, atol=1e-5)
