"""VMAF (Netflix libvmaf, model vmaf_v0.6.1) of a clip against its reference, through FFmpeg's libvmaf filter."""

from __future__ import annotations

import functools
import json
import shutil
import subprocess
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from engine.errors import BackendError, UsageError

# Where FFmpeg comes from: the binary bundled in the imageio-ffmpeg wheel (FFmpeg 9.0.2 built with libvmaf; the
# IMAGEIO_FFMPEG_EXE variable overrides it), else an `ffmpeg` on PATH. The first one whose filter list has libvmaf
# is used. Debian bookworm's own ffmpeg package is built without libvmaf.
INSTALL_HINT = "pip install 'imageio-ffmpeg>=0.8.1,<0.9'"
MODEL = "vmaf_v0.6.1"  # libvmaf's built-in default model (1080p TV viewing), the one papers quote
RATE = 25  # nominal frames/s of the raw input streams; VMAF ignores it, framesync pairs frames by pts
MIN_SIDE = 32  # px; libvmaf 3 crashes below 17 and its 4-scale features mean little on tinier frames
PROBE_TIMEOUT_S = 30.0  # for `ffmpeg -filters`
TIMEOUT_S = 60.0  # fixed part of the time allowed to one libvmaf run
TIMEOUT_S_PER_MPIX_FRAME = 5.0  # plus this per frame and megapixel (measured 0.13-0.16 s wall per 1280x720 frame)

# RGB -> yuv420p as an encoder's input would be made: BT.709 matrix, limited (tv) range, exact rounding. The
# vmaf_v0.6.1 features (VIF, ADM, motion) read luma only, so Y = 16 + 219 * (0.2126 R + 0.7152 G + 0.0722 B) / 255
# fixes the score; the chroma planes are produced but do not change it.
_TO_YUV = "scale=out_color_matrix=bt709:out_range=tv:flags=bicubic+accurate_rnd,format=yuv420p"
_LOG = "vmaf.json"  # libvmaf's JSON log, written inside the temporary folder (no ':' or '\' to escape)


def _candidates() -> Iterator[str]:
    """FFmpeg executables to try, best first."""
    try:
        import imageio_ffmpeg

        yield imageio_ffmpeg.get_ffmpeg_exe()
    except (ImportError, RuntimeError):  # not installed, or it found no binary at all
        pass
    system = shutil.which("ffmpeg")
    if system:
        yield system


def _has_libvmaf(exe: str) -> bool:
    """Whether this FFmpeg lists the libvmaf filter."""
    try:
        out = subprocess.run([exe, "-hide_banner", "-filters"], capture_output=True, text=True,
                             timeout=PROBE_TIMEOUT_S, check=False).stdout
    except (OSError, subprocess.TimeoutExpired):
        return False
    return any(line.split()[1:2] == ["libvmaf"] for line in out.splitlines())


@functools.lru_cache(maxsize=1)
def _find_ffmpeg() -> tuple[str | None, str]:
    """(executable with libvmaf, "") or (None, why there is none); probed once per process."""
    tried = list(dict.fromkeys(_candidates()))
    for exe in tried:
        if _has_libvmaf(exe):
            return exe, ""
    if not tried:
        return None, f"VMAF needs FFmpeg with libvmaf and none was found; {INSTALL_HINT}"
    return None, f"VMAF needs FFmpeg with libvmaf; {', '.join(tried)} lack(s) it; {INSTALL_HINT}"


def available() -> str | None:
    """None when VMAF can be computed here, else a one-line reason (for skips and reports)."""
    exe, reason = _find_ffmpeg()
    return None if exe else reason


def _check_frames(ref: Sequence[np.ndarray], dist: Sequence[np.ndarray]) -> tuple[int, int]:
    """(height, width) shared by every frame; UsageError naming the first frame that does not fit."""
    if len(ref) == 0 or len(ref) != len(dist):
        raise UsageError(f"VMAF needs two equally long, non-empty clips; got {len(ref)} reference and "
                         f"{len(dist)} distorted frames")
    shape = np.shape(ref[0])
    if len(shape) != 3 or shape[2] != 3 or min(shape[:2]) < MIN_SIDE:
        raise UsageError(f"VMAF frames must be RGB arrays (H, W, 3) of at least {MIN_SIDE}x{MIN_SIDE} px; "
                         f"got shape {shape}")
    for which, clip in (("reference", ref), ("distorted", dist)):
        for i, frame in enumerate(clip):
            if not isinstance(frame, np.ndarray) or frame.dtype != np.uint8 or frame.shape != shape:
                got = f"{type(frame).__name__} {getattr(frame, 'dtype', '')} {np.shape(frame)}"
                raise UsageError(f"VMAF {which} frame {i}: expected uint8 {shape} like reference frame 0, got {got}")
    return shape[0], shape[1]


