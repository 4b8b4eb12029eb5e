"""Launch a real Flower deployment for `vsr-train --flower`: one SuperLink, K SuperNodes, `flwr run`.

Every process is a separate OS process talking HTTP(S) to the SuperLink, exactly as on K machines;
here they share this host. Insecure transport is refused unless the SuperLink is on a loopback
address; anything else needs TLS files (`TlsFiles`). Telemetry, update checks and runtime
dependency installation are switched off. Every process started here, and every process they
started, is stopped when the run ends or fails. The commands are logged so they can be re-run by
hand on separate machines (see docs/federated.md).
"""

from __future__ import annotations

import ipaddress
import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from engine.errors import UsageError, VsrError
from training.federated import FedConfig
from training.train import TrainConfig

REPO = Path(__file__).resolve().parent.parent  # put on PYTHONPATH so the apps can import training.*
QUIET_ENV = {"FLWR_TELEMETRY_ENABLED": "0", "FLWR_DISABLE_UPDATE_CHECK": "1"}


class DeploymentError(VsrError, RuntimeError):
    """A Flower process failed to start, or the run ended without writing its outputs."""

    exit_code = 9


@dataclass(frozen=True)
class TlsFiles:
    """PEM files for an encrypted deployment."""

    ca: Path  # CA certificate that SuperNodes and the flwr CLI trust
    cert: Path  # SuperLink certificate; its SANs must cover the address SuperNodes dial
    key: Path  # SuperLink private key


@dataclass(frozen=True)
class Deployment:
    """Where and how the Flower processes run."""

    host: str = "127.0.0.1"  # address the SuperLink binds and SuperNodes dial
    port: int = 0  # SuperLink HTTP port for Fleet, Control and Runtime APIs (0 = a free one)
    tls: TlsFiles | None = None  # None = plain HTTP, allowed on loopback only
    threads: int = 0  # torch threads per ClientApp (0 = torch default)
    startup_timeout: float = 60.0  # seconds for the SuperLink to start listening
    run_timeout: float = 24 * 3600.0  # seconds for the whole run before everything is stopped


def free_port(host: str) -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as s:
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


def check_deployment(dep: Deployment) -> None:
    """Refuse plain HTTP off loopback and missing TLS files."""
    if dep.tls is None and not is_loopback(dep.host):
        raise UsageError(f"refusing an unencrypted deployment on {dep.host}: plain HTTP is for 127.0.0.1 only; "
                         "give --tls-ca, --tls-cert and --tls-key")
    for f in asdict(dep.tls).values() if dep.tls else ():
        if not Path(f).is_file():
            raise UsageError(f"TLS file {f} not found")


def write_app(work: Path, cfg: TrainConfig, fed: FedConfig, out: Path, command: str) -> Path:
    """A Flower App folder (pyproject.toml only: the components are imported from this repository)."""
    app = work / "vsrfed"
    app.mkdir(parents=True, exist_ok=True)
    config = {"train": json.dumps(asdict(cfg)), "fed": json.dumps(asdict(fed)), "out": str(out.resolve()),
              "command": command, "round-timeout": 3600}
    lines = [
        "[project]", 'name = "vsrfed"', 'version = "0.1.0"',
        'description = "vsr-upscale federated training (FedVSR, FedAvg, FedProx, FedMedian)"',
        'license = "Apache-2.0"', 'dependencies = ["flwr>=1.41,<1.43"]', "",
        "[tool.flwr.app]", 'publisher = "vsr-upscale"', "",
        "[tool.flwr.app.components]", 'serverapp = "training.flower_app:server_app"',
        'clientapp = "training.flower_app:client_app"', "", "[tool.flwr.app.config]",
        *(f"{k} = {json.dumps(v)}" for k, v in config.items()), "",
    ]
    (app / "pyproject.toml").write_text("\n".join(lines))
    return app


def write_cli_config(home: Path, dep: Deployment, port: int) -> Path:
    """FLWR_HOME/config.toml with one SuperLink connection, "vsr", used by `flwr run`."""
    home.mkdir(parents=True, exist_ok=True)
    lines = ["[superlink]", 'default = "vsr"', "", "[superlink.vsr]", f"address = {json.dumps(f'{dep.host}:{port}')}"]
    if dep.tls is None:
        lines.append("insecure = true")
    else:
        lines.append(f"root-certificates = {json.dumps(str(Path(dep.tls.ca).resolve()))}")
    (home / "config.toml").write_text("\n".join(lines) + "\n")
    return home


def superlink_command(dep: Deployment, port: int) -> list[str]:
    """flower-superlink with the runtime dependency installer off."""
    cmd = [_tool("flower-superlink"), "--host", dep.host, "--port", str(port),
           "--disable-runtime-dependency-installation"]
    if dep.tls is None:
        return [*cmd, "--insecure"]
    return [*cmd, "--ssl-ca-certfile", str(Path(dep.tls.ca).resolve()),
            "--ssl-certfile", str(Path(dep.tls.cert).resolve()), "--ssl-keyfile", str(Path(dep.tls.key).resolve())]


