"""Joins upscaled pieces by stream copy, with audio, subtitles and metadata copied once from the source."""

from __future__ import annotations

import heapq
from collections.abc import Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

from engine.decode import open_container, pick_video_stream
from engine.encode import EncodeOptions, add_copy_streams, publish, temp_path
from engine.errors import EncodeError


@dataclass
class Joined:
    """What the join wrote."""

    video_packets: int = 0  # packets of the upscaled video
    copied_streams: int = 0  # audio/subtitle streams copied from the source
    copied_packets: int = 0  # packets of those streams
    notes: list[str] = field(default_factory=list)  # streams dropped because the container cannot hold them


def _when(packet: Any) -> Fraction:
    t = packet.dts if packet.dts is not None else packet.pts
    if t is None:
        return Fraction(0)
    return Fraction(t) * Fraction(packet.time_base)  # seconds, exact


def _video_packets(pieces: list[Path], template: Any) -> Iterator[tuple[Fraction, int, Any]]:
    for n, piece in enumerate(pieces):
        with open_container(piece) as c:
            stream = c.streams.video[0]
            params = _params(stream)
            if params != template:
                raise EncodeError(f"piece {n} is {params}, piece 0 is {template}: the video changes size or format "
                                  "mid-stream; run without --jobs")
            stored_dts = True  # False for containers that keep only pts (Matroska): the muxer derives dts again
            for packet in c.demux(stream):
                if not packet.size:
                    continue
                stored_dts = stored_dts and packet.dts is not None
                if not stored_dts:
                    packet.dts = None
                yield (_when(packet), 0, packet)


def _copied_packets(src: Any, keep: set[int]) -> Iterator[tuple[Fraction, int, Any]]:
    if not keep:
        return
    for packet in src.demux(*[s for s in src.streams if s.index in keep]):
        if packet.size and (packet.dts is not None or packet.pts is not None):
            yield _when(packet), 1, packet


def _params(stream: Any) -> tuple[str, int, int, str]:
    """What must be equal in every piece for a stream copy: codec, size, pixel format."""
    return stream.codec_context.name, stream.width, stream.height, stream.format.name if stream.format else ""


def _first_video(piece: Path) -> tuple[Any, tuple[str, int, int, str]]:
    c = open_container(piece)
    return c, _params(c.streams.video[0])


def _mux_all(out: Any, video: Any, copies: dict[int, Any], stream_iters: list[Iterator[Any]], joined: Joined) -> None:
    import av

    merged = heapq.merge(*stream_iters, key=lambda item: (item[0], item[1]))
    for _, order, packet in merged:
        if order == 0:
            packet.stream = video
            joined.video_packets += 1
        else:
            packet.stream = copies[packet.stream.index]
            joined.copied_packets += 1
        try:
            out.mux(packet)
        except av.error.FFmpegError as e:
            raise EncodeError(f"joining the pieces failed: {e}") from None


def join(pieces: list[Path], source: Path, output: Path, enc: EncodeOptions, rotation: int = 0) -> Joined:
    """Write ``output`` from ``pieces`` (same encoder settings, in order) and the source's copied streams.

    Packet timestamps are the pieces' own (the source's pts, exact); nothing is re-encoded. The output is written
    to a temp name and renamed when complete.
    """
    import av

    joined = Joined()
    tmp = temp_path(output, enc.overwrite, source)
    first, template = _first_video(pieces[0])
    try:
        with open_container(source) as src, av.open(str(tmp), mode="w") as out:
            video = out.add_stream_from_template(first.streams.video[0])
            if rotation and hasattr(video, "set_display_rotation"):
                video.set_display_rotation(rotation)
            want = {"audio": enc.audio, "subtitle": enc.subtitles}
            pick_video_stream(src, source)
            streams = [s for s in src.streams if s.type in ("audio", "subtitle") and want.get(s.type, False)]
            copies: dict[int, Any] = {}
            kept = add_copy_streams(out, output.suffix, src, streams, copies, joined.notes)
            joined.copied_streams = len(kept)
            _mux_all(out, video, copies, [_video_packets(pieces, template),
                                          _copied_packets(src, {s.index for s in kept})], joined)
        publish(tmp, output)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    finally:
        first.close()
    return joined
