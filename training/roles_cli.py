"""`vsr-train serve | join | keys`: the roles of a multi-site federation (docs/federated.md).

Every error is one line, ``vsr-train <role>: error: ...``, with the exit code of its kind:
2 bad options, 3 missing files, 5 output exists (pass -y), 9 Flower deployment failure,
11 this site was refused by the server (key not authorised), 130 interrupted.
"""

from __future__ import annotations

import argparse
import shlex
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import NoReturn


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors (exit 2), like every other error of these commands."""

    def error(self, message: str) -> NoReturn:
        print(f"{self.prog}: error: {message}", file=sys.stderr)
        sys.exit(2)


def _run(role: str, body: Callable[[], str]) -> int:
    """Run ``body`` with SIGTERM turned into a clean stop; map exceptions to one line and an exit code."""
    from engine.errors import VsrError
    from training.cli import exit_code

    def stop(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, stop)  # so `finally` blocks stop the Flower processes
    try:
        print(body())
        return 0
    except KeyboardInterrupt:
        print(f"vsr-train {role}: interrupted", file=sys.stderr)
        return 130
    except (VsrError, ValueError, LookupError, OSError, RuntimeError, ArithmeticError) as err:
        print(f"vsr-train {role}: error: {' '.join(str(err).split()) or type(err).__name__}", file=sys.stderr)
        return exit_code(err)
    finally:
        signal.signal(signal.SIGTERM, previous)


def serve_parser() -> argparse.ArgumentParser:
    from training.cli import add_round_args, add_train_args
    from training.strategies import STRATEGIES

    p = _Parser(prog="vsr-train serve", description="Run the federation's server: a Flower SuperLink and the "
                "ServerApp; sites connect with `vsr-train join`. Writes OUT/global.safetensors and history.json.")
    add_train_args(p)
    g = p.add_argument_group("federation")
    g.add_argument("--strategy", choices=list(STRATEGIES), default="fedvsr", help="aggregation rule")
    g.add_argument("--rounds", type=int, default=20, help="communication rounds")
    g.add_argument("--min-sites", type=int, default=2, help="sites that must be connected before each round")
    g.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0: all; TLS required off loopback)")
    g.add_argument("--port", type=int, default=9093, help="SuperLink port (Fleet, Control and Runtime APIs)")
    g.add_argument("--tls-cert", type=Path, help="server certificate (PEM); its SANs must cover the address sites dial")
    g.add_argument("--tls-key", type=Path, help="server private key (PEM)")
    g.add_argument("--tls-ca", type=Path, help="CA certificate (PEM) that signed --tls-cert")
    g.add_argument("--authorized-keys", type=Path, help="authorized.csv: only these sites may join (needs TLS; "
                   "without --tls-* the ca.pem, server.pem and server.key beside it are used)")
    g.add_argument("--secure-aggregation", action="store_true",
                   help="SecAgg+: the server learns each site's loss and size, never its weights")
    add_round_args(g)
    g.add_argument("--keep-rounds", action="store_true", help="also write each round's global model to "
                   "OUT/rounds/round-TTT/global.safetensors")
    g.add_argument("--round-timeout", type=float, default=3600.0, help="seconds to wait for sites in a round")
    return p


def _tls(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    """The TLS files given, or those of the `vsr-train keys` folder holding --authorized-keys."""
    from engine.errors import UsageError
    from training.flower_run import TlsFiles

    given = (args.tls_ca, args.tls_cert, args.tls_key)
    if any(given) and not all(given):
        raise UsageError("TLS needs all three of --tls-ca, --tls-cert and --tls-key")
    if all(given):
        return TlsFiles(*given)
    if args.authorized_keys is not None:
        folder = Path(args.authorized_keys).parent
        beside = TlsFiles(folder / "ca.pem", folder / "server.pem", folder / "server.key")
        if all(Path(f).is_file() for f in (beside.ca, beside.cert, beside.key)):
            return beside
    return None


def serve_main(argv: list[str]) -> int:
    args = serve_parser().parse_args(argv)

    def body() -> str:
        from dataclasses import replace

        from training.cli import train_config
        from training.federated import FedConfig, check_configs
        from training.flower_run import Deployment, serve

        given = {k: v for k, v in vars(args).items() if k in FedConfig.__dataclass_fields__ and v is not None}
        given.update(clients=args.min_sites, eval_dir=str(Path(args.eval_dir).resolve()))
        fed = replace(FedConfig(), **given)
        cfg = train_config(args)
        check_configs(cfg, fed)
        if args.secure_aggregation and (fed.strategy == "fedmedian" or args.min_sites < 2):
            raise ValueError("--secure-aggregation needs a weighted-sum strategy (not fedmedian) and --min-sites >= 2")
        dep = Deployment(host=args.host, port=args.port, tls=_tls(args), threads=args.threads,
                         authorized_keys=args.authorized_keys, secure_aggregation=args.secure_aggregation,
                         keep_rounds=args.keep_rounds, round_timeout=args.round_timeout, startup_timeout=300.0,
                         run_timeout=max(3600.0 * 24, args.round_timeout * fed.rounds))
        command = "vsr-train serve " + " ".join(shlex.quote(a) for a in argv)
        serve(cfg, fed, args.out, dep, command)
        return f"weights: {args.out / 'global.safetensors'}"

    return _run("serve", body)


def join_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="vsr-train join", description="Take part in a federation as one site, training only on "
                "the videos and images in --data (DIR/video/*.mp4, DIR/images/<set>/*.png).")
    p.add_argument("--server", required=True, help="the server's HOST:PORT")
    p.add_argument("--data", required=True, type=Path, help="this site's media folder (or an .npz of sequences)")
    p.add_argument("--tls-ca", type=Path, help="CA certificate of the server (default: ca.pem beside --key, if any)")
    p.add_argument("--key", type=Path, help="this site's private key (site-N.key from `vsr-train keys`)")
    p.add_argument("--local-steps", type=int, help="cap on this site's optimiser steps per round")
    p.add_argument("--site-id", type=int, help="this site's id in the server's history (default: Flower's node id)")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch default)")
    p.add_argument("--cache-dir", type=Path, default=Path("cache"), help="where the sequence cache and logs go")
    p.add_argument("--reconnect-timeout", type=float, default=60.0,
                   help="seconds the server may be unreachable before this site stops (the end of a run)")
    return p


def join_main(argv: list[str]) -> int:
    args = join_parser().parse_args(argv)

    def body() -> str:
        from training.flower_join import Site, join

        ca = args.tls_ca
        if ca is None and args.key is not None and (Path(args.key).parent / "ca.pem").is_file():
            ca = Path(args.key).parent / "ca.pem"
        if (args.local_steps is not None and args.local_steps < 0) or args.reconnect_timeout <= 0:
            raise ValueError("--local-steps must be >= 0 and --reconnect-timeout > 0")
        site = Site(server=args.server, data=args.data, tls_ca=ca, key=args.key, local_steps=args.local_steps,
                    site_id=args.site_id, threads=args.threads, cache_dir=args.cache_dir,
                    reconnect_timeout=args.reconnect_timeout)
        return f"rounds trained: {join(site)}"

    return _run("join", body)


def keys_main(argv: list[str]) -> int:
    p = _Parser(prog="vsr-train keys", description="Trial credentials: a CA, a server certificate and key, one "
                "key pair per site and authorized.csv (real deployments bring their own).")
    p.add_argument("--out", required=True, type=Path, help="folder for the files")
    p.add_argument("--sites", required=True, type=int, help="key pairs to make (site-1 ... site-K)")
    p.add_argument("--authorize", type=int, help="list the first N sites in authorized.csv (default: all)")
    p.add_argument("--server-name", action="append", default=[], metavar="NAME",
                   help="host name or address the server certificate also covers (repeatable)")
    p.add_argument("-y", "--yes", action="store_true", help="overwrite existing files in --out")
    args = p.parse_args(argv)

    def body() -> str:
        from training.keys import make_keys

        files = make_keys(args.out, args.sites, args.authorize, tuple(args.server_name), overwrite=args.yes)
        return f"wrote {len(files)} files to {args.out} (authorized: {args.out / 'authorized.csv'})"

    return _run("keys", body)
