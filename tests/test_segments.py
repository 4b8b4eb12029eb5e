"""Segment-parallel upscaling equals a single pass; resume after SIGKILL; awkward inputs (shipped rvsr-s x2)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import Clip, make_clip, probe

from engine.cli import main
from engine.jobs import JOURNAL, job_dir
from engine.segments import plan, scan

KEYS_EVERY_12 = {"preset": "ultrafast", "x264-params": "keyint=12:min-keyint=12:scenecut=0"}  # a keyframe each 0.5 s


def frames_rgb(path: Path) -> list[np.ndarray]:
    """Every decoded frame as RGB, presentation order."""
    import av

    with av.open(str(path)) as c:
        return [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]


def min_psnr(a: Path, b: Path) -> float:
    """Lowest per-frame PSNR between two videos of the same frame count."""
    fa, fb = frames_rgb(a), frames_rgb(b)
    assert len(fa) == len(fb)
    worst = np.inf
    for x, y in zip(fa, fb):
        mse = float(np.mean((x.astype(np.float64) - y.astype(np.float64)) ** 2))
        worst = min(worst, np.inf if mse == 0 else 10 * np.log10(255.0**2 / mse))
    return worst


def upscale(capsys, src: Path, out: Path, *extra: str) -> dict:
    code = main([str(src), "-o", str(out), "--codec", "ffv1", "--quiet", "--json", *extra])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    return json.loads(captured.out)


def assert_same_as_single_pass(capsys, src: Path, out: Path, tmp_path: Path) -> None:
    ref = tmp_path / f"single-{out.name}"
    upscale(capsys, src, ref)
    a, b = probe(ref), probe(out)
    assert b.times == a.times  # exact pts, every frame
    assert b.packets.get("audio") == a.packets.get("audio")  # same audio packets, byte for byte, same times
    assert min_psnr(ref, out) >= 45.0


def test_plan_cuts_at_first_keyframe_after_each_multiple(tmp_path):
    # Prepare: 60 frames at 24 fps, keyframe every 12 frames
    src = make_clip(tmp_path / "k.mp4", Clip(frames=60, audio=False, options=KEYS_EVERY_12))
    # Execute
    p = plan(src, seconds=1.0, warmup=8)
    # Assert: cuts at 24 and 48 (= 1 s, 2 s); warm-up 8 frames from the keyframe before them
    times, keys, _ = scan(src)
    assert len(keys) == 5 and [s.window.start_pts for s in p.segments] == [times[0], times[24], times[48]]
    assert [s.frames for s in p.segments] == [24, 24, 12] and p.frames == 60
    assert [s.warmup for s in p.segments] == [0, 8, 8]
    assert p.segments[1].window.seek_pts is not None and p.segments[1].window.seek_pts <= p.segments[1].window.warm_pts


def test_jobs2_equals_single_pass_timestamps_and_audio(tmp_path, capsys):
    # Prepare: 3 s with audio, a keyframe every 0.5 s, cut every second
    src = make_clip(tmp_path / "a.mp4", Clip(frames=72, options=KEYS_EVERY_12))
    out = tmp_path / "par.mkv"
    # Execute
    s = upscale(capsys, src, out, "--jobs", "2", "--segment-seconds", "1")
    # Assert
    assert (s["segments"], s["segments_resumed"], s["frames_in"]) == (3, 0, 72)
    assert not job_dir(out).exists() and not list(tmp_path.glob(".*vsr-tmp*"))
    assert_same_as_single_pass(capsys, src, out, tmp_path)


def _cmd(src: Path, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "engine.cli", str(src), "-o", str(out), "--codec", "ffv1", "--quiet", "--jobs", "1",
            "--segment-seconds", "0.5", *extra]


def _kill_after_first_segment(cmd: list[str], journal: Path) -> None:
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if journal.exists() and len(journal.read_text().splitlines()) >= 2:  # key line + one finished segment
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the run finished before it could be killed; make the clip longer"
    proc.send_signal(signal.SIGKILL)
    proc.wait()


def test_sigkill_leaves_no_output_then_resumes_and_changed_option_starts_over(tmp_path, capsys):
    # Prepare: 8 segments of 0.5 s; a run killed after its first finished segment
    src = make_clip(tmp_path / "r.mp4", Clip(frames=96, options=KEYS_EVERY_12))
    out = tmp_path / "r.mkv"
    _kill_after_first_segment(_cmd(src, out), job_dir(out) / JOURNAL)
    assert not out.exists()
    snapshot = tmp_path / "snapshot"
    shutil.copytree(job_dir(out), snapshot)
    # Execute: the same command resumes
    s = upscale(capsys, src, out, "--jobs", "1", "--segment-seconds", "0.5")
    # Assert
    assert s["segments"] == 8 and s["segments_resumed"] >= 1 and s["frames_in"] == 96
    assert not job_dir(out).exists() and not list(tmp_path.glob(".*vsr-tmp*"))
    assert_same_as_single_pass(capsys, src, out, tmp_path)
    # Execute: the killed state again, but another option changes the result: start over
    out.unlink()
    shutil.copytree(snapshot, job_dir(out))
    s = upscale(capsys, src, out, "--jobs", "1", "--segment-seconds", "0.5", "--pix-fmt", "yuv444p")
    assert s["segments_resumed"] == 0 and s["frames_in"] == 96


@pytest.mark.parametrize("clip, seconds, segments", [
    (Clip(frames=30, audio=False, options={"preset": "ultrafast", "x264-params": "keyint=1000:scenecut=0"}), "0.5", 1),
    (Clip(frames=1, audio=False), "1", 1),
    (Clip(frames=10), None, 1),  # shorter than one (default 10 s) segment
    (Clip(frames=30, audio=False, pts=(0, 1, 2, 5, 6, 9, 10, 11, 14, 15, 16, 20, 21, 22, 27, 28, 29, 33, 34, 35, 40, 41,
                                       42, 45, 46, 47, 50, 52, 54, 58), options=KEYS_EVERY_12), "0.5", 3),  # VFR
], ids=["no-keyframe-after-first", "one-frame", "shorter-than-a-segment", "vfr"])
def test_awkward_inputs_equal_single_pass(tmp_path, capsys, clip, seconds, segments):
    # Prepare
    src = make_clip(tmp_path / "w.mp4", clip)
    out = tmp_path / "w.mkv"
    # Execute
    s = upscale(capsys, src, out, "--jobs", "2", *(["--segment-seconds", seconds] if seconds else []))
    # Assert
    assert s["segments"] == segments and s["frames_in"] == clip.frames
    assert_same_as_single_pass(capsys, src, out, tmp_path)


def test_corrupt_segment_is_skipped_like_a_single_pass(tmp_path, capsys):
    # Prepare: ffv1 intra frames in mkv, the payload of frames 30..41 (the second second) overwritten
    src = make_clip(tmp_path / "c.mkv", Clip(frames=72, codec="ffv1", options={}))
    data = bytearray(src.read_bytes())
    import av

    with av.open(str(src)) as c:
        spans = [(p.pos, p.size) for p in c.demux(video=0) if p.size and 30 <= p.pts * p.time_base * 24 < 42]
    for pos, size in spans:
        data[pos + 16 : pos + size] = os.urandom(size - 16)
    bad = tmp_path / "bad.mkv"
    bad.write_bytes(bytes(data))
    out = tmp_path / "c-out.mkv"
    # Execute
    s = upscale(capsys, bad, out, "--jobs", "2", "--segment-seconds", "1")
    # Assert: the run completes, the damage is counted, what decodes matches a single pass
    assert s["corrupt"] >= 1 and s["frames_in"] < 72
    ref = tmp_path / "c-ref.mkv"
    r = upscale(capsys, bad, ref)
    assert s["frames_in"] == r["frames_in"] and probe(out).times == probe(ref).times


def test_batch_into_a_folder_with_x264_b_frames_in_matroska(tmp_path, capsys):
    # Prepare: two mkv inputs with a keyframe every 4 frames; default encoder (x264 medium: B-frames, and Matroska
    # stores no dts, so the join has the muxer derive them again)
    keys = {"preset": "ultrafast", "x264-params": "keyint=4:min-keyint=4:scenecut=0"}
    a = make_clip(tmp_path / "one.mkv", Clip(frames=12, audio=False, options=keys))
    b = make_clip(tmp_path / "two.mkv", Clip(frames=8, options=keys))
    dest = tmp_path / "out"
    dest.mkdir()
    # Execute
    code = main([str(a), str(b), "-o", str(dest), "--quiet", "--json", "--jobs", "2", "--segment-seconds", "0.15"])
    s = json.loads(capsys.readouterr().out)
    # Assert: one summary, each output joined from several pieces with the source's timestamps and audio
    assert code == 0
    assert [Path(j["output"]).name for j in s["inputs"]] == ["one.mkv", "two.mkv"] and s["segments"] == 5
    for src in (a, b):
        got, want = probe(dest / src.name), probe(src)
        assert got.times == want.times and got.packets.get("audio") == want.packets.get("audio")


def test_local_ray_cluster_gives_the_single_pass_result(tmp_path, capsys):
    pytest.importorskip("ray")
    psutil = pytest.importorskip("psutil")
    from benchmarks.segments_bench import local_ray_cluster

    # Prepare: a one-node cluster on loopback, its own session folder, 2 CPUs, no dashboard, no usage stats
    src = make_clip(tmp_path / "y.mp4", Clip(frames=48, options=KEYS_EVERY_12))
    out = tmp_path / "ray.mkv"
    with local_ray_cluster(cpus=2) as (address, head):
        # Execute
        run = subprocess.run([sys.executable, "-m", "engine.cli", str(src), "-o", str(out), "--codec", "ffv1", "--json",
                              "--quiet", "--ray", address, "--segment-seconds", "1"],
                             env=dict(os.environ, RAY_USAGE_STATS_ENABLED="0"), capture_output=True, text=True,
                             timeout=600)
        tree = [head.pid] + [c.pid for c in psutil.Process(head.pid).children(recursive=True)]
    # Assert: same result as a single pass, and every process of the cluster ended
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout)["segments"] == 2
    assert_same_as_single_pass(capsys, src, out, tmp_path)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and any(psutil.pid_exists(p) for p in tree):
        time.sleep(0.2)
    alive = [p for p in tree if psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE]
    assert not alive, f"cluster processes left running: {alive}"
