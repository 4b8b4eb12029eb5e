"""Stage 5: encode frames, copy other streams packet for packet, mux into a temp file renamed when complete."""

from __future__ import annotations

import errno
import os
import re
import tempfile
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

from engine.decode import VideoInfo
from engine.errors import EncodeError, OutputError, UsageError
from engine.postprocess import RGB_MATRIX, OutputFormat
from engine.preprocess import matrix_of, range_of

# container extension -> default video encoder
DEFAULT_CODEC: dict[str, str] = {".webm": "libvpx-vp9", ".ogv": "libtheora"}
FALLBACK_CODEC = "libx264"  # everything else (.mp4, .mkv, .mov, .ts, .avi, ...)
# encoder -> (private options it understands, default crf); unknown encoders get only the generic settings
KNOBS: dict[str, tuple[frozenset[str], int | None]] = {
    "libx264": (frozenset({"crf", "preset"}), 18),
    "libx265": (frozenset({"crf", "preset"}), 20),
    "libvpx-vp9": (frozenset({"crf"}), 31),
    "libsvtav1": (frozenset({"crf", "preset"}), 30),
    "libaom-av1": (frozenset({"crf"}), 30),
}
# 8-bit RGB layouts with the same samples, tried in order when an encoder lacks the asked one
RGB_ALIASES: dict[str, tuple[str, ...]] = {"gbrp": ("bgr0", "rgb24", "bgr24"), "rgb24": ("gbrp", "bgr0", "bgr24")}
X26X_PRESETS = ("ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower", "veryslow",
                "placebo")  # x264/x265 speed presets (x264 prints its own error line for others)
METADATA_DROP = ("major_brand", "minor_version", "compatible_brands", "encoder", "rotate")  # rewritten by the muxer
STATS_PREFIXES = ("DURATION", "NUMBER_OF", "BPS", "_STATISTICS")  # mkvmerge per-track stats, stale after re-encode
# temp files are named .OUTPUT.vsr-tmp-HOST-PID-XXXX.ext: the owner's host and PID say when one is stale (a folder
# shared over the network may hold the temp file of a live run on another host: only this host's are judged)
TEMP_TAG = ".vsr-tmp-"
TEMP_RE = re.compile(r"^\..+\.vsr-tmp-([A-Za-z0-9]*)-(\d+)-[A-Za-z0-9_]+(\.[^.]+)?$")
DISK_ERRNOS = frozenset({errno.ENOSPC, errno.EFBIG, errno.EDQUOT, errno.EIO, errno.EROFS})  # the output, not the codec


@dataclass(frozen=True)
class EncodeOptions:
    """How the output is written."""

    codec: str | None = None  # video encoder name; None = by container (libx264, libvpx-vp9 for .webm)
    crf: int | None = None  # constant rate factor; None = the encoder's default in KNOBS (x264: 18)
    preset: str | None = None  # encoder speed preset; None = "medium" for x264/x265
    pix_fmt: str | None = None  # None = yuv420p, yuv420p10le for >8-bit input, 4:4:4 when a size is odd
    fps: Fraction | None = None  # constant output rate (frames repeated/dropped by timestamp); None = source timing
    audio: bool = True  # copy audio streams
    subtitles: bool = True  # copy subtitle streams
    overwrite: bool = False  # replace an existing output file


def default_codec(out: Path) -> str:
    """The container's video encoder when none is asked: libvpx-vp9 for .webm, libtheora for .ogv, else libx264."""
    return DEFAULT_CODEC.get(out.suffix.lower(), FALLBACK_CODEC)


def resolve_codec(name: str | None, out: Path) -> Any:
    """The av.Codec to encode with, validated as a video encoder."""
    import av

    name = name or default_codec(out)
    try:
        codec = av.codec.Codec(name, "w")
    except (av.codec.codec.UnknownCodecError, ValueError):
        raise UsageError(f"unknown video encoder {name!r} (see `ffmpeg -encoders`; e.g. libx264, libx265, ffv1)") from None
    if codec.type != "video":
        raise UsageError(f"{name!r} is an {codec.type} encoder, not a video encoder")
    return codec


