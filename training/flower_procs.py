"""Process plumbing shared by `serve`, `join` and the one-machine `--flower` launcher.

Starting Flower's console scripts with a quiet environment (telemetry and update checks off),
waiting for a port, reading log tails, and stopping a process together with every process it
started (Flower detaches some into new sessions), SIGTERM first, then SIGKILL.
"""

from __future__ import annotations

import ipaddress
import os
import shlex
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from engine.errors import VsrError

REPO = Path(__file__).resolve().parent.parent  # put on PYTHONPATH so the apps can import training.*
QUIET_ENV = {"FLWR_TELEMETRY_ENABLED": "0", "FLWR_DISABLE_UPDATE_CHECK": "1"}


class DeploymentError(VsrError, RuntimeError):
    """A Flower process failed to start, or the run ended without writing its outputs."""

    exit_code = 9


class SiteRefusedError(DeploymentError):
    """The server refused this site: its key is not among the server's authorised sites."""

    exit_code = 11


def free_port(host: str) -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and 'localhost'."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def tool(name: str) -> str:
    """A console script installed beside this interpreter (the venv's), else from PATH."""
    here = Path(sys.executable).parent / name
    return str(here) if here.exists() else name


def flower_env(home: Path) -> dict[str, str]:
    """Environment for every Flower process: quiet, private FLWR_HOME, this repo importable, and this
    interpreter's scripts first on PATH (the SuperLink starts `flower-superexec` by name)."""
    path = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)
    bins = os.pathsep.join(p for p in (str(Path(sys.executable).parent), os.environ.get("PATH", "")) if p)
    return {**os.environ, **QUIET_ENV, "FLWR_HOME": str(home), "PYTHONPATH": path, "PATH": bins}


def descendants(pid: int) -> list[int]:
    """All live descendants of ``pid`` (Linux /proc), children first."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    out, todo = [], list(children.get(pid, []))
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, []))
    return out


def stop_all(procs: Sequence[subprocess.Popen], grace: float = 5.0) -> None:
    """SIGTERM each process and its descendants, then SIGKILL what is left after ``grace`` seconds."""
    pids = []
    for p in procs:
        pids += [*descendants(p.pid), p.pid] if p.poll() is None else descendants(p.pid)
    for pid in pids:
        _signal(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    for p in procs:
        try:
            p.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            pass
    while time.monotonic() < deadline and any(_alive(pid) for pid in pids):
        time.sleep(0.1)
    for pid in pids:
        if _alive(pid):
            _signal(pid, signal.SIGKILL)
    for p in procs:
        try:
            p.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            raise DeploymentError(f"process {p.pid} ({name(p)}) survived SIGKILL") from None


def name(proc: subprocess.Popen) -> str:
    """The program a Popen runs, for messages."""
    args = proc.args
    return Path(str(args[0] if isinstance(args, (list, tuple)) else args)).name


def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def start(cmd: list[str], logfile: Path, env: dict[str, str], log: Callable[[str], None]) -> subprocess.Popen:
    """Start ``cmd`` with stdout and stderr to ``logfile`` (the command line is logged first)."""
    log("$ " + shlex.join(cmd))
    with open(logfile, "wb") as f:  # the child keeps its own descriptor
        return subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                                cwd=logfile.parent)


def tail(path: Path, n: int = 15) -> str:
    """The last ``n`` lines of a log file."""
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return "(no log)"
    return "\n".join(lines[-n:])


def wait_listening(host: str, port: int, timeout: float, proc: subprocess.Popen, logfile: Path) -> None:
    """Block until ``host:port`` accepts TCP connections; fail early if ``proc`` exits."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise DeploymentError(f"{name(proc)} exited with {proc.returncode}:\n{tail(logfile)}")
        try:
            with socket.create_connection((host, port), timeout=1.0):
                return
        except OSError:
            time.sleep(0.3)
    raise DeploymentError(f"SuperLink not listening on {host}:{port} after {timeout:.0f} s:\n{tail(logfile)}")
