"""One site's side of a federation (`vsr-train join`): its own data folder, its key, one SuperNode.

The site's videos and images (``DIR/video/*.mp4``, ``DIR/images/<set>/*.png``, the layout of
../shared/data/train) are cut once into a local sequence cache; the SuperNode's ClientApps train on
it with the same sampler and degradations as every other runner. Nothing but weights (or, with
secure aggregation, masked weighted weights) and the scalar loss and example count leaves the site.
`join` returns when the server has finished (it stops answering) and says how many rounds it trained.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from engine.errors import InputError, UsageError
from training.flower_procs import (DeploymentError, SiteRefusedError, flower_env, free_port, is_loopback, start,
                                   stop_all, tail)
from training.flower_run import supernode_command

REFUSED_KEY = "[code: 2004]"  # SuperNode log: the SuperLink knows no site with this public key
NEEDS_KEY = "[code: 2001]"  # SuperNode log: the SuperLink only admits registered keys; none was given
CONNECTED = "SuperNode ID:"  # SuperNode log: activated with the SuperLink
SERVER_GONE = "Giving up reconnection"  # SuperNode log: the SuperLink stopped answering


@dataclass(frozen=True)
class Site:
    """A site joining a federation."""

    server: str  # the SuperLink's HOST:PORT
    data: Path  # the site's media folder (video/, images/<set>/) or an .npz of uint8 sequences
    tls_ca: Path | None = None  # CA certificate of the server's TLS certificate (None: plain HTTP, loopback only)
    key: Path | None = None  # the site's private key (OpenSSH EC), for servers that only admit known sites
    local_steps: int | None = None  # this site's cap on optimiser steps per round (None: the server's)
    site_id: int | None = None  # the site's id in the server's history (None: its Flower node id)
    threads: int = 0  # torch CPU threads per local round (0 = torch default)
    cache_dir: Path = Path("cache")  # where the site's sequence cache and logs go
    connect_timeout: float = 600.0  # seconds to get admitted by the server
    reconnect_timeout: float = 60.0  # seconds the server may be unreachable before the site stops


def parse_server(server: str) -> tuple[str, int]:
    """HOST:PORT (IPv6 as [::1]:PORT) -> (host, port)."""
    host, sep, port = server.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise UsageError(f"--server {server!r}: expected HOST:PORT, e.g. 127.0.0.1:9093")
    return host, int(port)


def site_sequences(data: Path, cache_dir: Path, log: Callable[[str], None] = print) -> Path:
    """The .npz of the site's training sequences: ``data`` itself, or the cache built from its media."""
    from training.data import DataConfig, build_cache, list_sources

    data = Path(data)
    if data.is_file() and data.suffix == ".npz":
        return data.resolve()
    if not data.is_dir():
        raise InputError(f"--data {data} is neither a folder of videos and images nor an .npz file")
    if not list_sources(data):
        raise InputError(f"--data {data} holds no training media: expected {data}/video/*.mp4 (or .mkv, .mov, "
                         f".webm) and/or {data}/images/<set>/*.png (or .jpg, .webp)")
    return build_cache(DataConfig(root=str(data.resolve()), frames=7, seed=0), cache_dir, log=log).resolve()


def check_site(site: Site) -> tuple[str, int]:
    """Refuse plain HTTP off loopback and missing credential files before starting anything."""
    host, port = parse_server(site.server)
    if site.tls_ca is None and not is_loopback(host):
        raise UsageError(f"refusing plain HTTP to {host}: give --tls-ca (the server's CA certificate)")
    for f in (site.tls_ca, site.key):
        if f is not None and not Path(f).is_file():
            raise InputError(f"{f} not found")
    return host, port


def join(site: Site, log: Callable[[str], None] = print) -> int:
    """Run this site's SuperNode until the server finishes; returns the number of rounds it trained."""
    check_site(site)
    seqs = site_sequences(site.data, site.cache_dir, log)
    work = Path(site.cache_dir).resolve() / f"join-{os.getpid()}"
    work.mkdir(parents=True, exist_ok=True)
    status = work / "rounds.txt"
    status.write_text("")
    node: dict[str, object] = {"data": str(seqs), "num-partitions": 0, "status": str(status)}
    for key, value in (("partition-id", site.site_id), ("local-steps", site.local_steps),
                       ("threads", site.threads or None)):
        if value is not None:
            node[key] = value
    cmd = supernode_command(site.server, node, free_port("127.0.0.1"), site.tls_ca, site.key,
                            max_wait=site.reconnect_timeout)
    proc = start(cmd, work / "supernode.log", flower_env(work / "flwr-home"), log)
    try:
        return _watch(proc, site, work / "supernode.log", status, log)
    finally:
        stop_all([proc])


def _watch(proc: subprocess.Popen, site: Site, logfile: Path, status: Path, log: Callable[[str], None]) -> int:
    """Follow the SuperNode until it is refused, fails, or the server goes away after the run."""
    deadline, connected = time.monotonic() + site.connect_timeout, False
    while True:
        time.sleep(0.5)
        text = logfile.read_text(errors="replace") if logfile.exists() else ""
        rounds = len(status.read_text().splitlines()) if status.exists() else 0
        if not connected and CONNECTED in text:
            connected = True
            log(f"join: admitted by {site.server}; waiting for rounds (log: {logfile})")
        if REFUSED_KEY in text:
            raise SiteRefusedError(f"the server at {site.server} refused this site: its key "
                                   f"{site.key} is not authorised there (send the operator its public half)")
        if NEEDS_KEY in text:
            raise SiteRefusedError(f"the server at {site.server} admits authorised sites only: pass --key")
        if SERVER_GONE in text or proc.poll() is not None:
            if connected and rounds:
                log(f"join: the server closed after {rounds} round(s) of local training; done")
                return rounds
            why = f"exited with {proc.returncode}" if proc.poll() is not None else "lost the server"
            raise DeploymentError(f"the SuperNode {why} before this site trained a round: {tail(logfile, 4)}")
        if not connected and time.monotonic() > deadline:
            raise DeploymentError(f"not admitted by {site.server} within {site.connect_timeout:.0f} s: "
                                  f"{tail(logfile, 4)}")
