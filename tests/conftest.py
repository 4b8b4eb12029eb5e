"""Shared fixtures: tiny media made in code and an untrained rvsr-tiny exported to ONNX (+ safetensors)."""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


@dataclass(frozen=True)
class Clip:
    """Recipe for a tiny test video."""

    size: tuple[int, int] = (64, 48)  # width, height
    frames: int = 12  # video frames
    rate: int = 24  # nominal frame rate
    codec: str = "libx264"  # video encoder
    pix_fmt: str = "yuv420p"  # encoded pixel format
    audio: bool = True  # add an AAC stereo track covering the video
    subtitles: bool = False  # add an SRT stream (mkv only; needs PyAV's add_mux_stream)
    pts: tuple[int, ...] | None = None  # explicit pts in time_base (VFR); None = 0..frames-1 at 1/rate
    time_base: Fraction | None = None  # encoder time_base for explicit pts
    cut_at: int | None = None  # frame index where the content switches to a very different scene
    colour: dict[str, int] = field(default_factory=dict)  # codec-context colour tags to write
    options: dict[str, str] = field(default_factory=lambda: {"preset": "ultrafast"})  # encoder options


def pattern(i: int, w: int, h: int, scene: int = 0, deep: bool = False) -> np.ndarray:
    """Smooth moving content (no false scene cuts); scene 1 looks nothing like scene 0."""
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    r = (x / max(w - 1, 1)) * 0.8 + 0.1
    g = (y / max(h - 1, 1)) * 0.8 + 0.1
    b = 0.5 + 0.3 * np.sin((x + 2 * i) / 5.0)
    img = np.stack([r, g, b], -1)
    if scene:
        img = 1.0 - img[::-1, ::-1]
        img[..., 1] = 0.9 - img[..., 1] * 0.5
    sq = max(4, w // 6)
    x0 = (3 * i) % max(1, w - sq)
    img[h // 3 : h // 3 + sq, x0 : x0 + sq] = [0.9, 0.2, 0.1] if not scene else [0.1, 0.1, 0.9]
    peak = 65535 if deep else 255
    return np.clip(img * peak + 0.5, 0, peak).astype(np.uint16 if deep else np.uint8)


def make_clip(path: Path, clip: Clip = Clip()) -> Path:
    """Write ``clip`` to ``path`` (container from the extension)."""
    import av

    w, h = clip.size
    deep = "10" in clip.pix_fmt or "16" in clip.pix_fmt
    tb = clip.time_base or Fraction(1, clip.rate)
    pts = clip.pts or tuple(range(clip.frames))
    with av.open(str(path), "w") as out:
        out.metadata["title"] = "vsr test clip"
        v = out.add_stream(clip.codec, rate=clip.rate, options=dict(clip.options))
        v.width, v.height, v.pix_fmt = w, h, clip.pix_fmt
        v.codec_context.time_base = tb
        for k, val in clip.colour.items():
            setattr(v.codec_context, k, val)
        a = out.add_stream("aac", rate=48000, layout="stereo") if clip.audio else None
        s = out.add_mux_stream("subrip", time_base=Fraction(1, 1000)) if clip.subtitles else None
        for n, p in enumerate(pts):
            scene = int(clip.cut_at is not None and n >= clip.cut_at)
            f = av.VideoFrame.from_ndarray(pattern(n, w, h, scene, deep), format="rgb48le" if deep else "rgb24")
            f = f.reformat(format=clip.pix_fmt, dst_colorspace=clip.colour.get("colorspace", 1) if deep else None,
                           dst_color_range=clip.colour.get("color_range", 1))
            for k, val in clip.colour.items():
                if hasattr(f, k):  # PyAV < 16 has no frame.color_primaries/color_trc: the codec tags suffice
                    setattr(f, k, val)
            f.pts, f.time_base = p, tb
            for pkt in v.encode(f):
                out.mux(pkt)
        for pkt in v.encode():
            out.mux(pkt)
        if a is not None:
            seconds = float((pts[-1] + 1) * tb) if clip.pts else clip.frames / clip.rate
            _write_tone(out, a, seconds)
        if s is not None:
            for k in range(2):
                pk = av.Packet(f"line {k}".encode())
                pk.pts = pk.dts = k * 200
                pk.duration, pk.stream, pk.time_base = 150, s, Fraction(1, 1000)
                out.mux(pk)
    return path


def _write_tone(out, stream, seconds: float) -> None:
    import av

    n = int(seconds * 48000)
    t = np.arange(n, dtype=np.float32) / 48000
    tone = (0.2 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    for start in range(0, n, 1024):
        chunk = np.stack([tone[start : start + 1024]] * 2)
        f = av.AudioFrame.from_ndarray(np.ascontiguousarray(chunk), format="fltp", layout="stereo")
        f.sample_rate, f.pts = 48000, start
        for pkt in stream.encode(f):
            out.mux(pkt)
    for pkt in stream.encode():
        out.mux(pkt)


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> dict[int, tuple[Path, Path]]:
    """Untrained rvsr-tiny for x2 and x3: scale -> (onnx, safetensors), the .u16.onnx sibling beside; seeded."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("onnx")
    from safetensors.torch import save_file

    from engine.models import build_model
    from export.onnx import export_onnx, u16_path

    d = tmp_path_factory.mktemp("models")
    out = {}
    for scale in (2, 3):
        torch.manual_seed(scale)
        m = build_model("rvsr-tiny", scale)
        onnx_path = export_onnx(m, d / f"rvsr-tiny-x{scale}.onnx", "rvsr-tiny")
        export_onnx(m, u16_path(onnx_path), "rvsr-tiny", frame_dtype="uint16")  # for 10-bit video, as shipped
        st = d / f"rvsr-tiny-x{scale}.safetensors"
        save_file(m.state_dict(), str(st), metadata={"model": "rvsr-tiny", "scale": str(scale)})
        out[scale] = (onnx_path, st)
    return out


@pytest.fixture(scope="session")
def rdg_tiny_weights(tmp_path_factory) -> Path:
    """rdg-tiny x2 weights with non-trivial values, written as training writes them (tiny and quick)."""
    torch = pytest.importorskip("torch")
    from safetensors.torch import save_file

    from engine.models import build_model

    torch.manual_seed(0)
    model = build_model("rdg-tiny", 2)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    path = tmp_path_factory.mktemp("w") / "rdg-tiny-x2.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path),
              metadata={"model": "rdg-tiny", "scale": "2"})
    return path


@pytest.fixture(scope="session")
def clip_mp4(tmp_path_factory) -> Path:
    """64x48, 12 frames of H.264 at 24 fps + AAC stereo, in mp4."""
    return make_clip(tmp_path_factory.mktemp("media") / "clip.mp4")


@dataclass
class Probe:
    """What a media file holds, read back for assertions."""

    size: tuple[int, int]  # video width, height
    times: list[Fraction]  # video frame times in seconds, exact (pts * time_base), presentation order
    pix_fmt: str  # decoded pixel format
    colour: dict[str, int]  # colour tags of the first frame
    packets: dict[str, list[tuple[Fraction | None, bytes]]]  # stream type -> (time, payload) of non-video packets
    rotation: int  # display rotation of the first frame
    metadata: dict[str, str]  # container metadata


def probe(path: Path) -> Probe:
    """Decode ``path`` fully."""
    import av

    with av.open(str(path)) as c:
        v = c.streams.video[0]
        times, first = [], None
        packets: dict[str, list] = {}
        for pkt in c.demux():
            if pkt.stream.type == "video":
                for f in pkt.decode():
                    first = first or f
                    times.append(f.pts * f.time_base)
            elif pkt.size:
                t = pkt.pts * pkt.time_base if pkt.pts is not None else None
                packets.setdefault(pkt.stream.type, []).append((t, bytes(pkt)))
        # frame.color_primaries/color_trc are newer in PyAV than the codec-context ones
        colour = {k: int(getattr(first, k, None) or getattr(v.codec_context, k))
                  for k in ("colorspace", "color_range", "color_primaries", "color_trc")}
        return Probe(size=(v.width, v.height), times=sorted(times), pix_fmt=first.format.name, colour=colour,
                     packets=packets, rotation=int(first.rotation or 0), metadata=dict(c.metadata))


def gbuffer_frames(h: int, w: int, n: int = 3, seed: int = 0) -> list[dict]:
    """Random float32 render frames (H, W, C) in the conventions of docs/render.md, with a jitter each and the
    history reset on frame 0."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        nrm = rng.normal(size=(h, w, 3)).astype(np.float32)
        nrm[..., 2] = np.abs(nrm[..., 2])
        out.append({"color": rng.uniform(0, 1, (h, w, 3)).astype(np.float32),
                    "depth": rng.uniform(0.0, 1.0, (h, w)).astype(np.float32),
                    "motion": rng.normal(0, 1.5, (h, w, 2)).astype(np.float32),
                    "normals": nrm / np.linalg.norm(nrm, axis=-1, keepdims=True),
                    "albedo": rng.uniform(0, 1, (h, w, 3)).astype(np.float32),
                    "jitter": tuple(float(j) for j in rng.uniform(-0.5, 0.5, 2)), "reset": i == 0})
    return out
