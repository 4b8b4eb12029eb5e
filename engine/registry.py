"""Shipped models: explicit name/scale -> package-data file tables (no folder scanning, no torch)."""

from __future__ import annotations

from pathlib import Path

from engine.errors import ModelError

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"

# (model, scale) -> file stem in engine/weights/, for every shipped model, video and renderer alike. Each has
# <stem>.safetensors and <stem>.onnx; video models also <stem>.u16.onnx (uint16 planes for 10/12/16-bit video).
SHIPPED: dict[tuple[str, int], str] = {
    ("rvsr-s", 2): "rvsr-s-x2",
    ("rvsr-s", 3): "rvsr-s-x3",
    ("rvsr-m", 4): "rvsr-m-x4",
    ("rvsr-s-real", 2): "rvsr-s-real-x2",  # real-world (compressed, noisy) input: the default; RESULTS.md
    ("rvsr-s-real", 3): "rvsr-s-real-x3",
    ("rvsr-m-real", 4): "rvsr-m-real-x4",
    ("rvsr-s-clean", 2): "rvsr-s-clean-x2",  # the BI weights + a light blend along the motion: clean input's default
    ("rvsr-m-clean", 4): "rvsr-m-clean-x4",
    ("rvsr-sa", 2): "rvsr-sa-x2",  # aligned state: larger recurrence gain, 2.3x the CPU time of rvsr-s (RESULTS.md)
    ("rdg-s", 2): "rdg-s-x2",  # renderer (G-buffer guided) models, used by RenderUpscaler
    ("rdg-s", 4): "rdg-s-x4",
}

RENDER_MODELS = frozenset({"rdg-s"})  # shipped renderer (G-buffer) models: one graph each, float colour, no .u16

# scale -> the model used when --model is not given: real-world weights where shipped (footage as users have it,
# compressed); the BI-trained rvsr-s / rvsr-m stay available by name for clean input
DEFAULT_MODEL: dict[int, str] = {2: "rvsr-s-real", 3: "rvsr-s-real", 4: "rvsr-m-real"}
# scale -> the default for input that went through no lossy codec (lossless files, BI test frames): at x2 and x4 the
# -clean models, the BI-trained weights (0.2-1.8 dB sharper there than the real-world ones, which learnt to smooth
# codec artefacts) with a light blend along the motion. At x3 the real-world model scores as the BI one on clean
# input and above it on compressed input, steadier: it stays.
CLEAN_MODEL: dict[int, str] = {2: "rvsr-s-clean", 3: "rvsr-s-real", 4: "rvsr-m-clean"}
# encoder -> highest CRF (as the encoder wrote it into the stream, engine/decode.py) at which the -clean model scored
# above the real-world one on files coded from clean frames. The CRF cannot tell those from re-encodes of compressed
# video, where it scored 0.15-0.23 dB below, so such input keeps the real-world default and gets a hint (RESULTS.md,
# session 13)
CLEAN_HINT_CRF: dict[str, float] = {"x264": 18.0, "x265": 21.0}


def default_model(scale: int, clean: bool = False) -> str:
    """Name of the shipped default model for ``scale``: for ``clean`` (lossless) input the BI-trained one."""
    if scale not in DEFAULT_MODEL:
        known = ", ".join(f"x{s}" for s in sorted(DEFAULT_MODEL))
        raise ModelError(f"no shipped model for x{scale} (shipped: {known}); pass --weights FILE for other scales")
    return (CLEAN_MODEL if clean else DEFAULT_MODEL)[scale]


def shipped_file(model: str, scale: int, suffix: str = ".onnx") -> Path:
    """Path of the shipped ``model`` at ``scale`` (suffix '.onnx', '.u16.onnx' or '.safetensors')."""
    stem = SHIPPED.get((model, scale))
    if stem is None:
        have = ", ".join(f"{m} x{s}" for m, s in sorted(SHIPPED))
        raise ModelError(f"no shipped weights for {model} x{scale} (shipped: {have}); pass --weights FILE")
    path = WEIGHTS_DIR / f"{stem}{suffix}"
    if not path.exists():
        raise ModelError(f"shipped file {path.name} is missing from the installation; reinstall vsr-upscale")
    return path
