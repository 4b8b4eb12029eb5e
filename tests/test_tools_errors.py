"""vsr-export, vsr-train and RenderUpscaler on bad input: one line, the documented exit code, no traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT

# Every import finder wrapped so that torch is not found, as on a machine where only the CLI's runtime is installed
# (importlib.util.find_spec("torch") is None and `import torch` raises ModuleNotFoundError)
NO_TORCH = """
import sys
class _NoTorch:
    def __init__(self, inner):
        self.inner = inner
    def __getattr__(self, name):
        return getattr(self.inner, name)
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "torch" or not hasattr(self.inner, "find_spec"):
            return None
        return self.inner.find_spec(name, path, target)
sys.meta_path[:] = [_NoTorch(f) for f in sys.meta_path]
sys.modules.pop("torch", None)
"""

def tool(module: str, *args: str, no_torch: bool = False) -> subprocess.CompletedProcess[str]:
    """Run ``module``'s main(args) in a child process (optionally where torch cannot be imported)."""
    code = (NO_TORCH if no_torch else "import sys\n") + f"from {module} import main\nsys.exit(main({list(args)!r}))"
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)


def assert_one_line(res: subprocess.CompletedProcess[str], code: int, prefix: str, words: str) -> None:
    lines = res.stderr.strip().splitlines()
    assert res.returncode == code, res.stderr
    assert len(lines) == 1 and "Traceback" not in res.stderr, res.stderr
    assert lines[0].startswith(prefix) and words in lines[0], res.stderr


@pytest.fixture(scope="module")
def bad_scale_weights(tmp_path_factory, tiny_model) -> Path:
    """Real rvsr-tiny tensors whose metadata says scale "abc"."""
    from safetensors.torch import load_file, save_file

    path = tmp_path_factory.mktemp("w") / "abc.safetensors"
    save_file(load_file(str(tiny_model[2][1])), str(path), metadata={"model": "rvsr-tiny", "scale": "abc"})
    return path


def test_export_bad_scale_metadata_is_a_model_error(tmp_path, bad_scale_weights):
    res = tool("export.cli", "onnx", "--scale", "2", "--weights", str(bad_scale_weights), "--out", str(tmp_path / "m.onnx"))
    assert_one_line(res, 6, "vsr-export: ", "scale is 'abc'")
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize(("args", "code", "words"), [
    (["onnx", "--scale", "2", "--weights", "{d}/missing.safetensors", "--out", "{d}/m.onnx"], 3, "does not exist"),
    (["trt", "--onnx", "{d}/missing.onnx", "--out", "{d}/m.engine"], 3, "does not exist"),
    (["onnx", "--scale", "5", "--out", "{d}/m.onnx"], 2, "invalid choice"),
    (["frobnicate"], 2, "invalid choice"),
])
def test_export_errors_have_their_documented_codes(tmp_path, args, code, words):
    res = tool("export.cli", *(a.format(d=tmp_path) for a in args))
    assert_one_line(res, code, "vsr-export: ", words)


@pytest.fixture(scope="module")
def init_files(tmp_path_factory) -> dict[str, Path]:
    """--init candidates: a pickle, random bytes, and valid safetensors with no tensor of the model."""
    import torch

    d = tmp_path_factory.mktemp("init")
    torch.save({"conv.weight": torch.zeros(3)}, d / "pickle.pt")
    (d / "random.safetensors").write_bytes(os.urandom(4096))
    from safetensors.torch import save_file

    save_file({"encoder.weight": torch.zeros(4, 4)}, str(d / "unrelated.safetensors"))
    return {"pickle": d / "pickle.pt", "random": d / "random.safetensors", "unrelated": d / "unrelated.safetensors"}


@pytest.mark.parametrize(("case", "code", "words"), [
    ("pickle", 6, "is not a safetensors weights file"),
    ("random", 6, "is not a safetensors weights file"),
    ("unrelated", 6, "shares no tensor"),
    ("missing", 3, "does not exist"),
])
def test_train_init_refuses_what_it_cannot_use(tmp_path, init_files, case, code, words):
    init = init_files.get(case, tmp_path / "missing.safetensors")
    res = tool("training.cli", "--model", "rvsr-tiny", "--out", str(tmp_path / "run"), "--init", str(init),
               "--data-root", str(tmp_path / "no-data"), "--steps", "1")
    assert_one_line(res, code, "vsr-train: error: ", words)


