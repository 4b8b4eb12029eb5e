"""A resumable job: a folder beside the output with a journal of finished segments, keyed on input and options."""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from engine.errors import OutputError
from engine.pipeline import PipelineOptions
from engine.workers import SegmentResult

JOURNAL = "journal.jsonl"  # first line: the key; then one line per finished segment
LOCK = "lock"  # flock'ed while a run owns the folder
TEMP_MARK = ".vsr-tmp-"  # part of every temp file name the Sink writes (see engine.encode.temp_path)
SAMPLE = 1 << 20  # bytes hashed at the start and at the end of the input


def job_dir(output: Path) -> Path:
    """Where the job of ``output`` lives: a hidden folder beside it."""
    return output.parent / f".{output.name}.vsr-job"


def _file_identity(path: Path) -> dict[str, Any]:
    st = path.stat()
    h = hashlib.sha256()
    with open(path, "rb") as f:
        h.update(f.read(SAMPLE))
        if st.st_size > SAMPLE:
            f.seek(max(SAMPLE, st.st_size - SAMPLE))
            h.update(f.read(SAMPLE))
    return {"path": str(path.resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns, "sample": h.hexdigest()}


def job_key(opts: PipelineOptions, seconds: float, warmup: int) -> str:
    """Hash of the input's identity and every option that changes the result (not --jobs, not --ray)."""
    weights = opts.model.weights
    enc = asdict(opts.encode)
    enc.pop("overwrite")
    enc["fps"] = str(enc["fps"])
    parts = {
        "input": _file_identity(opts.input),
        "model": [opts.model.model, opts.model.scale, _file_identity(weights) if weights else None],
        "backend": opts.backend, "encode": enc, "scene": asdict(opts.scene), "output_suffix": opts.output.suffix,
        "segment_seconds": seconds, "warmup": warmup, "version": 1,
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


@dataclass
class Journal:
    """The job folder of one output, owned (locked) by this run."""

    folder: Path  # the job folder
    key: str  # job_key of this run
    done: dict[int, SegmentResult]  # finished segments found on disk (resumed) or finished by this run
    resumed: int  # how many of ``done`` came from an earlier run
    _lock: Any = None  # the open lock file

    def piece(self, segment: int, suffix: str) -> Path:
        """Path of a segment's piece (same container as the output)."""
        return self.folder / f"piece-{segment:05d}{suffix}"

    def record(self, result: SegmentResult) -> None:
        """Append a finished segment to the journal (flushed and synced: it survives a SIGKILL right after)."""
        entry = asdict(result)
        entry.pop("data")
        with open(self.folder / JOURNAL, "a") as f:
            f.write(json.dumps(entry) + "\n")
            f.flush()
            os.fsync(f.fileno())
        self.done[result.segment] = result

    def remove(self) -> None:
        """Delete the folder once the output is complete."""
        self.close()
        shutil.rmtree(self.folder, ignore_errors=True)

    def close(self) -> None:
        """Release the lock (the folder stays for a later resume)."""
        if self._lock is not None:
            self._lock.close()
            self._lock = None


def _read(folder: Path, key: str, suffix: str) -> dict[int, SegmentResult]:
    try:
        lines = (folder / JOURNAL).read_text().splitlines()
    except FileNotFoundError:
        return {}
    if not lines or json.loads(lines[0]).get("key") != key:
        return {}
    done = {}
    for line in lines[1:]:
        try:
            result = SegmentResult(**json.loads(line))
        except (ValueError, TypeError):
            break  # a line cut short by a kill: everything before it stands
        if (folder / f"piece-{result.segment:05d}{suffix}").is_file():
            done[result.segment] = result
    return done


def _clean(folder: Path, key: str, done: dict[int, SegmentResult], suffix: str) -> None:
    keep = {f"piece-{s:05d}{suffix}" for s in done} | {JOURNAL, LOCK}
    for p in folder.iterdir():
        if p.name not in keep:
            p.unlink() if p.is_file() or p.is_symlink() else shutil.rmtree(p, ignore_errors=True)
    if not done:
        (folder / JOURNAL).write_text(json.dumps({"key": key}) + "\n")
    else:  # rewrite without any torn last line
        entries = [json.dumps({k: v for k, v in asdict(r).items() if k != "data"}) for r in done.values()]
        (folder / JOURNAL).write_text("\n".join([json.dumps({"key": key}), *entries]) + "\n")


def open_journal(output: Path, key: str) -> Journal:
    """Take the job folder of ``output``: resume its finished segments if ``key`` matches, else start over.

    Stale temp files of killed runs (pieces inside the folder, the joined output beside it) are deleted.
    """
    folder = job_dir(output)
    try:
        folder.mkdir(exist_ok=True)
        lock = open(folder / LOCK, "a")
    except OSError as e:
        raise OutputError(f"cannot create the job folder {folder}: {e.strerror or e}") from None
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        lock.close()
        raise OutputError(f"another vsr-upscale run is writing {output} (job folder {folder} is locked)") from None
    done = _read(folder, key, output.suffix)
    _clean(folder, key, done, output.suffix)
    for stale in output.parent.glob(f".{output.name}{TEMP_MARK}*"):
        stale.unlink(missing_ok=True)
    return Journal(folder=folder, key=key, done=done, resumed=len(done), _lock=lock)
