"""Python side of the C API (capi/vsr_upscale.c): caller buffers in, RenderUpscaler, output buffer filled."""

from __future__ import annotations

from typing import Any

from engine.render_api import RenderUpscaler


def create(**options: Any) -> RenderUpscaler:
    """``RenderUpscaler(**options)``; the C side leaves out the options the caller left NULL."""
    return RenderUpscaler(**options)


def upscale(up: RenderUpscaler, height: int, width: int, color: memoryview, depth: memoryview, motion: memoryview,
            normals: memoryview | None, albedo: memoryview | None, jitter: tuple[float, float], reset: bool,
            exposure: float | None, out: memoryview) -> None:
    """Upscale one frame given as float32 HWC memoryviews over the caller's memory; write the result into ``out``.

    The inputs are read-only views, so RenderUpscaler copies them (it needs writable tensors) and its history
    never points into the caller's memory; ``out`` is written in place. Nothing here may outlive the call: the
    C side checks that no reference to a view is left afterwards.
    """
    import numpy as np

    def view(buf: memoryview | None) -> np.ndarray | None:
        return None if buf is None else np.frombuffer(buf, np.float32).reshape(height, width, -1)

    sr = up.upscale(view(color), view(depth), view(motion), view(normals), view(albedo), jitter=jitter,
                    reset=reset, exposure=exposure)
    np.copyto(np.frombuffer(out, np.float32).reshape(sr.shape), sr)
