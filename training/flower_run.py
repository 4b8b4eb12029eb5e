"""The server side of a Flower deployment: `vsr-train serve` and the one-machine `--flower` launcher.

`serve` starts a SuperLink (TLS, optional SuperNode authentication with the sites of an
``authorized.csv`` registered through the Flower CLI), then `flwr run` of the app in
training/flower_app.py, which waits for ``--min-sites`` sites and trains. `launch` is the same
plus K local SuperNodes (`supernode_command`, the command `vsr-train join` runs at each site).
Insecure transport is refused unless the SuperLink is on a loopback address. Telemetry, update
checks and runtime dependency installation are off. Every process started here, and every
process they started, is stopped when the run ends or fails.
"""

from __future__ import annotations

import json
import shlex
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from engine.errors import UsageError
from training.federated import FedConfig
from training.flower_procs import (DeploymentError, flower_env, free_port, is_loopback, start, stop_all, tail,
                                   tool, wait_listening)
from training.train import TrainConfig

__all__ = ["Deployment", "DeploymentError", "TlsFiles", "check_deployment", "launch", "serve"]


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
    authorized_keys: Path | None = None  # authorized.csv: only these sites may join (None = any SuperNode)
    secure_aggregation: bool = False  # SecAgg+: the server sees only the weighted sum of the sites' weights
    keep_rounds: bool = False  # also write each round's global model to OUT/rounds/round-TTT/
    round_timeout: float = 3600.0  # seconds the ServerApp waits for the sites in each phase of a round


def check_deployment(dep: Deployment) -> None:
    """Refuse plain HTTP off loopback, authentication without TLS and missing files."""
    if dep.tls is None and not is_loopback(dep.host):
        raise UsageError(f"refusing an unencrypted deployment on {dep.host}: plain HTTP is for 127.0.0.1 only; "
                         "give --tls-ca, --tls-cert and --tls-key")
    if dep.authorized_keys is not None and dep.tls is None:
        raise UsageError("--authorized-keys needs TLS (Flower authenticates SuperNodes over TLS only): "
                         "give --tls-ca, --tls-cert and --tls-key")
    for f in asdict(dep.tls).values() if dep.tls else ():
        if not Path(f).is_file():
            raise UsageError(f"TLS file {f} not found")


def write_app(work: Path, cfg: TrainConfig, fed: FedConfig, out: Path, command: str,
              dep: Deployment = Deployment()) -> Path:
    """A Flower App folder (pyproject.toml only: the components are imported from this repository)."""
    app = work / "vsrfed"
    app.mkdir(parents=True, exist_ok=True)
    config = {"train": json.dumps(asdict(cfg)), "fed": json.dumps(asdict(fed)), "out": str(out.resolve()),
              "command": command, "round-timeout": dep.round_timeout, "secure-aggregation": dep.secure_aggregation,
              "keep-rounds": dep.keep_rounds}
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
    """FLWR_HOME/config.toml with one SuperLink connection, "vsr", used by `flwr run` and `flwr supernode`."""
    home.mkdir(parents=True, exist_ok=True)
    dial = "127.0.0.1" if dep.host in ("0.0.0.0", "") else "::1" if dep.host == "::" else dep.host
    lines = ["[superlink]", 'default = "vsr"', "", "[superlink.vsr]", f"address = {json.dumps(f'{dial}:{port}')}"]
    if dep.tls is None:
        lines.append("insecure = true")
    else:
        lines.append(f"root-certificates = {json.dumps(str(Path(dep.tls.ca).resolve()))}")
    (home / "config.toml").write_text("\n".join(lines) + "\n")
    return home


def superlink_command(dep: Deployment, port: int) -> list[str]:
    """flower-superlink with the runtime dependency installer off (and SuperNode authentication on when
    the deployment has authorised keys)."""
    cmd = [tool("flower-superlink"), "--host", dep.host, "--port", str(port),
           "--disable-runtime-dependency-installation"]
    if dep.authorized_keys is not None:
        cmd.append("--enable-supernode-auth")
    if dep.tls is None:
        return [*cmd, "--insecure"]
    return [*cmd, "--ssl-ca-certfile", str(Path(dep.tls.ca).resolve()),
            "--ssl-certfile", str(Path(dep.tls.cert).resolve()), "--ssl-keyfile", str(Path(dep.tls.key).resolve())]