def _needs_even(pix_fmt: str) -> bool:
    import av

    fmt = av.VideoFormat(pix_fmt)
    return fmt.chroma_width(4) < 4 or fmt.chroma_height(4) < 4  # any chroma subsampling


def choose_pix_fmt(codec: Any, info: VideoInfo, width: int, height: int, asked: str | None) -> str:
    """Asked format (validated) or a default that keeps the input's bit depth and the exact output size."""
    import av

    supported = [f.name for f in (codec.video_formats or [])]
    odd = width % 2 or height % 2
    if asked:
        try:
            av.VideoFormat(asked)
        except ValueError:
            raise UsageError(f"unknown pixel format {asked!r}") from None
        if supported and asked not in supported and asked in RGB_ALIASES:
            alt = next((a for a in RGB_ALIASES[asked] if a in supported), None)
            asked = alt or asked  # same samples, another layout: ffv1 stores 8-bit RGB as bgr0, not gbrp
        if supported and asked not in supported:
            raise UsageError(f"{codec.name} cannot encode {asked}; it takes: {', '.join(supported)}")
        if odd and _needs_even(asked):
            raise UsageError(f"output is {width}x{height} (odd) but {asked} needs even sizes; use --pix-fmt yuv444p")
        return asked
    deep = info.bit_depth > 8
    prefs = ["yuv420p10le", "yuv444p10le", "gbrp10le"] if deep else []
    if info.is_rgb:
        prefs = ["gbrp10le"] * deep + ["gbrp", "bgr0"] + prefs
    prefs += ["yuv420p", "yuv444p", "gbrp", "bgr0"]
    for name in prefs:
        if (not supported or name in supported) and not (odd and _needs_even(name)):
            return name
    if supported:
        return supported[0]
    raise UsageError(f"no pixel format of {codec.name} fits a {width}x{height} output; pass --pix-fmt")


def output_format(info: VideoInfo, scale: int, pix_fmt: str) -> OutputFormat:
    """Output pixels and colour tags: the input's matrix/range/primaries/transfer carried over."""
    import av

    rgb_out = av.VideoFormat(pix_fmt).is_rgb
    if rgb_out:
        matrix, rng = RGB_MATRIX, 2
    elif info.is_rgb:
        matrix, rng = 1, 1  # RGB source into YUV: BT.709 limited, tagged so players agree
    else:
        matrix, rng = matrix_of(info), range_of(info)
    return OutputFormat(width=info.width * scale, height=info.height * scale, pix_fmt=pix_fmt, matrix=matrix,
                        color_range=rng, primaries=info.color_primaries, trc=info.color_trc)


def temp_path(out: Path, overwrite: bool, src: Path) -> Path:
    """Create the temp file beside ``out`` (same extension so the muxer is guessed right); checks the output."""
    if out.exists() and not overwrite:
        raise OutputError(f"output {out} already exists; pass -y to overwrite")
    if out.is_dir():
        raise OutputError(f"output {out} is a folder; give a file name such as {out / 'out.mp4'}")
    if out.exists() and src.exists() and out.samefile(src):
        raise OutputError(f"output {out} is the input file; choose another name")
    parent = out.parent if str(out.parent) else Path(".")
    if parent.exists() and not parent.is_dir():
        raise OutputError(f"output folder {parent} is a file, not a folder")
    if not parent.is_dir():
        raise OutputError(f"output folder {parent} does not exist")
    if not out.suffix:
        raise UsageError(f"output {out} has no extension; the container is chosen by it (.mp4, .mkv, .mov, .webm)")
    try:
        fd, name = tempfile.mkstemp(prefix=f".{out.name}{TEMP_TAG}{_host()}-{os.getpid()}-", suffix=out.suffix,
                                    dir=parent)
    except OSError as e:
        raise OutputError(f"cannot write in {parent}: {e.strerror or e}") from None
    os.close(fd)
    return Path(name)


def _host() -> str:
    """This machine's name, reduced to letters and digits (at most 16) for temp file names."""
    import socket

    return re.sub(r"[^A-Za-z0-9]", "", socket.gethostname())[:16]


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's live process
    return True


