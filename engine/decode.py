"""Stage 1: open the input, demux every stream, decode video frames with exact pts (PyAV, threaded)."""

from __future__ import annotations

import os
import re
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

from engine.errors import DecodeError, InputError

UNSPECIFIED = 2  # AVCOL_PRI/TRC/SPC_UNSPECIFIED
# decoders of codecs that only code losslessly (their frames are what was encoded)
LOSSLESS_CODECS = frozenset({"ffv1", "ffvhuff", "huffyuv", "png", "apng", "qoi", "bmp", "tiff", "rawvideo", "utvideo",
                             "magicyuv", "qtrle", "v210", "v410", "r210", "r10k", "zlib", "zmbv", "lagarith", "flashsv"})
# x264 codes losslessly (qp 0) only in this profile; lossy x264 uses it too, but only for 4:4:4 or 4:0:0 input
H264_LOSSLESS_PROFILE = "High 4:4:4 Predictive"
NEAR_LOSSLESS_BITS = 2.0  # bits per pixel per 8 bits of depth at or above which a lossy codec counts as lossless
# x264 and x265 write their settings into the stream (x264 in an SEI of the first frame, x265 beside its parameter
# sets): "x264 - core 164 ... rc=crf ... crf=15.0 ..." names the rate factor the file was coded at (not what it was
# coded from: a re-encode of compressed video looks the same)
ENCODER_SETTINGS = re.compile(rb"\b(x26[45])\b[^\x00]{0,4096}?\bcrf=([0-9]{1,2}(?:\.[0-9]+)?)")
SETTINGS_BYTES = 65536  # of the first video packet: the SEI comes before the slice data


@dataclass(frozen=True)
class VideoInfo:
    """What the video stream is, read from its first decoded frame (tags there are the reliable ones)."""

    width: int  # first frame's width in pixels; later frames are resized to it
    height: int  # first frame's height in pixels
    time_base: Fraction  # pts unit of the video stream
    rate: Fraction | None  # average frame rate, None if the container does not say
    frames: int  # expected frame count (container header or duration*rate), 0 if unknown
    start_pts: int  # pts of the first frame, in time_base
    pix_fmt: str  # decoded pixel format, e.g. "yuv420p10le", "gbrp"
    bit_depth: int  # bits per sample of the decoded format (8, 10, 12, 16)
    is_rgb: bool  # decoded format is RGB (FFV1 gbrp, PNG, ...): no YUV matrix applies
    colorspace: int  # AVColorSpace of the frames (matrix), 2 = unspecified
    color_range: int  # AVColorRange: 0 unspecified, 1 limited (MPEG), 2 full (JPEG)
    color_primaries: int  # AVColorPrimaries, 2 = unspecified
    color_trc: int  # AVColorTransferCharacteristic, 2 = unspecified
    rotation: int  # display-matrix rotation in degrees counter-clockwise (0 = none)
    codec: str  # decoder name, e.g. "h264"
    lossless: bool = False  # frames decode to what was encoded (lossless codec or mode, or near-lossless bit rate)
    crf: tuple[str, float] | None = None  # (encoder, rate factor) the encoder wrote into the stream, if it did


@dataclass
class FrameItem:
    """One decoded video frame on its way through the pipeline."""

    frame: Any  # av.VideoFrame as decoded (any pixel format)
    index: int  # decode order = presentation order, from 0
    pts: int  # presentation time in VideoInfo.time_base (repaired when missing or not increasing)
    duration: int  # frame duration in time_base (from the stream when the frame has none)
    resized: bool  # size differs from the first frame: preprocess resizes it and the state resets
    warmup: bool = False  # before the kept range of a Window: stepped to warm the state, never encoded


@dataclass(frozen=True)
class Window:
    """A segment of the input by presentation time: warm-up frames, then the kept range (all in stream time_base)."""

    warm_pts: int  # first frame stepped (warm-up starts here); earlier frames are decoded and dropped
    start_pts: int  # first frame kept (encoded); frames in [warm_pts, start_pts) only warm the state
    end_pts: int | None = None  # first frame no longer wanted; None = to the end of the input
    seek_pts: int | None = None  # keyframe at or before warm_pts to seek to; None = decode from the start

    def classify(self, pts: int) -> str:
        """'drop', 'warm', 'keep' or 'end' for a frame at ``pts``."""
        if self.end_pts is not None and pts >= self.end_pts:
            return "end"
        if pts < self.warm_pts:
            return "drop"
        return "warm" if pts < self.start_pts else "keep"


