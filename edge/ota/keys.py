"""Ed25519 key pairs for signing model updates.

The private key stays on the machine that pushes updates (written 0600); the
public key goes into each device's agent config (``ota.public_keys``).
"""

from __future__ import annotations

import base64
import os
from pathlib import Path
from typing import Any

from edge.digest import sha256_hex
from edge.errors import EdgeError


class SigningUnavailableError(EdgeError):
    """``cryptography`` is not installed."""


def crypto() -> Any:
    """The ``cryptography`` Ed25519 and serialization modules, with an actionable error when missing."""
    try:
        from cryptography.exceptions import InvalidSignature
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import ed25519
    except ImportError as exc:
        raise SigningUnavailableError(
            f"signed model updates need the 'cryptography' package, which is not importable ({exc})",
            "pip install 'edge-ml-toolkit[signing]' (or pip install cryptography)",
        ) from exc

    class _Crypto:
        pass

    c = _Crypto()
    c.serialization = serialization  # type: ignore[attr-defined]
    c.ed25519 = ed25519  # type: ignore[attr-defined]
    c.InvalidSignature = InvalidSignature  # type: ignore[attr-defined]
    return c


def _write_private(path: Path, data: bytes, overwrite: bool) -> None:
    flags = os.O_WRONLY | os.O_CREAT | (os.O_TRUNC if overwrite else os.O_EXCL)
    try:
        fd = os.open(path, flags, 0o600)
    except FileExistsError as exc:
        raise EdgeError(
            f"{path} already exists: refusing to overwrite a signing key",
            "pick another --out, or pass --force if you really mean to replace it",
        ) from exc
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.chmod(path, 0o600)  # O_CREAT's mode is masked by umask and ignored for existing files


def generate_keypair(
    private_path: str | Path, public_path: str | Path | None = None, *, overwrite: bool = False
) -> tuple[Path, Path, str]:
    """Write a new private key (PEM, 0600) and its public key; return (private, public, key id)."""
    c = crypto()
    private_path = Path(private_path)
    public_path = Path(public_path) if public_path else private_path.with_suffix(".pub")
    if private_path.resolve() == public_path.resolve():
        raise EdgeError(
            f"private and public key paths are the same: {private_path}",
            "give the public key another name (default: <private>.pub)",
        )
    private_path.parent.mkdir(parents=True, exist_ok=True)
    key = c.ed25519.Ed25519PrivateKey.generate()
    s = c.serialization
    _write_private(
        private_path, key.private_bytes(s.Encoding.PEM, s.PrivateFormat.PKCS8, s.NoEncryption()), overwrite
    )
    public_pem = key.public_key().public_bytes(s.Encoding.PEM, s.PublicFormat.SubjectPublicKeyInfo)
    public_path.write_bytes(public_pem)
    return private_path, public_path, key_id(key.public_key())


def key_id(public_key: Any) -> str:
    """Short fingerprint of a public key (sha256 of its raw bytes, 16 hex digits)."""
    s = crypto().serialization
    raw = public_key.public_bytes(s.Encoding.Raw, s.PublicFormat.Raw)
    return sha256_hex(raw)[:16]


def load_private_key(path: str | Path) -> Any:
    c = crypto()
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise EdgeError(
            f"cannot read the signing key {path}: {exc.strerror}",
            "create one with: edge-flash keygen --out " + str(path),
        ) from exc
    if b"PUBLIC KEY" in data:  # before the mode check: "chmod 600 update.pub" would be the wrong advice
        private = path.with_suffix(".key")
        raise EdgeError(
            f"{path} is a public key; signing needs the private key",
            "pass the private key written by edge-flash keygen"
            + (f" ({private})" if private != path and private.is_file() else "")
            + "; the .pub file goes to the devices (--update-key / ota.public_keys)",
        )
    mode = path.stat().st_mode & 0o077
    if mode:
        raise EdgeError(
            f"signing key {path} is readable by others (mode {oct(path.stat().st_mode & 0o777)})",
            f"chmod 600 {path}",
        )
    try:
        key = c.serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise EdgeError(
            f"{path} is not an unencrypted PEM private key ({exc})",
            "pass the private key written by edge-flash keygen",
        ) from exc
    if not isinstance(key, c.ed25519.Ed25519PrivateKey):
        raise EdgeError(
            f"{path} holds a {type(key).__name__}, expected an Ed25519 private key",
            "create one with edge-flash keygen",
        )
    return key


def parse_public_key(text: str | bytes) -> Any:
    """A public key from PEM text, or from the base64 of its 32 raw bytes (handy in a config file)."""
    c = crypto()
    data = text.encode() if isinstance(text, str) else text
    try:
        if b"BEGIN" in data:
            key = c.serialization.load_pem_public_key(data)
        else:
            key = c.ed25519.Ed25519PublicKey.from_public_bytes(base64.b64decode(data.strip(), validate=True))
    except (ValueError, TypeError) as exc:
        raise EdgeError(
            f"not an Ed25519 public key ({exc})",
            "use the .pub file written by edge-flash keygen (PEM) or its raw base64",
        ) from exc
    if not isinstance(key, c.ed25519.Ed25519PublicKey):
        raise EdgeError(
            f"public key is a {type(key).__name__}, expected Ed25519", "use edge-flash keygen keys"
        )
    return key


def load_public_key(path_or_text: str | Path) -> Any:
    """A public key from a file path, or PEM/base64 text given inline."""
    text = str(path_or_text)
    if "BEGIN" in text or (len(text) == 44 and text.endswith("=")):
        return parse_public_key(text)
    path = Path(text)
    try:
        return parse_public_key(path.read_bytes())
    except OSError as exc:
        raise EdgeError(
            f"cannot read the update public key {path}: {exc.strerror}",
            "set ota.public_keys to the .pub file written by edge-flash keygen",
        ) from exc
