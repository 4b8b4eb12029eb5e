"""What a hostile user does to vsr-upscale: full disks, memory bombs, cut files, hang-ups, killed runs, odd --fps."""

from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import pytest
from conftest import ROOT, Clip, make_clip
from test_cli_errors import assert_failed, cli, start_long_run


def _disk_limit(limit: int):
    def pre() -> None:  # a file size limit: writes past it fail with EFBIG, as a full disk fails with ENOSPC
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return pre


@pytest.mark.parametrize("ext", [".mp4", ".mkv"])
def test_full_disk_when_the_file_is_finalised_is_an_output_error(tmp_path, tiny_model, clip_mp4, ext):
    # Prepare: the output (~16 kB) stays in the muxer's 32 kB buffer until close writes it and the trailer
    out = tmp_path / f"out{ext}"
    # Execute
    res = subprocess.run([sys.executable, "-m", "engine.cli", str(clip_mp4), "-o", str(out), "--weights",
                          str(tiny_model[2][0]), "--quiet"], cwd=ROOT, capture_output=True, text=True, timeout=120,
                         preexec_fn=_disk_limit(4096))
    # Assert
    assert_failed(res, 5, "File too large", tmp_path)


@pytest.mark.parametrize("ext", [".avi", ".mp4", ".mkv"])
def test_fps_above_the_source_rate_gives_distinct_regular_timestamps(tmp_path, tiny_model, ext):
    # Prepare: AVI stores time in 1/source-rate, too coarse for 60 fps slots
    src = make_clip(tmp_path / "in.avi", Clip(audio=False))  # 12 frames at 24 fps
    out = tmp_path / f"out{ext}"
    # Execute
    res = cli(str(src), "-o", str(out), "--weights", str(tiny_model[2][0]), "--fps", "60", "--json", "--quiet")
    # Assert
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["frames_out"] == 30  # 0.5 s at 60 fps
    import av

    with av.open(str(out)) as c:
        times = sorted(Fraction(f.pts) * f.time_base for f in c.decode(c.streams.video[0]))
    steps = {round(float(b - a), 3) for a, b in zip(times, times[1:])}
    assert len(set(times)) == 30 and steps <= {0.016, 0.017}, (times, steps)


def test_source_start_offset_is_kept_with_fps(tmp_path, tiny_model):
    # Prepare: first frame at 1/24 s
    src = make_clip(tmp_path / "in.mkv", Clip(audio=False, pts=tuple(range(1, 13)), time_base=Fraction(1, 24)))
    out = tmp_path / "out.mp4"
    # Execute
    res = cli(str(src), "-o", str(out), "--weights", str(tiny_model[2][0]), "--fps", "48", "--quiet")
    # Assert: slots every 1/48 s from the source start
    assert res.returncode == 0, res.stderr
    import av

    with av.open(str(out)) as c:
        times = [Fraction(f.pts) * f.time_base for f in c.decode(c.streams.video[0])]
    assert abs(times[0] - Fraction(1, 24)) < Fraction(1, 1000)
    assert all(abs(b - a - Fraction(1, 48)) < Fraction(1, 1000) for a, b in zip(times, times[1:]))


@pytest.fixture(scope="session")
def huge_h264(tmp_path_factory) -> Path:
    """One 8000x8000 black H.264 frame: under 200 kB on disk, about 100 GiB to upscale."""
    import av

    path = tmp_path_factory.mktemp("huge") / "huge.mp4"
    with av.open(str(path), "w") as o:
        s = o.add_stream("libx264", rate=25, options={"preset": "ultrafast", "crf": "51"})
        s.width = s.height = 8000
        s.pix_fmt = "yuv420p"
        frame = av.VideoFrame(8000, 8000, "yuv420p")
        for plane in frame.planes:
            plane.update(bytes(plane.buffer_size))
        frame.pts = 0
        for pkt in [*s.encode(frame), *s.encode()]:
            o.mux(pkt)
    return path


def test_memory_bomb_is_refused_before_any_work(tmp_path, huge_h264):
    # Execute (the shipped model: nothing is run before the check)
    res = cli(str(huge_h264), "-o", str(tmp_path / "out.mp4"))
    # Assert
    assert_failed(res, 10, "8000x8000 frames at x2 need about", tmp_path)
    assert "--max-memory" in res.stderr


def test_max_memory_sets_the_budget_and_zero_turns_the_check_off(tmp_path, tiny_model, clip_mp4):
    # Execute
    low = cli(str(clip_mp4), "-o", str(tmp_path / "out.mp4"), "--weights", str(tiny_model[2][0]),
              "--max-memory", "0.001")
    off = cli(str(clip_mp4), "-o", str(tmp_path / "ok.mp4"), "--weights", str(tiny_model[2][0]),
              "--max-memory", "0", "--quiet")
    # Assert
    assert_failed(low, 10, "more than the 0.0 GiB of --max-memory 0.001", tmp_path)
    assert off.returncode == 0 and (tmp_path / "ok.mp4").exists(), off.stderr


def test_memory_estimate_grows_with_pixels_and_scale():
    from engine.memory import estimate

    # Execute
    small, big, x4 = estimate(320, 180, 2, 28), estimate(640, 360, 2, 28), estimate(320, 180, 4, 80)
    # Assert: linear in pixels; measured onnxruntime peaks (740-840 B/LR px for rvsr-s x2) stay below the model part
    assert big.total == 4 * small.total and x4.total > 2 * small.total
    assert 840 * 320 * 180 < small.model