def supernode_command(server: str, node_config: dict[str, object], api_port: int, ca: Path | None = None,
                      key: Path | None = None, max_wait: float = 60.0) -> list[str]:
    """flower-supernode dialling ``server`` (HOST:PORT); ``api_port`` is its local ClientApp API (loopback).

    ``ca`` None means plain HTTP; ``key`` is the site's private key for SuperNode authentication.
    """
    node = " ".join(f"{k}={json.dumps(v) if isinstance(v, str) else v}" for k, v in node_config.items())
    cmd = [tool("flower-supernode"), "--superlink", server, "--host", "127.0.0.1", "--port", str(api_port),
           "--node-config", node, "--max-wait-time", str(max_wait)]
    cmd += ["--insecure"] if ca is None else ["--root-certificates", str(Path(ca).resolve())]
    return cmd + (["--auth-supernode-private-key", str(Path(key).resolve())] if key else [])


def register_sites(keys_file: Path, work: Path, env: dict[str, str], log: Callable[[str], None]) -> list[str]:
    """Register every site of ``keys_file`` with the running SuperLink (`flwr supernode register`)."""
    from training.keys import read_authorized

    folder = work / "authorized"
    folder.mkdir(parents=True, exist_ok=True)
    procs = []
    for site in read_authorized(keys_file):
        pub = folder / f"{site.name}.pub"
        pub.write_text(site.public_key + "\n")
        cmd = [tool("flwr"), "supernode", "register", str(pub), "vsr", "--name", site.name]
        procs.append((site.name, start(cmd, folder / f"{site.name}.log", env, log)))
    for name, p in procs:  # in parallel: each flwr CLI call pays a Python start
        if p.wait(timeout=300) != 0:
            raise DeploymentError(f"could not register site {name} with the SuperLink:\n"
                                  f"{tail(folder / f'{name}.log', 6)}")
    return [name for name, _ in procs]


REFUSED = ("[ApiError:2004]", "[ApiError:2001]")  # SuperLink log: activation of an unknown key / self-registration


class RefusalWatcher(threading.Thread):
    """Reports, once each, the SuperNodes the SuperLink refused (keys not registered), from its log."""

    def __init__(self, logfile: Path, log: Callable[[str], None]) -> None:
        super().__init__(daemon=True)
        self.logfile, self.log, self.done, self.refused = logfile, log, threading.Event(), 0

    def run(self) -> None:
        seen = 0
        while not self.done.wait(0.5):
            try:
                lines = self.logfile.read_text(errors="replace").splitlines()
            except OSError:
                continue
            for line in lines[seen:]:
                if any(code in line for code in REFUSED):
                    self.refused += 1
                    self.log(f"serve: refused a site whose key is not in --authorized-keys ({key_hint(line)})")
            seen = len(lines)


def key_hint(line: str) -> str:
    """A short fingerprint of the public key quoted in a SuperLink refusal line, for the operator."""
    import base64
    import hashlib

    start_at, end_at = line.find("-----BEGIN PUBLIC KEY-----"), line.find("-----END PUBLIC KEY-----")
    if start_at < 0 or end_at < 0:
        return "no key shown"
    body = line[start_at + 26:end_at].replace("\\n", "")
    try:
        digest = hashlib.sha256(base64.b64decode(body)).hexdigest()[:16]
    except ValueError:
        return "unreadable key"
    return f"key sha256 {digest}"


STARVED = "task-token authentication failed"  # Flower's words when a task missed its 30 s heartbeat window


def diagnose(work: Path) -> str:
    """Why the run failed, from the process logs (a hint line plus the end of the ServerApp log)."""
    logs = "".join(p.read_text(errors="replace") for p in sorted(work.glob("*.log")))
    hint = ""
    if STARVED in logs:
        hint = ("Flower tasks missed their heartbeat deadlines (fixed at 30 s in flwr): the processes got too "
                "little CPU, e.g. next to higher-priority training jobs. Run when the CPU is available.\n")
    return f"{hint}see {work}/*.log; flwr-run.log ends:\n{tail(work / 'flwr-run.log')}"