def _write_rgb(path: Path, frames: Sequence[np.ndarray]) -> None:
    """Frames as one raw rgb24 stream."""
    with path.open("wb") as fh:
        for frame in frames:
            fh.write(np.ascontiguousarray(frame).data)


def _command(exe: str, w: int, h: int, threads: int) -> list[str]:
    """FFmpeg arguments: input 0 = distorted (libvmaf's 'main'), input 1 = reference; JSON log to _LOG."""
    raw = ["-f", "rawvideo", "-pix_fmt", "rgb24", "-video_size", f"{w}x{h}", "-framerate", str(RATE)]
    graph = (f"[0:v]{_TO_YUV}[dis];[1:v]{_TO_YUV}[ref];"
             f"[dis][ref]libvmaf=model=version={MODEL}:log_fmt=json:log_path={_LOG}:n_threads={threads}")
    return [exe, "-hide_banner", "-nostdin", "-loglevel", "error", "-filter_threads", str(threads),
            *raw, "-i", "dist.rgb", *raw, "-i", "ref.rgb", "-lavfi", graph, "-an", "-f", "null", "-"]


def _run(cmd: list[str], cwd: str, timeout: float) -> None:
    """Run FFmpeg in cwd; BackendError with its last message line on failure or timeout."""
    try:
        proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        raise BackendError(f"FFmpeg libvmaf took over {timeout:.0f} s; score fewer or smaller frames") from None
    except OSError as exc:
        raise BackendError(f"cannot run FFmpeg ({cmd[0]}): {exc}") from None
    if proc.returncode < 0:
        raise BackendError(f"FFmpeg libvmaf crashed (signal {-proc.returncode}); try larger frames or {INSTALL_HINT}")
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or [f"exit status {proc.returncode}"])[-1]
        raise BackendError(f"FFmpeg libvmaf failed: {last}")


def _pooled_mean(log: Path, frames: int) -> float:
    """Mean VMAF from libvmaf's JSON log, after checking it scored every frame."""
    try:
        data = json.loads(log.read_text())
        scored, mean = len(data["frames"]), float(data["pooled_metrics"]["vmaf"]["mean"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise BackendError(f"FFmpeg libvmaf wrote no readable score log ({exc.__class__.__name__}: {exc})") from None
    if scored != frames:
        raise BackendError(f"FFmpeg libvmaf scored {scored} frames, expected {frames}")
    return mean


def vmaf_clip(ref: Sequence[np.ndarray], dist: Sequence[np.ndarray], threads: int = 1) -> float:
    """Mean VMAF (model vmaf_v0.6.1, 0-100, higher is better) of a distorted clip against its reference.

    Parameters
    ----------
    ref, dist : sequence of np.ndarray
        Reference and distorted clips, uint8 RGB frames (H, W, 3), all of one size, equally many. They are
        converted to yuv420p (BT.709, limited range) by FFmpeg and scored by libvmaf's integer features,
        frame i against frame i; the mean over frames is returned. Temporal pooling and motion follow
        libvmaf, so frame order matters.
    threads : int
        Threads for libvmaf and FFmpeg's filters (1 keeps a shared machine usable).

    Returns
    -------
    float
        Pooled mean VMAF. Identical clips score about 97-100 (not exactly 100: the motion feature caps it).
        Cost measured with the imageio-ffmpeg 0.8.1 binary, threads=1, on a busy 2-core machine: per 1280x720
        frame ~30 ms of FFmpeg CPU and 130-160 ms wall (temporary rgb24 files included); FFmpeg peaks at ~215 MB.

    Raises
    ------
    UsageError
        Clips empty, of different lengths, or frames not uint8 (H, W, 3) of one size.
    BackendError
        No FFmpeg with libvmaf (see ``available()``), or FFmpeg failed or timed out.
    """
    h, w = _check_frames(ref, dist)
    exe, reason = _find_ffmpeg()
    if exe is None:
        raise BackendError(reason)
    timeout = TIMEOUT_S + TIMEOUT_S_PER_MPIX_FRAME * len(ref) * max(1.0, w * h / 1e6)
    with tempfile.TemporaryDirectory(prefix="vsr-vmaf-") as tmp:
        _write_rgb(Path(tmp, "ref.rgb"), ref)
        _write_rgb(Path(tmp, "dist.rgb"), dist)
        _run(_command(exe, w, h, max(1, threads)), tmp, timeout)
        return _pooled_mean(Path(tmp, _LOG), len(ref))
