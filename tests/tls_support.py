"""Throw-away certificates for TLS tests, made with the openssl command (never committed)."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Pair:
    """A self-signed certificate and its key, as PEM files."""

    cert: Path
    key: Path


def make_pair(
    folder: Path, name: str, hosts: tuple[str, ...] = ("localhost",), ip: str = "127.0.0.1"
) -> Pair:
    """A self-signed pair for `hosts` (and `ip`) in folder/<name>.crt and folder/<name>.key."""
    folder.mkdir(parents=True, exist_ok=True)
    cert, key = folder / f"{name}.crt", folder / f"{name}.key"
    alt = ",".join([f"DNS:{h}" for h in hosts] + [f"IP:{ip}"])
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            str(key),
            "-out",
            str(cert),
            "-days",
            "2",
            "-subj",
            f"/CN={hosts[0]}",
            "-addext",
            f"subjectAltName={alt}",
        ],
        check=True,
        capture_output=True,
        timeout=30,
    )
    return Pair(cert, key)


def subject_of(pem: bytes) -> str:
    """The subject line of a PEM certificate (as openssl prints it)."""
    out = subprocess.run(
        ["openssl", "x509", "-noout", "-subject"], input=pem, check=True, capture_output=True, timeout=30
    )
    return out.stdout.decode().strip()