def _finished_history(out: Path, fed: FedConfig, started: float, work: Path) -> dict:
    weights, hist = out / "global.safetensors", out / "history.json"
    if not weights.exists() or weights.stat().st_mtime < started or not hist.exists():
        raise DeploymentError(f"the ServerApp did not write {weights}. {diagnose(work)}")
    history = json.loads(hist.read_text())
    if len(history["rounds"]) != fed.rounds:
        raise DeploymentError(f"only {len(history['rounds'])} of {fed.rounds} rounds finished. {diagnose(work)}")
    return history


def serve(
    cfg: TrainConfig, fed: FedConfig, out: Path, dep: Deployment = Deployment(), command: str = "",
    log: Callable[[str], None] = print, local_sites: Callable[[int], list[list[str]]] | None = None,
) -> dict:
    """Run a SuperLink and the ServerApp until ``fed.rounds`` rounds over ``fed.clients`` sites are done.

    Sites join from anywhere (`vsr-train join`); ``local_sites(port)`` gives SuperNode commands to start
    here as well (the one-machine launcher). Outputs: OUT/global.safetensors, history.json, history.png;
    process logs in OUT/flower/. Returns the history.
    """
    check_deployment(dep)
    out = out.resolve()
    work = out / "flower"
    work.mkdir(parents=True, exist_ok=True)
    port = dep.port or free_port(dep.host)
    app = write_app(work, cfg, fed, out, command, dep)
    env = flower_env(write_cli_config(work / "flwr-home", dep, port))
    procs: list[subprocess.Popen] = []
    watcher = RefusalWatcher(work / "superlink.log", log)
    started = time.time()
    try:
        procs.append(start(superlink_command(dep, port), work / "superlink.log", env, log))
        wait_listening(dep.host, port, dep.startup_timeout, procs[0], work / "superlink.log")
        watcher.start()
        if dep.authorized_keys is not None:
            log(f"serve: registered sites {', '.join(register_sites(dep.authorized_keys, work, env, log))}")
        for i, cmd in enumerate(local_sites(port) if local_sites else []):
            procs.append(start(cmd, work / f"supernode-{i}.log", env, log))
        log(f"serve: listening on {dep.host}:{port}; waiting for {fed.clients} sites")
        _flwr_run(app, work, env, dep.run_timeout, log)
        for p in procs:
            if p.poll() is not None:
                raise DeploymentError(f"{Path(str(p.args[0])).name} died with {p.returncode} during the run; "
                                      f"see {work}")
        return _finished_history(out, fed, started, work)
    finally:
        watcher.done.set()
        stop_all(procs)


def _flwr_run(app: Path, work: Path, env: dict[str, str], timeout: float, log: Callable[[str], None]) -> None:
    run_cmd = [tool("flwr"), "run", str(app), "vsr", "--stream"]
    log("$ " + shlex.join(run_cmd) + f"   (progress: tail -f {work / 'flwr-run.log'})")
    with open(work / "flwr-run.log", "wb") as f:
        proc = subprocess.Popen(run_cmd, stdout=f, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                                cwd=work)
        try:
            rc = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise DeploymentError(f"run did not finish within {timeout:.0f} s; stopped it. {diagnose(work)}") from None
        finally:
            stop_all([proc])
    if rc != 0:
        raise DeploymentError(f"flwr run exited with {rc}. {diagnose(work)}")


def launch(
    cfg: TrainConfig, fed: FedConfig, data: Path, out: Path, dep: Deployment = Deployment(), command: str = "",
    log: Callable[[str], None] = print,
) -> dict:
    """`serve` plus ``fed.clients`` SuperNodes on this host, each partitioning ``data`` (an .npz) like the
    in-process runner does (node config ``num-partitions``). Returns the history."""
    dial = "127.0.0.1" if dep.host in ("0.0.0.0", "") else dep.host

    def sites(port: int) -> list[list[str]]:
        cmds = []
        for i in range(fed.clients):
            node: dict[str, object] = {"partition-id": i, "num-partitions": fed.clients, "data": str(data.resolve())}
            if dep.threads:
                node["threads"] = dep.threads
            cmds.append(supernode_command(f"{dial}:{port}", node, free_port("127.0.0.1"),
                                          dep.tls.ca if dep.tls else None, max_wait=dep.startup_timeout))
        return cmds

    return serve(cfg, fed, out, dep, command, log, local_sites=sites)
