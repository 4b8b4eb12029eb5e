"""Bad inputs through the real `python -m engine.cli` process: one line, its own exit code, no traceback, no file."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import ROOT, Clip, make_clip


def cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run vsr-upscale as a child process."""
    return subprocess.run([sys.executable, "-m", "engine.cli", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout)


def assert_failed(res: subprocess.CompletedProcess[str], code: int, words: str, folder: Path) -> None:
    """Exit ``code``, one stderr line containing ``words``, nothing written in ``folder``."""
    lines = res.stderr.strip().splitlines()
    assert res.returncode == code, res.stderr
    assert len(lines) == 1 and "Traceback" not in res.stderr and words in lines[0], res.stderr
    assert lines[0].startswith("vsr-upscale: error: ")
    assert not list(folder.glob("out*")) and not list(folder.glob(".out*")), list(folder.iterdir())


@pytest.fixture()
def bad(tmp_path) -> Path:
    """A folder for one bad-input case."""
    return tmp_path


def _audio_only(path: Path) -> Path:
    import av

    with av.open(str(path), "w") as o:
        a = o.add_stream("aac", rate=48000, layout="mono")
        for i in range(5):
            f = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
            f.sample_rate, f.pts = 48000, i * 1024
            for p in a.encode(f):
                o.mux(p)
        for p in a.encode():
            o.mux(p)
    return path


def _truncated(src: Path, path: Path) -> Path:
    data = src.read_bytes()
    path.write_bytes(data[: len(data) // 2])  # moov atom (written last) is gone
    return path


CASES = {
    "missing": (lambda d, c: d / "nope.mp4", 3, "does not exist"),
    "folder": (lambda d, c: d, 3, "is a folder"),
    "not_video": (lambda d, c: (d / "text.mp4").write_text("hello") and d / "text.mp4", 4, "not a media file"),
    "zero_bytes": (lambda d, c: (d / "empty.mp4").write_bytes(b"") or d / "empty.mp4", 4, "empty (0 bytes)"),
    "audio_only": (lambda d, c: _audio_only(d / "a.m4a"), 4, "no video stream"),
    "truncated": (lambda d, c: _truncated(c, d / "cut.mp4"), 4, "truncated"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input(bad, tiny_model, clip_mp4, case):
    # Prepare
    make, code, words = CASES[case]
    src = make(bad, clip_mp4)
    # Execute
    res = cli(str(src), "-o", str(bad / "out.mp4"), "--weights", str(tiny_model[2][0]))
    # Assert
    assert_failed(res, code, words, bad)


@pytest.mark.parametrize(("args", "code", "words"), [
    (["--codec", "nope"], 2, "unknown video encoder"),
    (["--codec", "aac"], 2, "not a video encoder"),
    (["--backend", "nope"], 2, "invalid choice"),
    (["--fps", "abc"], 2, "not a frame rate"),
    (["--pix-fmt", "nope"], 2, "unknown pixel format"),
    (["--preset", "nope"], 2, "unknown --preset"),
    (["--scale", "3"], 6, "x2 model"),
    (["--backend", "tensorrt"], 7, "tensorrt backend not available"),
])
def test_bad_option(bad, tiny_model, clip_mp4, args, code, words):
    # Execute
    res = cli(str(clip_mp4), "-o", str(bad / "out.mp4"), "--weights", str(tiny_model[2][0]), *args)
    # Assert
    assert_failed(res, code, words, bad)


def test_unknown_model_and_safetensors_on_onnxruntime(bad, tiny_model, clip_mp4):
    # Execute
    unknown = cli(str(clip_mp4), "-o", str(bad / "out.mp4"), "--model", "nope")
    wrong_kind = cli(str(clip_mp4), "-o", str(bad / "out.mp4"), "--backend", "onnxruntime",
                     "--weights", str(tiny_model[2][1]))
    # Assert
    assert_failed(unknown, 6, "no shipped weights for nope", bad)
    assert_failed(wrong_kind, 6, "vsr-export onnx", bad)


def test_output_problems(bad, tiny_model, clip_mp4):
    # Prepare
    existing = bad / "kept.mp4"
    existing.write_bytes(b"keep me")
    a_file = bad / "plain.txt"
    a_file.write_text("x")
    w = str(tiny_model[2][0])
    # Execute
    exists = cli(str(clip_mp4), "-o", str(existing), "--weights", w)
    no_dir = cli(str(clip_mp4), "-o", str(bad / "missing" / "out.mp4"), "--weights", w)
    file_dir = cli(str(clip_mp4), "-o", str(a_file / "out.mp4"), "--weights", w)
    # Assert
    assert exists.returncode == 5 and "-y" in exists.stderr and existing.read_bytes() == b"keep me"
    assert_failed(no_dir, 5, "does not exist", bad)
    assert_failed(file_dir, 5, "not a folder", bad)


def test_corrupt_packets_are_skipped_and_counted(bad, tiny_model):
    # Prepare: two video packets replaced by noise in the middle of the stream
    import av

    good = make_clip(bad / "good.mkv", Clip(frames=24, options={"preset": "ultrafast", "g": "6"}))
    with av.open(str(good)) as c:
        payloads = [(p.pos, bytes(p)) for p in c.demux(video=0) if p.size][7:9]  # 8th and 9th video packets
    data = bytearray(good.read_bytes())
    noise = np.random.default_rng(0)
    for pos, payload in payloads:
        at = data.find(payload, pos)  # the payload itself, past the container's block header
        data[at : at + len(payload)] = noise.integers(0, 256, len(payload), dtype=np.uint8).tobytes()
    src = bad / "corrupt.mkv"
    src.write_bytes(bytes(data))
    # Execute
    res = cli(str(src), "-o", str(bad / "out.mkv"), "--weights", str(tiny_model[2][0]), "--json")
    # Assert
    import json

    assert res.returncode == 0 and "Traceback" not in res.stderr, res.stderr
    summary = json.loads(res.stdout)
    assert summary["corrupt"] >= 1 and summary["frames_in"] >= 20 and (bad / "out.mkv").exists()


def _default_signals() -> None:
    # A shell runs background jobs with SIGINT ignored, and Python keeps an inherited SIG_IGN (as a user's
    # `vsr-upscale ... &` would): give the child the default dispositions, as an interactive terminal does.
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGHUP, signal.SIG_DFL)


def start_long_run(folder: Path, weights: Path) -> subprocess.Popen[str]:
    """A run into ``folder``/out.mp4 still going when the test acts on it; returns once its temp file exists."""
    src = folder / "long.mp4"
    if not src.exists():  # ~10 s of work on 2 idle cores
        make_clip(src, Clip(size=(320, 240), frames=300, audio=False))
    proc = subprocess.Popen([sys.executable, "-m", "engine.cli", str(src), "-o", str(folder / "out.mp4"), "--weights",
                             str(weights)], cwd=ROOT, stderr=subprocess.PIPE, text=True, preexec_fn=_default_signals)
    deadline = time.monotonic() + 60
    while not list(folder.glob(".out.mp4.vsr-tmp-*")) and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.05)
    time.sleep(0.1)
    assert proc.poll() is None, "the run ended before the test could act on it; make the clip longer"
    return proc


def test_ctrl_c_leaves_no_partial_file(bad, tiny_model):
    # Prepare: long enough to still be running when interrupted
    proc = start_long_run(bad, tiny_model[2][0])
    # Execute
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    # Assert
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "interrupted" in err
    assert not list(bad.glob("out*")) and not list(bad.glob(".out*"))
