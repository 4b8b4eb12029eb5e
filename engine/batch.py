"""Batch inputs: several files or a folder map to outputs of the same name in one output folder."""

from __future__ import annotations

from pathlib import Path

from engine.errors import InputError, OutputError

# extensions taken from an input folder (other files in it are left alone)
VIDEO_SUFFIXES = frozenset({".mp4", ".m4v", ".mkv", ".mov", ".webm", ".avi", ".ts", ".mts", ".m2ts", ".mpg", ".mpeg",
                            ".flv", ".wmv", ".ogv", ".nut", ".y4m", ".3gp"})


def _videos_in(folder: Path) -> list[Path]:
    found = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in VIDEO_SUFFIXES
                   and not p.name.startswith("."))
    if not found:
        raise InputError(f"input folder {folder} holds no video file ({', '.join(sorted(VIDEO_SUFFIXES))})")
    return found


def expand_inputs(inputs: list[Path], output: Path) -> list[tuple[Path, Path]]:
    """(input, output) pairs: one file to a file, or every input (folders expanded) to ``output``/its name."""
    if len(inputs) == 1 and not inputs[0].is_dir() and not output.is_dir():
        return [(inputs[0], output)]
    folder = next((p for p in inputs if p.is_dir()), None)
    if folder is not None and not output.is_dir():
        raise InputError(f"input {folder} is a folder, not a video file; to upscale every video in it, give an "
                         "existing folder as -o")
    files = [f for p in inputs for f in (_videos_in(p) if p.is_dir() else [p])]
    if not output.is_dir():
        raise OutputError(f"output {output} must be an existing folder when upscaling several inputs or a folder")
    names = [f.name for f in files]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise InputError(f"two inputs share the name {twice[0]}; their outputs in {output} would collide")
    return [(f, output / f.name) for f in files]