@dataclass
class PacketItem:
    """A packet of a stream that is copied as is (audio, subtitles)."""

    packet: Any  # av.Packet, with its own pts/dts/time_base


def _frame_attr(frame: Any, ctx: Any, name: str, default: int) -> int:
    # frame colour properties are newer in PyAV than the codec-context ones
    for obj in (frame, ctx):
        value = getattr(obj, name, None)
        if value is not None and int(value) != 0 and not (name != "color_range" and int(value) == UNSPECIFIED):
            return int(value)
    return default


def _head_of(packet: Any) -> bytes:
    """The first SETTINGS_BYTES of a packet, without copying the rest (a 4K keyframe is megabytes)."""
    return memoryview(packet)[:SETTINGS_BYTES].tobytes()


def _open(path: Path, hwaccel: Any) -> Any:
    import av

    extra = {"hwaccel": hwaccel} if hwaccel is not None else {}  # PyAV >= 14.1 only
    try:
        return av.open(str(path), mode="r", metadata_errors="replace", **extra)
    except TypeError:  # PyAV 19 dropped metadata_errors: metadata is always read as UTF-8 with surrogateescape
        return av.open(str(path), mode="r", **extra)


def open_container(path: Path, hwaccel: Any = None) -> Any:
    """``av.open`` with the input checks that give each cause its own error; ``hwaccel``: an
    ``av.codec.hwaccel.HWAccel`` that decodes video on the device (engine/hwvideo.py), None = the CPU decoder."""
    import av

    if not path.exists():
        raise InputError(f"input {path} does not exist")
    if path.is_dir():
        raise InputError(f"input {path} is a folder, not a video file")
    if not path.is_file():
        raise InputError(f"input {path} is not a regular file (a device, pipe or socket); save the video to a file")
    if not os.access(path, os.R_OK):
        raise InputError(f"input {path} is not readable (permissions)")
    if path.stat().st_size == 0:
        raise DecodeError(f"input {path} is empty (0 bytes)")
    try:
        return _open(path, hwaccel)
    except av.error.InvalidDataError:
        raise DecodeError(f"input {path} is not a media file FFmpeg can read (or it is truncated)") from None
    except av.error.FFmpegError as e:
        raise DecodeError(f"cannot open input {path}: {e.strerror or e}") from None
    except OSError as e:
        raise InputError(f"cannot read input {path}: {e.strerror or e}") from None


def pick_video_stream(container: Any, path: Path) -> Any:
    """The first real video stream (not cover art)."""
    # 1024 = AV_DISPOSITION_ATTACHED_PIC; PyAV 14 gives a Flag enum, later versions an int
    videos = [s for s in container.streams.video if not int(getattr(s.disposition, "value", s.disposition)) & 1024]
    if not videos:
        kinds = sorted({s.type for s in container.streams})
        what = f"only {', '.join(kinds)} streams" if kinds else "no streams"
        raise DecodeError(f"input {path} has no video stream ({what})")
    stream = videos[0]
    if stream.codec_context is None:
        raise DecodeError(f"input {path}: this FFmpeg has no decoder for its video codec")
    stream.codec_context.thread_type = "AUTO"  # frame + slice threads
    return stream