def supernode_command(dep: Deployment, port: int, client: int, clients: int, data: Path, api_port: int) -> list[str]:
    """flower-supernode for partition ``client``; ``api_port`` is its local ClientApp API (loopback)."""
    node = f'partition-id={client} num-partitions={clients} data={json.dumps(str(data.resolve()))}'
    if dep.threads:
        node += f" threads={dep.threads}"
    cmd = [_tool("flower-supernode"), "--superlink", f"{dep.host}:{port}", "--host", "127.0.0.1",
           "--port", str(api_port), "--node-config", node, "--max-wait-time", str(dep.startup_timeout)]
    if dep.tls is None:
        return [*cmd, "--insecure"]
    return [*cmd, "--root-certificates", str(Path(dep.tls.ca).resolve())]


def _tool(name: str) -> str:
    """A console script installed beside this interpreter (the venv's), else from PATH."""
    here = Path(sys.executable).parent / name
    return str(here) if here.exists() else name


def flower_env(home: Path) -> dict[str, str]:
    """Environment for every Flower process: quiet, private FLWR_HOME, this repo importable."""
    path = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)
    return {**os.environ, **QUIET_ENV, "FLWR_HOME": str(home), "PYTHONPATH": path}


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
    """SIGTERM each process and its descendants (Flower detaches some into new sessions), then SIGKILL."""
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
            raise DeploymentError(f"process {p.pid} ({_name(p)}) survived SIGKILL") from None


def _name(proc: subprocess.Popen) -> str:
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


def _start(cmd: list[str], logfile: Path, env: dict[str, str], log: Callable[[str], None]) -> subprocess.Popen:
    log("$ " + shlex.join(cmd))
    with open(logfile, "wb") as f:  # the child keeps its own descriptor
        return subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                                cwd=logfile.parent)


def _tail(path: Path, n: int = 15) -> str:
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
            raise DeploymentError(f"{_name(proc)} exited with {proc.returncode}:\n{_tail(logfile)}")
        try:
            with socket.create_connection((host, port), timeout=1.0):
                return
        except OSError:
            time.sleep(0.3)
    raise DeploymentError(f"SuperLink not listening on {host}:{port} after {timeout:.0f} s:\n{_tail(logfile)}")


STARVED = "task-token authentication failed"  # Flower's words when a task missed its 30 s heartbeat window


def diagnose(work: Path) -> str:
    """Why the run failed, from the process logs (a hint line plus the end of the ServerApp log)."""
    logs = "".join(p.read_text(errors="replace") for p in sorted(work.glob("*.log")))
    hint = ""
    if STARVED in logs:
        hint = ("Flower tasks missed their heartbeat deadlines (fixed at 30 s in flwr): the processes got too "
                "little CPU, e.g. next to higher-priority training jobs. Run when the CPU is available.\n")
    return f"{hint}see {work}/*.log; flwr-run.log ends:\n{_tail(work / 'flwr-run.log')}"


def _finished_history(out: Path, fed: FedConfig, started: float, work: Path) -> dict:
    weights, hist = out / "global.safetensors", out / "history.json"
    if not weights.exists() or weights.stat().st_mtime < started or not hist.exists():
        raise DeploymentError(f"the ServerApp did not write {weights}. {diagnose(work)}")
    history = json.loads(hist.read_text())
    if len(history["rounds"]) != fed.rounds:
        raise DeploymentError(f"only {len(history['rounds'])} of {fed.rounds} rounds finished. {diagnose(work)}")
    return history


def launch(
    cfg: TrainConfig, fed: FedConfig, data: Path, out: Path, dep: Deployment = Deployment(), command: str = "",
    log: Callable[[str], None] = print,
) -> dict:
    """Start a SuperLink and ``fed.clients`` SuperNodes, run the app to completion, stop everything.

    ``data`` is the .npz every SuperNode partitions (node config ``num-partitions``), like the in-process
    runner does. The ServerApp writes OUT/global.safetensors, history.json and history.png; process logs
    go to OUT/flower/. Returns the history.
    """
    check_deployment(dep)
    out = out.resolve()
    work = out / "flower"
    work.mkdir(parents=True, exist_ok=True)
    port = dep.port or free_port(dep.host)
    app = write_app(work, cfg, fed, out, command)
    env = flower_env(write_cli_config(work / "flwr-home", dep, port))
    procs: list[subprocess.Popen] = []
    started = time.time()
    try:
        procs.append(_start(superlink_command(dep, port), work / "superlink.log", env, log))
        wait_listening(dep.host, port, dep.startup_timeout, procs[0], work / "superlink.log")
        for i in range(fed.clients):
            cmd = supernode_command(dep, port, i, fed.clients, data, free_port("127.0.0.1"))
            procs.append(_start(cmd, work / f"supernode-{i}.log", env, log))
        run_cmd = [_tool("flwr"), "run", str(app), "vsr", "--stream"]
        log("$ " + shlex.join(run_cmd) + f"   (progress: tail -f {work / 'flwr-run.log'})")
        with open(work / "flwr-run.log", "wb") as f:
            try:
                rc = subprocess.run(run_cmd, stdout=f, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                                    cwd=work, timeout=dep.run_timeout, check=False).returncode
            except subprocess.TimeoutExpired:
                raise DeploymentError(f"run did not finish within {dep.run_timeout:.0f} s; stopped it. "
                                      f"{diagnose(work)}") from None
        if rc != 0:
            raise DeploymentError(f"flwr run exited with {rc}. {diagnose(work)}")
        for p in procs:
            if p.poll() is not None:
                raise DeploymentError(f"{_name(p)} died with {p.returncode} during the run; see {work}")
        return _finished_history(out, fed, started, work)
    finally:
        stop_all(procs)
