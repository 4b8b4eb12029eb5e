"""The model an input gets by default: the graph's plane depth and, for lossless input, the BI-trained weights
(engine/registry.py), with the stderr note that says so."""

from __future__ import annotations

from dataclasses import replace

from engine.backends.select import ModelChoice
from engine.decode import VideoInfo
from engine.preprocess import layout_of
from engine.registry import CLEAN_HINT_CRF, default_model


def frame_bits(info: VideoInfo, pix_fmt: str | None) -> int:
    """Deepest samples of the input or the asked output format (the default output keeps the input's depth)."""
    try:
        asked = layout_of(pix_fmt)[2] if pix_fmt else 0
    except ValueError:  # unknown format: choose_pix_fmt says so once the output is set up
        asked = 0
    return max(info.bit_depth, asked)


def input_choice(choice: ModelChoice, info: VideoInfo, pix_fmt: str | None) -> ModelChoice:
    """``choice`` fitted to the input: the planes' sample depth, and whether the input is lossless (then the default
    model is the BI-trained one; see engine/registry.py)."""
    return replace(choice, frame_bits=frame_bits(info, pix_fmt), clean=info.lossless)


def model_note(choice: ModelChoice, info: VideoInfo) -> list[str]:
    """The note that says lossless input got the BI-trained default, or that x264 / x265 input at a low CRF may be
    sharper with it (nothing in every other case)."""
    if choice.model is not None or choice.weights is not None:
        return []
    scale = choice.scale or 2
    clean, usual = default_model(scale, clean=True), default_model(scale)
    if clean == usual:
        return []
    if choice.clean:
        return [f"lossless input ({info.codec}): model {clean}, trained on clean frames (--model {usual}: real-world "
                "model)"]
    crf = info.crf
    if crf is not None and crf[1] <= CLEAN_HINT_CRF[crf[0]]:
        return [f"{crf[0]} CRF {crf[1]:g} input: model {usual}; if the file was coded from clean frames (not "
                f"re-encoded from compressed video), --model {clean} is sharper"]
    return []