def remove_stale_temps(folder: Path) -> list[Path]:
    """Delete temp files in ``folder`` left by runs that were killed (SIGKILL, OOM, power loss); returns them.

    Only names of the form ``.NAME.vsr-tmp-HOST-PID-XXXX.ext`` of this host whose PID is not a live process are
    touched.
    """
    removed = []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return removed
    for entry in entries:
        m = TEMP_RE.match(entry.name) if TEMP_TAG in entry.name else None
        if not m or m.group(1) != _host() or int(m.group(2)) == os.getpid() or _pid_alive(int(m.group(2))):
            continue
        try:
            if entry.is_file(follow_symlinks=False):
                os.unlink(entry.path)
                removed.append(Path(entry.path))
        except OSError:
            pass  # not ours to fight over (read-only folder, raced with another cleaner)
    return removed


def output_error(e: OSError, out: Path) -> OutputError | None:
    """An OutputError when ``e`` is about the disk (full, quota, file size limit, I/O), else None."""
    if e.errno not in DISK_ERRNOS:
        return None
    return OutputError(f"cannot write {out}: {os.strerror(e.errno)} (free some space or write elsewhere)")


def publish(tmp: Path, out: Path) -> None:
    """Give a finished temp file the permissions of a normal new file (mkstemp made it private) and rename it."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    os.replace(tmp, out)


def _copy_metadata(dst: Any, src: Any) -> None:
    for key, value in src.metadata.items():
        if key.lower() in METADATA_DROP or key.upper().startswith(STATS_PREFIXES):
            continue
        try:
            dst.metadata[key] = value
        except (TypeError, ValueError):
            pass  # metadata the muxer refuses is not worth failing for


def add_copy_streams(container: Any, suffix: str, src_container: Any, streams: list[Any], copies: dict[int, Any],
                     notes: list[str]) -> list[Any]:
    """Add to ``container`` a stream copying each of ``streams`` (filling ``copies``: input index -> output stream)
    and the source's container metadata; returns the streams it can hold, the others are noted in ``notes``."""
    supported = getattr(container, "supported_codecs", None)
    kept = []
    for s in streams:
        name = s.codec_context.name if s.codec_context else "?"
        if supported is not None and name not in supported:
            notes.append(f"dropped {s.type} stream #{s.index} ({name}): {suffix} cannot hold it")
            continue
        out = container.add_stream_from_template(s)
        _copy_metadata(out, s)
        try:
            out.disposition = s.disposition
        except (AttributeError, TypeError, ValueError):
            pass
        copies[s.index] = out
        kept.append(s)
    _copy_metadata(container, src_container)
    return kept


