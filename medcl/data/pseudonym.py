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
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from medcl.errors import MedclError
from medcl.io import temporary_name

try:  # POSIX advisory locks; without them (Windows) concurrent updates are not serialised
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None  # type: ignore[assignment]

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


PATH_MAP_NAME = "paths.json"
"""The private path map's file name, next to the secret (see :class:`PathMap`)."""
PATH_MAP_LOCK = f".{PATH_MAP_NAME}.lock"
"""The lock file that serialises updates of the path map (see :meth:`PathMap.update`)."""


def source_id(pz: Pseudonymizer, rel: str) -> str:
    """The pseudonymous source reference of a path relative to the ingest root."""
    return pz("source", rel)


class PathMap:
    """The one private map from ``source_id`` to the real source path.

    It lives next to the secret (``<secret dir>/paths.json``), in the same git-ignored folder, and
    is written with mode 0600 like the secret; nothing copies it into a run folder. Re-ingests,
    ``medcl predict --with-source-paths`` and anything that must open a source file read it.

    Args:
        path: The map file (default: next to :func:`secret_path`).
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)

    @classmethod
    def beside(cls, secret: str | os.PathLike[str] | None = None) -> PathMap:
        """The map next to the secret ``secret`` (see :func:`secret_path`)."""
        return cls(secret_path(secret).parent / PATH_MAP_NAME)

    def load(self) -> dict[str, str]:
        """``source_id`` → absolute path (empty when the map does not exist yet).

        Raises:
            MedclError: If the file exists but is not a path map.
        """
        if not self.path.is_file():
            return {}
        try:
            data = json.loads(self.path.read_text())
        except (OSError, ValueError) as exc:
            raise MedclError(f"{self.path}: not a medcl path map ({type(exc).__name__})") from None
        if not isinstance(data, dict):
            raise MedclError(f"{self.path}: not a medcl path map (expected a JSON object)")
        return {str(k): str(v) for k, v in data.items()}

    @contextmanager
    def _locked(self) -> Iterator[None]:
        """Hold the map's exclusive lock (:data:`PATH_MAP_LOCK`, beside it) for the block."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path.with_name(PATH_MAP_LOCK), os.O_RDWR | os.O_CREAT, 0o600)
        try:
            if fcntl is not None:
                fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # releases the lock

    def update(self, entries: dict[str, str]) -> None:
        """Add or replace entries and write the map atomically, owner-only (mode 0600).

        Read, merge and replace happen under an exclusive lock, so that two processes sharing a
        secret (two concurrent ingests) never drop each other's entries: without it, both read
        the old map and the later replace loses the earlier one's additions.
        """
        if not entries:
            return
        with self._locked():
            merged = self.load()
            if all(merged.get(k) == v for k, v in entries.items()):
                return
            merged.update(entries)
            gitignore = self.path.parent / ".gitignore"
            if not gitignore.exists():
                gitignore.write_text("*\n")
            tmp = self.path.with_name(temporary_name(self.path))
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as fh:
                json.dump(dict(sorted(merged.items())), fh, indent=0)
            os.chmod(tmp, 0o600)
            os.replace(tmp, self.path)
