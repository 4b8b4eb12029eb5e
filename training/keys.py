"""Trial credentials for a federation (`vsr-train keys`) and the authorised-sites list `serve` reads.

`make_keys` writes a throwaway CA, a server certificate and key, and one SuperNode key pair per site
(EC P-384 in OpenSSH format, as Flower's SuperNode authentication expects), plus ``authorized.csv``.
Real deployments bring their own CA and keys; only the CSV format matters to `serve`:

    site,public_key
    site-1,ecdsa-sha2-nistp384 AAAA...

one line per site that may join; the name is what the SuperLink registers the key under.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import re
from dataclasses import dataclass
from pathlib import Path

from engine.errors import InputError, OutputError, UsageError

CSV_HEADER = "site,public_key"
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")  # site names: safe as file names and Flower node names
CERT_DAYS = 30  # lifetime of the trial certificates


@dataclass(frozen=True)
class Site:
    """One authorised site of ``authorized.csv``."""

    name: str  # the site's name (registered with the SuperLink)
    public_key: str  # its OpenSSH public key line ("ecdsa-sha2-nistp384 AAAA...")


def read_authorized(path: Path) -> list[Site]:
    """The sites of an ``authorized.csv``; a missing or malformed file raises with the line at fault."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    if not Path(path).is_file():
        raise InputError(f"authorized keys file {path} not found (vsr-train keys writes one)")
    sites: list[Site] = []
    for n, line in enumerate(Path(path).read_text().splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#") or line.replace(" ", "") == CSV_HEADER:
            continue
        name, _, key = (part.strip() for part in line.partition(","))
        try:
            if not NAME.match(name):
                raise ValueError(f"site name {name!r} must be letters, digits, '.', '_' or '-'")
            if not isinstance(serialization.load_ssh_public_key(key.encode()), ec.EllipticCurvePublicKey):
                raise ValueError("not an EC public key")
        except (ValueError, TypeError) as err:
            raise UsageError(f"{path} line {n}: expected 'site,ecdsa-sha2-nistp384 AAAA...': {err}") from None
        sites.append(Site(name, key))
    if not sites:
        raise UsageError(f"{path} lists no sites; expected lines 'site,ecdsa-sha2-nistp384 AAAA...'")
    if len({s.name for s in sites}) != len(sites) or len({s.public_key for s in sites}) != len(sites):
        raise UsageError(f"{path} lists a site name or a key twice")
    return sites


def _cert(subject: str, key, issuer: str, signer, ca: bool, names: tuple[str, ...] = ()):
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.timezone.utc)
    b = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
         .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)])).public_key(key.public_key())
         .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
         .not_valid_after(now + datetime.timedelta(days=CERT_DAYS))
         .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if not ca:
        sans = [x509.IPAddress(ipaddress.ip_address(n)) if _is_ip(n) else x509.DNSName(n) for n in names]
        b = (b.add_extension(x509.SubjectAlternativeName(sans), critical=False)
             .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False))
    return b.sign(signer, hashes.SHA256())


def _is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
        return True
    except ValueError:
        return False


def _write(path: Path, data: bytes, private: bool = False) -> None:
    """Write via a temporary name; private files are created 0600."""
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600 if private else 0o644)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    tmp.replace(path)


def make_keys(out: Path, sites: int, authorize: int | None = None, names: tuple[str, ...] = (),
              overwrite: bool = False) -> list[Path]:
    """Write ca.pem, server.pem, server.key, site-k.key/.pub (k = 1..sites) and authorized.csv into ``out``.

    ``authorize`` sites (default all) are listed in authorized.csv; ``names`` are extra host names or
    addresses the server certificate covers besides 127.0.0.1, ::1 and localhost.
    """
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    authorize = sites if authorize is None else authorize
    if sites < 1 or not 0 <= authorize <= sites:
        raise UsageError(f"need --sites >= 1 and 0 <= --authorize <= --sites (got {sites}, {authorize})")
    out = Path(out)
    files = [out / "ca.pem", out / "server.pem", out / "server.key", out / "authorized.csv"]
    files += [out / f"site-{k}.{ext}" for k in range(1, sites + 1) for ext in ("key", "pub")]
    if not overwrite and (clash := [f for f in files if f.exists()]):
        raise OutputError(f"{clash[0]} exists; pass -y to overwrite the keys in {out}")
    out.mkdir(parents=True, exist_ok=True)
    pem, ssh = serialization.Encoding.PEM, serialization.Encoding.OpenSSH
    ca_key, server_key = ec.generate_private_key(ec.SECP384R1()), ec.generate_private_key(ec.SECP384R1())
    hosts = tuple(dict.fromkeys(("127.0.0.1", "::1", "localhost", *names)))
    _write(files[0], _cert("vsr-upscale trial CA", ca_key, "vsr-upscale trial CA", ca_key, True).public_bytes(pem))
    _write(files[1], _cert(hosts[-1] if names else "127.0.0.1", server_key, "vsr-upscale trial CA", ca_key, False,
                           hosts).public_bytes(pem))
    _write(files[2], server_key.private_bytes(pem, serialization.PrivateFormat.PKCS8,
                                              serialization.NoEncryption()), private=True)
    lines = [CSV_HEADER]
    for k in range(1, sites + 1):
        key = ec.generate_private_key(ec.SECP384R1())
        public = key.public_key().public_bytes(ssh, serialization.PublicFormat.OpenSSH).decode()
        _write(out / f"site-{k}.key", key.private_bytes(pem, serialization.PrivateFormat.OpenSSH,
                                                         serialization.NoEncryption()), private=True)
        _write(out / f"site-{k}.pub", (public + f" site-{k}\n").encode())
        if k <= authorize:
            lines.append(f"site-{k},{public}")
    _write(files[3], ("\n".join(lines) + "\n").encode())
    return files
