"""Atomic file writes: a reader never sees a half-written file.

Every writer goes through :func:`atomic_path`: the content is written to a temporary file beside
the target (same folder, hence same file system), which then replaces the target with one
:func:`os.replace`. A failed write removes the temporary file and leaves the target as it was.
:func:`write_json` is the JSON writer of the package (results, summaries, model metadata).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np


@contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """A temporary path to write to; it replaces ``path`` when the block ends without error.

    Parent folders are created. The temporary name carries the process id, so that several
    processes writing the same target do not write into each other's file.

    Args:
        path: The target file.

    Yields:
        The temporary path (in the target's folder).
    """
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(f".{p.name}.{os.getpid()}.tmp")
    try:
        yield tmp
        os.replace(tmp, p)
    finally:
        tmp.unlink(missing_ok=True)


def write_text(text: str, path: str | os.PathLike[str]) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.
    """
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def write_json(obj: Any, path: str | os.PathLike[str]) -> Path:
    """Write ``obj`` as indented JSON atomically; numpy scalars and arrays become plain values.

    Other values JSON cannot represent are written as their ``str``.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.
    """
    return write_text(json.dumps(obj, indent=2, default=_plain) + "\n", path)


def _plain(o: Any) -> Any:
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    return str(o)