class Sink:
    """Owns the output container: one encoded video stream plus copied audio/subtitle streams."""

    def __init__(self, out: Path, src: Any, fmt: OutputFormat, info: VideoInfo, codec: Any, opts: EncodeOptions) -> None:
        import av

        self.out, self.opts = out, opts
        self.notes: list[str] = []  # what was adapted or dropped, for the summary
        self.tmp = temp_path(out, opts.overwrite, Path(src.name))
        stale = remove_stale_temps(self.tmp.parent)
        if stale:
            self.notes.append(f"removed {len(stale)} temp file(s) of killed runs: {', '.join(p.name for p in stale)}")
        try:
            self.container = av.open(str(self.tmp), mode="w")
        except (ValueError, av.error.FFmpegError) as e:
            self._unlink()
            raise UsageError(f"cannot write a {out.suffix} file ({e}); use .mp4, .mkv, .mov or .webm") from None
        try:
            self.video = self._add_video(fmt, info, codec)
            self.copies: dict[int, Any] = {}  # input stream index -> output stream
        except BaseException:
            self.abort()
            raise

    def _add_video(self, fmt: OutputFormat, info: VideoInfo, codec: Any) -> Any:
        self.rate_override = self.opts.fps  # --fps: the Retimer turns source pts into slots of this rate
        rate = self.opts.fps or info.rate or Fraction(25)
        # pts unit of the output: the source's (pts kept), or 1/F with --fps so that every slot is its own tick
        # (a source unit coarser than 1/F, e.g. AVI's 1/source-rate, would make slots collide)
        self.time_base = 1 / self.opts.fps if self.opts.fps else info.time_base
        options = self._codec_options(codec.name)
        try:
            stream = self.container.add_stream(codec.name, rate=rate, options=options)
        except ValueError:  # e.g. libx264 into .webm, .gif, .wav
            raise UsageError(f"a {self.out.suffix} file cannot hold {codec.name} video; pick another --codec or "
                             "use .mp4, .mkv or .mov") from None
        stream.width, stream.height, stream.pix_fmt = fmt.width, fmt.height, fmt.pix_fmt
        stream.time_base = self.time_base
        stream.codec_context.time_base = self.time_base
        for name, value in (("colorspace", fmt.matrix), ("color_range", fmt.color_range),
                            ("color_primaries", fmt.primaries), ("color_trc", fmt.trc)):
            try:
                setattr(stream.codec_context, name, value)
            except (AttributeError, TypeError, ValueError):
                pass  # older PyAV: the frame tags still reach the encoder
        if info.rotation:
            if hasattr(stream, "set_display_rotation"):
                stream.set_display_rotation(info.rotation)
            else:
                self.notes.append(f"rotation {info.rotation} deg not written (needs a newer PyAV)")
        return stream

    def _codec_options(self, name: str) -> dict[str, str]:
        knobs, default_crf = KNOBS.get(name, (frozenset(), None))
        opts: dict[str, str] = {}
        crf = self.opts.crf if self.opts.crf is not None else default_crf
        if crf is not None and "crf" in knobs:
            opts["crf"] = str(crf)
        elif self.opts.crf is not None:
            self.notes.append(f"--crf ignored: {name} has no crf")
        if "preset" in knobs:
            opts["preset"] = self.opts.preset or ("medium" if name in ("libx264", "libx265") else "8")
            if name in ("libx264", "libx265") and opts["preset"] not in X26X_PRESETS:
                raise UsageError(f"unknown --preset {opts['preset']!r} for {name}; use one of {', '.join(X26X_PRESETS)}")
        elif self.opts.preset:
            self.notes.append(f"--preset ignored: {name} has no preset")
        if name == "libvpx-vp9":
            opts["b"] = "0"  # constant quality mode
        return opts

    def add_copies(self, src_container: Any, streams: list[Any]) -> list[Any]:
        """Add output streams copying ``streams``; returns those the container can hold (others noted)."""
        return add_copy_streams(self.container, self.out.suffix, src_container, streams, self.copies, self.notes)

    def start(self) -> None:
        """Open the encoder and write the header now, so bad settings fail before any decoding."""
        import av

        try:
            self.container.start_encoding()
        except (av.error.FFmpegError, ValueError) as e:
            raise EncodeError(f"encoder {self.video.codec_context.name} rejected the settings: {e}") from None

    def encode(self, frame: Any) -> None:
        """Encode one frame (pts already set) and mux what comes out."""
        import av

        try:
            for packet in self.video.encode(frame):
                self.container.mux(packet)
        except av.error.FFmpegError as e:
            disk = output_error(e, self.out) if isinstance(e, OSError) else None
            raise disk or EncodeError(f"encoding failed: {e}") from None

    def mux(self, packet: Any) -> None:
        """Mux a packet of a copied stream unchanged (pts/dts kept, rescaled only if the muxer's unit differs)."""
        import av

        packet.stream = self.copies[packet.stream.index]
        try:
            self.container.mux(packet)
        except av.error.FFmpegError as e:
            disk = output_error(e, self.out) if isinstance(e, OSError) else None
            raise disk or EncodeError(f"muxing a copied packet failed: {e}") from None

    def finish(self) -> None:
        """Flush the encoder, close the file and move it to its final name."""
        self.encode(None)
        try:
            self.container.close()  # writes the trailer (mp4 index, mkv cues): where a full disk shows up
            publish(self.tmp, self.out)
        except OSError as e:  # av.error.OSError included
            raise output_error(e, self.out) or OutputError(f"cannot finish {self.out}: {e.strerror or e}") from None

    def abort(self) -> None:
        """Close and delete the temp file; used on any failure or interrupt."""
        try:
            self.container.close()
        except Exception:  # the file is deleted below; a failing close must not hide the original error
            pass
        self._unlink()

    def _unlink(self) -> None:
        try:
            self.tmp.unlink()
        except FileNotFoundError:
            pass