def test_matroska_cut_in_half_reports_truncated(tmp_path, tiny_model):
    # Prepare
    data = make_clip(tmp_path / "full.mkv").read_bytes()
    cut = tmp_path / "cut.mkv"
    cut.write_bytes(data[: len(data) // 2])
    # Execute
    full = cli(str(tmp_path / "full.mkv"), "-o", str(tmp_path / "a.mkv"), "--weights", str(tiny_model[2][0]), "--json")
    half = cli(str(cut), "-o", str(tmp_path / "b.mkv"), "--weights", str(tiny_model[2][0]), "--json")
    # Assert
    assert full.returncode == 0 and half.returncode == 0, (full.stderr, half.stderr)
    assert json.loads(full.stdout)["truncated"] is False
    summary = json.loads(half.stdout)
    assert summary["truncated"] is True and summary["frames_in"] < 12 and "truncated?" in half.stderr


def test_sighup_leaves_no_temp_file(tmp_path, tiny_model):
    # Prepare
    proc = start_long_run(tmp_path, tiny_model[2][0])
    # Execute: the terminal closes
    proc.send_signal(signal.SIGHUP)
    _, err = proc.communicate(timeout=60)
    # Assert
    assert proc.returncode == 129 and "Traceback" not in err and "interrupted" in err, err
    assert not list(tmp_path.glob("out*")) and not list(tmp_path.glob(".out*"))


def test_temp_file_of_a_killed_run_is_removed_by_the_next_run(tmp_path, tiny_model, clip_mp4):
    # Prepare: a run killed outright leaves its temp file; a live process's temp file must survive
    proc = start_long_run(tmp_path, tiny_model[2][0])
    proc.kill()
    proc.communicate(timeout=60)
    stale = list(tmp_path.glob(".out.mp4.vsr-tmp-*"))
    host = stale[0].name.split(".vsr-tmp-")[1].split("-")[0]
    live = tmp_path / f".other.mp4.vsr-tmp-{host}-{os.getppid()}-abcd1234.mp4"  # a live process on this host
    remote = tmp_path / f".other.mp4.vsr-tmp-{host}x-{proc.pid}-abcd1234.mp4"  # another host of a shared folder
    for path in (live, remote):
        path.write_bytes(b"in progress")
    # Execute
    res = cli(str(clip_mp4), "-o", str(tmp_path / "next.mp4"), "--weights", str(tiny_model[2][0]))
    # Assert
    assert len(stale) == 1 and str(proc.pid) in stale[0].name
    assert res.returncode == 0, res.stderr
    assert not stale[0].exists() and live.exists() and remote.exists() and "temp file(s) of killed runs" in res.stderr


def test_onnxruntime_log_lines_do_not_reach_stderr(tmp_path, tiny_model, clip_mp4):
    # Prepare: metadata that claims another state size, so the graph fails inside onnxruntime
    onnx = pytest.importorskip("onnx")
    model = onnx.load(str(tiny_model[2][0]))
    for prop in model.metadata_props:
        if prop.key == "vsr.hidden":
            hidden = json.loads(prop.value)
            hidden[0][0] += 5
            prop.value = json.dumps(hidden)
    bad = tmp_path / "bad.onnx"
    onnx.save(model, str(bad))
    # Execute
    res = cli(str(clip_mp4), "-o", str(tmp_path / "out.mp4"), "--weights", str(bad))
    # Assert: our line only (model error if the metadata is checked at load, backend error if at the first frame)
    assert res.returncode in (6, 7), res.stderr
    assert_failed(res, res.returncode, "", tmp_path)


def test_readme_first_command_writes_outside_the_clone_or_an_ignored_file():
    # Prepare: the output of the first `vsr-upscale ... -o OUT` in the README
    import re
    import shlex

    text = (ROOT / "README.md").read_text()
    line = next(ln for ln in text.splitlines() if "vsr-upscale samples/" in ln)
    words = shlex.split(line.split("vsr-upscale", 1)[1])
    out = Path(os.path.expanduser(words[words.index("-o") + 1]))
    out = out if out.is_absolute() else ROOT / out
    # Execute
    inside = ROOT in out.resolve().parents
    ignored = inside and subprocess.run(["git", "check-ignore", "-q", str(out)], cwd=ROOT).returncode == 0
    # Assert
    assert not inside or ignored, f"{out} would be an untracked file in the clone"
    assert re.search(r"\.mp4$", str(out))


def test_slow_frame_rates_are_not_snapped_to_zero():
    from engine.retime import parse_rate

    assert parse_rate("0.001") == Fraction(1, 1000) and parse_rate("0.5") == Fraction(1, 2)
    assert parse_rate("23.976") == Fraction(24000, 1001)


@pytest.mark.parametrize(("make", "args", "code", "words"), [
    (lambda d: Path("/dev/zero"), [], 3, "not a regular file"),
    (lambda d: d / "clip.mp4", ["-o", "{d}/out.webm", "--codec", "libx264"], 2, "cannot hold libx264 video"),
    (lambda d: d / "clip.mp4", ["-o", "{d}/out.wav"], 2, "cannot hold libx264 video"),
    (lambda d: d / "clip.mp4", ["-o", "{d}/out.mp4", "--fps", "0.001", "-y"], 0, ""),
    (lambda d: d / "clip.mp4", ["-o", "{d}/out.mp4", "--max-memory", "nan"], 2, "--max-memory"),
])
def test_hostile_odds_and_ends(tmp_path, tiny_model, clip_mp4, make, args, code, words):
    # Prepare
    (tmp_path / "clip.mp4").write_bytes(clip_mp4.read_bytes())
    args = [a.format(d=tmp_path) for a in args] or ["-o", str(tmp_path / "out.mp4")]
    # Execute
    res = cli(str(make(tmp_path)), *args, "--weights", str(tiny_model[2][0]), "--quiet")
    # Assert
    if code:
        assert_failed(res, code, words, tmp_path)
    else:
        assert res.returncode == 0 and not list(tmp_path.glob(".out*")), res.stderr
