"""One exception family; each also a builtin so callers may catch either. The CLI maps them to exit codes."""

from __future__ import annotations


class VsrError(Exception):
    """Base of every error vsr-upscale raises on purpose."""

    exit_code = 1


class UsageError(VsrError, ValueError):
    """Bad option values (unknown backend/codec, bad scale...)."""

    exit_code = 2


class InputError(VsrError, FileNotFoundError):
    """Input missing or unreadable."""

    exit_code = 3


class DecodeError(VsrError, ValueError):
    """Input is not a decodable video (no video stream, zero bytes, truncated beyond repair)."""

    exit_code = 4


class OutputError(VsrError, OSError):
    """Output cannot be written (exists without -y, folder missing or unwritable)."""

    exit_code = 5


class ModelError(VsrError, LookupError):
    """Unknown model, missing or incompatible weights."""

    exit_code = 6


class BackendError(VsrError, RuntimeError):
    """Requested backend unavailable or failed."""

    exit_code = 7


class DeviceError(BackendError):
    """A device-memory call (CUDA pointers, the C API's vsr_upscale_cuda) on a machine without a usable CUDA device."""


class EncodeError(VsrError, RuntimeError):
    """Encoder rejected the settings or failed."""

    exit_code = 8


class ResourceError(VsrError, MemoryError):
    """The job does not fit in memory (frame size too large for the free RAM, or memory ran out)."""

    exit_code = 10


class DependencyError(VsrError, ImportError):
    """A package the job needs is not installed (torch for training, export and the renderer API)."""

    exit_code = 7


def require(module: str, extra: str, job: str) -> None:
    """Import ``module`` or raise a DependencyError naming the pip extra that installs it."""
    import importlib

    try:
        importlib.import_module(module)
    except ImportError:
        raise DependencyError(f"{job} needs {module}, which is not installed: pip install \"vsr-upscale[{extra}]\" "
                              f"(in a clone: pip install -e \".[{extra}]\")") from None