class Source:
    """Demuxes one input; yields FrameItem for video and PacketItem for the streams chosen for copying."""

    def __init__(self, path: str | Path, window: Window | None = None, hwaccel: Any = None) -> None:
        self.path = Path(path)
        self.window = window  # decode only this segment (seek, warm-up, kept range); None = everything
        self._ended = False  # the window's end was reached: stop demuxing
        self._sought = False  # the first video packet after the seek was checked
        self.container = open_container(self.path, hwaccel)  # hwaccel: NVDEC (engine/hwvideo.py) or None
        try:
            self.stream = pick_video_stream(self.container, self.path)
            self.corrupt = 0  # packets the decoder rejected (skipped) + frames it flagged as concealed
            self.truncated = False  # demuxing stopped on a read error before the end
            self.resized = 0  # times the frame size left the first frame's size
            self.seen_until = Fraction(0)  # end time (s) of the latest packet demuxed, any stream
            self._last_resized = False
            self._next_pts: int | None = None
            self._index = 0
            self._copy: list[Any] = list(self.candidates())  # streams whose packets are kept for copying
            self._keep = {s.index for s in self._copy}  # their indices
            self._demux: Iterator[Any] | None = None
            self._buffer: deque[FrameItem | PacketItem] = deque()
            self._head: bytes | None = None  # start of the first video packet of the file (encoder settings)
            self.info = self._prime()
        except BaseException:
            self.container.close()
            raise

    def candidates(self) -> list[Any]:
        """Streams that can be copied packet for packet: audio and subtitles."""
        return [s for s in self.container.streams if s.type in ("audio", "subtitle")]

    def _default_duration(self) -> int:
        rate = self.stream.average_rate or self.stream.guessed_rate
        if not rate:
            return 1
        return max(1, round(1 / (Fraction(rate) * self.stream.time_base)))

    def _prime(self) -> VideoInfo:
        """Decode up to the first video frame (other packets wait in a buffer) to learn size and colour tags."""
        if self.window is not None and self.window.seek_pts is not None:
            self._head = self._first_packet()
            self.container.seek(self.window.seek_pts, stream=self.stream, backward=True, any_frame=False)
        self._demux = self.container.demux(self.stream, *self._copy)
        while self._index == 0:
            if not self._pump():
                raise DecodeError(f"input {self.path}: no decodable video frame (truncated or corrupt?)")
        first = next(i for i in self._buffer if isinstance(i, FrameItem))
        return self._info(first.frame, first.pts)

    def _first_packet(self) -> bytes:
        """Start of the file's first video packet, read before a seek (empty when it cannot be read)."""
        import av

        try:
            return next((_head_of(p) for p in self.container.demux(self.stream)), b"")
        except av.error.FFmpegError:
            return b""

    def _info(self, frame: Any, pts: int) -> VideoInfo:
        s, ctx = self.stream, self.stream.codec_context
        fmt = getattr(frame, "sw_format", None) or frame.format  # an NVDEC frame on the GPU: its samples' format
        rate = Fraction(s.average_rate) if s.average_rate else None
        frames = s.frames or (int(s.duration * s.time_base * rate) if s.duration and rate else 0)
        if not frames and self.container.duration and rate:
            frames = int(self.container.duration / 1_000_000 * rate)  # container duration is in microseconds
        depth = max(c.bits for c in fmt.components)
        return VideoInfo(
            width=frame.width, height=frame.height, time_base=Fraction(s.time_base), rate=rate, frames=frames,
            start_pts=pts, pix_fmt=fmt.name, bit_depth=depth, is_rgb=fmt.is_rgb,
            colorspace=_frame_attr(frame, ctx, "colorspace", UNSPECIFIED),
            color_range=_frame_attr(frame, ctx, "color_range", 0),
            color_primaries=_frame_attr(frame, ctx, "color_primaries", UNSPECIFIED),
            color_trc=_frame_attr(frame, ctx, "color_trc", UNSPECIFIED),
            rotation=int(getattr(frame, "rotation", 0) or 0), codec=ctx.name,
            lossless=self._lossless(fmt, depth, frame.width * frame.height * float(rate or 0)), crf=self._crf(),
        )

    def _crf(self) -> tuple[str, float] | None:
        """(encoder, rate factor) from the settings x264 / x265 wrote into the stream; None when there are none."""
        found = ENCODER_SETTINGS.search(bytes(self.stream.codec_context.extradata or b"") + (self._head or b""))
        return (found.group(1).decode(), float(found.group(2))) if found else None

    def _lossless(self, fmt: Any, depth: int, pixels_per_s: float) -> bool:
        """Whether the stream went through no lossy coding: a lossless codec, x264's lossless mode, or so many bits
        per pixel that the coding loss is below the noise (read from headers only)."""
        ctx = self.stream.codec_context
        if ctx.name in LOSSLESS_CODECS:
            return True
        subsampled = len(fmt.components) > 2 and fmt.chroma_width(16) < 16  # 4:2:0 / 4:2:2
        if ctx.name == "h264" and ctx.profile == H264_LOSSLESS_PROFILE and subsampled:
            return True
        bit_rate = ctx.bit_rate or self.container.bit_rate  # the container's includes audio: an upper bound
        return bool(bit_rate and pixels_per_s and bit_rate / pixels_per_s >= NEAR_LOSSLESS_BITS * depth / 8)

    def copy_streams(self, streams: list[Any]) -> None:
        """Keep the packets of ``streams`` (a subset of ``candidates``); the others are dropped from now on."""
        keep = {s.index for s in streams}
        self._copy = [s for s in self._copy if s.index in keep]
        self._keep = keep
        self._buffer = deque(i for i in self._buffer if isinstance(i, FrameItem) or i.packet.stream.index in keep)

    def items(self) -> Iterator[FrameItem | PacketItem]:
        """Every frame and copied packet in demux order."""
        while True:
            while self._buffer:
                yield self._buffer.popleft()
            if not self._pump():
                return

    def _pump(self) -> bool:
        """Read one packet into the buffer; False at the end of the input."""
        import av

        assert self._demux is not None
        if self._ended:
            return False
        try:
            packet = next(self._demux)
        except StopIteration:
            self._decode(None)
            return False
        except av.error.FFmpegError:
            self.truncated = True  # read error mid-file: finish with what was decoded
            self._decode(None)
            return False
        if packet.pts is not None and packet.time_base:
            self.seen_until = max(self.seen_until, (packet.pts + (packet.duration or 0)) * packet.time_base)
        if packet.stream is self.stream:
            if self._head is None:
                self._head = _head_of(packet)
            self._check_seek(packet)
            self._decode(packet)
        elif packet.size and (packet.dts is not None or packet.pts is not None) and packet.stream.index in self._keep:
            self._buffer.append(PacketItem(packet))
        return True

    def _check_seek(self, packet: Any) -> None:
        """The first video packet after a seek must not lie past the warm-up start (a demuxer that seeks inexactly)."""
        w = self.window
        if w is None or w.seek_pts is None or self._sought or packet.pts is None:
            return
        self._sought = True
        if packet.pts > w.warm_pts:
            raise DecodeError(f"input {self.path}: seeking to pts {w.seek_pts} landed at pts {packet.pts}, after "
                              f"{w.warm_pts}; this file cannot be cut (run without --jobs)")

    def _decode(self, packet: Any) -> None:
        import av

        if packet is not None and packet.is_corrupt:
            self.corrupt += 1
        try:
            frames = self.stream.codec_context.decode(packet)
        except av.error.InvalidDataError:
            self.corrupt += 1  # the decoder resynchronises on the next packet
            return
        except av.error.EOFError:
            return
        for frame in frames:
            item = self._item(frame)
            verdict = self.window.classify(item.pts) if self.window is not None else "keep"
            self._ended = self._ended or verdict == "end"
            if verdict in ("warm", "keep") and not self._ended:
                item.index, item.warmup = self._index, verdict == "warm"
                self._index += 1
                self.corrupt += int(getattr(frame, "is_corrupt", False))
                self._buffer.append(item)

    def _item(self, frame: Any) -> FrameItem:
        pts = frame.pts
        if pts is None or (self._next_pts is not None and pts < self._next_pts):
            pts = self._next_pts if self._next_pts is not None else 0  # missing or going back: keep order
        duration = int(getattr(frame, "duration", 0) or 0) or self._default_duration()
        self._next_pts = pts + 1
        info = getattr(self, "info", None)
        resized = info is not None and (frame.width, frame.height) != (info.width, info.height)
        self.resized += int(resized and not self._last_resized)
        self._last_resized = resized
        return FrameItem(frame=frame, index=self._index, pts=pts, duration=duration, resized=resized)

    def ends_early(self) -> bool:
        """True when a Matroska/WebM input stopped well before the duration its header declares (file cut short).

        Matroska writes no frame count, and the demuxer reaches a clean end of file when the tail is missing; its
        Segment Duration, written in the header, is the end of the longest stream. Other containers either have a
        frame count (checked by the pipeline) or compute the duration from what is there.
        """
        c = self.container
        if "matroska" not in c.format.name or not c.duration or self.truncated:
            return False
        declared = Fraction(c.duration + (c.start_time or 0), 1_000_000)  # microseconds
        frame = Fraction(self._default_duration()) * self.stream.time_base
        return self.seen_until < declared - max(2 * frame, Fraction(1, 20))

    def close(self) -> None:
        """Close the input file."""
        self.container.close()

    def __enter__(self) -> Source:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