def test_train_missing_data_and_unwritable_out(tmp_path):
    (tmp_path / "file").write_text("not a folder")
    # Execute
    no_data = tool("training.cli", "--model", "rvsr-tiny", "--out", str(tmp_path / "run"),
                   "--data-root", str(tmp_path / "no-data"), "--cache-dir", str(tmp_path / "cache"), "--steps", "1")
    (tmp_path / "empty").mkdir()
    empty = tool("training.cli", "--model", "rvsr-tiny", "--out", str(tmp_path / "run2"),
                 "--data-root", str(tmp_path / "empty"), "--cache-dir", str(tmp_path / "cache"), "--steps", "1")
    bad_out = tool("training.cli", "--model", "rvsr-tiny", "--out", str(tmp_path / "file" / "run"), "--steps", "1")
    usage = tool("training.cli", "--out", str(tmp_path / "run3"), "--clients", "3")
    # Assert
    assert_one_line(no_data, 3, "vsr-train: error: ", "does not exist; pass --data-root")
    assert_one_line(empty, 3, "vsr-train: error: ", "no training material")
    assert_one_line(bad_out, 5, "vsr-train: error: ", "cannot create --out")
    assert_one_line(usage, 2, "vsr-train: error: ", "federated option")
    assert not list((tmp_path / "cache").glob("*.npz"))  # no empty cache kept for the next run


@pytest.mark.parametrize(("module", "args", "prefix", "extra"), [
    ("training.cli", ["--out", "{d}/run"], "vsr-train: error: ", "train"),
    ("training.cli", ["render-train", "--help"], "vsr-train: error: ", "train"),
    ("export.cli", ["onnx", "--scale", "2", "--out", "{d}/m.onnx"], "vsr-export: ", "export"),
])
def test_without_torch_the_tools_give_an_install_hint(tmp_path, module, args, prefix, extra):
    res = tool(module, *(a.format(d=tmp_path) for a in args), no_torch=True)
    assert_one_line(res, 7, prefix, f'pip install "vsr-upscale[{extra}]"')


def test_without_torch_render_upscaler_on_torch_raises_an_install_hint():
    # the onnxruntime backend needs no torch (tests/test_render_api.py); the torch backend names its extra
    code = NO_TORCH + """
from engine import RenderUpscaler
from engine.errors import DependencyError
try:
    RenderUpscaler(2, backend="torch")
except DependencyError as e:
    assert isinstance(e, ImportError) and "\\n" not in str(e)
    print(e)
"""
    res = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0 and 'pip install "vsr-upscale[torch]"' in res.stdout, res.stderr


def test_vsr_upscale_runs_without_torch(tmp_path, clip_mp4):
    # Execute: the shipped ONNX on onnxruntime needs no torch
    code = NO_TORCH + f"from engine.cli import main\nsys.exit(main([{str(clip_mp4)!r}, '-o', "
    code += f"{str(tmp_path / 'out.mp4')!r}, '--quiet']))"
    res = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    # Assert
    assert res.returncode == 0 and (tmp_path / "out.mp4").exists(), res.stderr


def test_export_out_folder_and_train_bad_values_are_one_line(tmp_path):
    # Execute
    folder = tool("export.cli", "onnx", "--scale", "2", "--out", str(tmp_path))
    model = tool("training.cli", "--out", str(tmp_path / "run"), "--model", "nope")
    steps = tool("training.cli", "--out", str(tmp_path / "run"), "--steps", "-5")
    patch = tool("training.cli", "--out", str(tmp_path / "run"), "--patch", "15")
    # Assert
    assert_one_line(folder, 5, "vsr-export: ", "is a folder")
    assert_one_line(model, 2, "vsr-train: error: ", "unknown --model 'nope'")
    assert_one_line(steps, 2, "vsr-train: error: ", "--steps must be in")
    assert_one_line(patch, 2, "vsr-train: error: ", "multiple of --scale")
    assert not (tmp_path / "run").exists()
