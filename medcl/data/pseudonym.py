"""Keyed pseudonyms for patient, study and image identifiers.

Identifiers from DICOM headers (PatientID, StudyInstanceUID, SOPInstanceUID, …) are protected health
information or can be linked to it. medcl never writes them: it writes
``HMAC-SHA256(secret, namespace || value)`` truncated to 16 hex characters. The secret lives in a
per-project file (``.medcl/secret.key`` by default, git-ignored), created on first use with
``os.urandom`` and readable only by its owner. Without the secret the pseudonyms cannot be reversed
or recomputed from a guessed identifier (unlike a plain hash of a medical record number).
"""

from __future__ import annotations

import hashlib
import hmac
import os
from pathlib import Path

from medcl.errors import MedclError

DEFAULT_SECRET_PATH = Path(".medcl") / "secret.key"
SECRET_ENV = "MEDCL_SECRET_FILE"
_KEY_BYTES = 32


def secret_path(explicit: str | os.PathLike[str] | None = None) -> Path:
    """Where the project secret lives: ``explicit``, else ``$MEDCL_SECRET_FILE``, else
    ``.medcl/secret.key``."""
    if explicit is not None:
        return Path(explicit)
    env = os.environ.get(SECRET_ENV)
    return Path(env) if env else DEFAULT_SECRET_PATH


def load_or_create_secret(path: str | os.PathLike[str] | None = None) -> bytes:
    """Read the project secret, creating it (mode 0600) on first use.

    Args:
        path: Secret file; see :func:`secret_path` for the default.

    Returns:
        The 32-byte key.

    Raises:
        MedclError: If the file exists but is not a valid key.
    """
    p = secret_path(path)
    if p.exists():
        key = p.read_bytes().strip()
        try:
            raw = bytes.fromhex(key.decode("ascii"))
        except ValueError as exc:
            raise MedclError(
                f"{p}: not a medcl secret key (expected {_KEY_BYTES * 2} hex digits)"
            ) from exc
        if len(raw) != _KEY_BYTES:
            raise MedclError(f"{p}: not a medcl secret key (expected {_KEY_BYTES * 2} hex digits)")
        return raw
    p.parent.mkdir(parents=True, exist_ok=True)
    raw = os.urandom(_KEY_BYTES)
    fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(raw.hex() + "\n")
    gitignore = p.parent / ".gitignore"
    if not gitignore.exists():
        gitignore.write_text("*\n")
    return raw


class Pseudonymizer:
    """Maps identifiers to stable keyed pseudonyms.

    Args:
        secret: The project key (see :func:`load_or_create_secret`).
        length: Hex characters kept from the HMAC-SHA256 digest (16 = 64 bits).
    """

    def __init__(self, secret: bytes, length: int = 16) -> None:
        self._secret = secret
        self._length = length

    def __call__(self, namespace: str, value: str) -> str:
        """Pseudonym of ``value`` within ``namespace`` (``"patient"``, ``"study"``, ``"image"``)."""
        msg = f"{namespace}\x00{value}".encode()
        return hmac.new(self._secret, msg, hashlib.sha256).hexdigest()[: self._length]
