"""Hardware video: NVDEC decoding and NVENC encoding where FFmpeg and the GPU have them, found by opening them."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

from engine.errors import BackendError, UsageError

MODES = ("auto", "none", "cuda")  # --hwaccel: auto = use what opens, none = CPU video, cuda = NVDEC or an error
NVENC: dict[str, str] = {"libx264": "h264_nvenc", "libx265": "hevc_nvenc", "libsvtav1": "av1_nvenc",
                         "libaom-av1": "av1_nvenc"}  # CPU encoder -> the NVENC encoder of the same format
FAST_PRESET: dict[str, str] = {"libx264": "veryfast", "libx265": "veryfast", "libsvtav1": "10"}  # beside a GPU
PROBE_SIZE = 256  # frame side (pixels) the encoder probe opens at: above every NVENC minimum


@dataclass(frozen=True)
class Probe:
    """Whether a piece of hardware video opened on this machine, and why (not)."""

    available: bool  # the device context or encoder opened
    reason: str  # one line for the summary: what opened, or what failed and how


@dataclass(frozen=True)
class VideoPlan:
    """How a run decodes and encodes, with the reasons the summary prints."""

    hwaccel: Any  # av.codec.hwaccel.HWAccel to open the input with (NVDEC), or None for the CPU decoder
    decode: str  # "nvdec" or "cpu"
    encoder: str  # video encoder name the run uses
    preset: str | None  # encoder preset chosen here (a fast CPU preset beside a GPU); None = --preset or the default
    notes: tuple[str, ...]  # why: one line for the decoder, one for the encoder
    gpu: bool = False  # a CUDA device opened: the notes are worth printing (without one, video is as always)
    device_frames: bool = False  # NVDEC frames stay on the GPU (PyAV >= 18) for backends that take CUDA tensors


def _why(e: BaseException) -> str:
    return (getattr(e, "strerror", None) or str(e) or type(e).__name__).splitlines()[0]


@functools.lru_cache(maxsize=None)
def probe_cuda(codec: str = "h264") -> Probe:
    """Open a CUDA device context for decoding ``codec`` (NVDEC), as FFmpeg would; cached per process."""
    import av

    try:
        from av.codec.hwaccel import HWAccel, hwdevices_available
    except ImportError:
        return Probe(False, f"PyAV {av.__version__} has no hardware decoding (needs av >= 14.1)")
    if "cuda" not in hwdevices_available():
        return Probe(False, "this FFmpeg build has no CUDA support")
    try:
        decoder = av.codec.Codec(codec, "r")
    except (av.codec.codec.UnknownCodecError, ValueError):
        return Probe(False, f"no {codec} decoder in this FFmpeg build")
    if not any(c.device_type.name == "cuda" for c in decoder.hardware_configs):
        return Probe(False, f"NVDEC does not decode {codec}")
    try:
        HWAccel("cuda", allow_software_fallback=True).create(decoder)
    except (av.error.FFmpegError, NotImplementedError, OSError, ValueError) as e:
        return Probe(False, f"no CUDA device ({_why(e)})")
    return Probe(True, f"NVDEC decodes {codec} on the CUDA device")


@functools.lru_cache(maxsize=None)
def probe_encoder(name: str) -> Probe:
    """Open encoder ``name`` on a small frame: a build may list NVENC on a GPU that has none (H100, H200)."""
    import av

    try:
        ctx = av.codec.CodecContext.create(name, "w")
    except (av.codec.codec.UnknownCodecError, ValueError):
        return Probe(False, f"{name} is not in this FFmpeg build")
    ctx.width = ctx.height = PROBE_SIZE
    ctx.pix_fmt, ctx.time_base, ctx.framerate = "yuv420p", Fraction(1, 25), Fraction(25)
    try:
        ctx.open()
    except (av.error.FFmpegError, OSError, ValueError) as e:
        return Probe(False, f"{name} did not open ({_why(e)})")
    finally:
        del ctx  # closes the encoder (and its CUDA context) now, not at the next collection
    return Probe(True, f"{name} opened")


def choose_encoder(asked: str | None, default: str, preset: str | None, mode: str, gpu: bool,
                   probe: Any = probe_encoder) -> tuple[str, str | None, str]:
    """(encoder, preset, why): NVENC when a GPU runs and it opens, else the CPU encoder (fast beside a GPU).

    ``asked`` (--codec) and ``preset`` (--preset) always win; ``default`` is the container's encoder; ``gpu``
    says a CUDA device is there; ``probe(name) -> Probe`` opens an encoder.
    """
    if asked:
        return asked, None, f"encoder {asked} (--codec)"
    if mode == "none":
        return default, None, f"encoder {default} (--hwaccel none)"
    if not gpu or default not in NVENC:
        why = "no CUDA device" if not gpu else f"no NVENC encoder for {default}'s format"
        return default, None, f"encoder {default} ({why})"
    nvenc = probe(NVENC[default])
    if nvenc.available:
        return NVENC[default], None, f"encoder {NVENC[default]} (NVENC: {nvenc.reason})"
    fast = None if preset else FAST_PRESET.get(default)
    speed = f" at preset {fast}" if fast else ""
    return default, fast, f"encoder {default}{speed} (no NVENC on this GPU: {nvenc.reason})"


def plan_video(mode: str, codec: str, asked: str | None, default: str, preset: str | None) -> VideoPlan:
    """The decoder and encoder of a run whose input's video codec is ``codec``; CPU video when nothing opens.

    ``mode`` is --hwaccel; ``asked``/``preset`` are --codec/--preset; ``default`` is the container's encoder.
    NVDEC frames stay on the device where PyAV can export them (engine/device_frames.py), else FFmpeg downloads
    them (nv12/p010, converted by the preprocessor).
    """
    if mode not in MODES:
        raise UsageError(f"unknown --hwaccel {mode!r}; use one of {', '.join(MODES)}")
    if mode == "none":
        encoder, fast, why = choose_encoder(asked, default, preset, mode, False)
        return VideoPlan(None, "cpu", encoder, fast, ("decoder: CPU (--hwaccel none)", why))
    cuda = probe_cuda(codec)
    if mode == "cuda" and not cuda.available:
        raise BackendError(f"--hwaccel cuda: {cuda.reason}; use --hwaccel auto to fall back to CPU video")
    gpu = cuda.available or probe_cuda().available  # NVDEC may lack this codec while the GPU is there
    encoder, fast, why = choose_encoder(asked, default, preset, mode, gpu)
    if not cuda.available:
        return VideoPlan(None, "cpu", encoder, fast, (f"decoder: CPU ({cuda.reason})", why), gpu)
    from av.codec.hwaccel import HWAccel

    from engine.device_frames import device_frames_missing

    missing = device_frames_missing()
    where = f"frames downloaded: {missing}" if missing else "frames stay on the GPU for CUDA backends"
    owned = {"is_hw_owned": True} if missing is None else {}
    hwaccel = HWAccel("cuda", allow_software_fallback=True, **owned)
    return VideoPlan(hwaccel, "nvdec", encoder, fast, (f"decoder: {cuda.reason} ({where})", why), True, not missing)


def plan_run(mode: str, source: Path, out: Path, asked: str | None, preset: str | None) -> VideoPlan:
    """``plan_video`` for a run from ``source`` into ``out``; the input's codec is read only on a CUDA machine."""
    from engine.decode import open_container, pick_video_stream
    from engine.encode import default_codec

    codec = "h264"  # what the device probe decodes when there is no device to ask about
    if mode != "none" and probe_cuda().available:
        with open_container(source) as c:
            codec = pick_video_stream(c, source).codec_context.name
    return plan_video(mode, codec, asked, default_codec(out), preset)
