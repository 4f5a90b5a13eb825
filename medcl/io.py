"""Atomic file writes: a reader never sees a half-written file, a kill never leaves one.

Every writer of a run output goes through this module.

- Files: :func:`atomic_path` yields a temporary path beside the target (same folder, hence same
  file system); when the block ends without error the temporary file replaces the target with
  one :func:`os.replace`, else it is removed and the target is left as it was. :func:`write_text`
  and :func:`write_json` (the JSON writer of the package: results, metrics, summaries, model
  metadata) are built on it.
- Folders (the model folder): :func:`atomic_dir` yields an empty temporary sibling folder; when
  the block ends without error it takes the target's place. Chosen over "each file atomically,
  ``metadata.json`` last" because a model is several files that must match each other (weights,
  metadata, card, the embedding bank): per-file writes killed half-way would pair new weights
  with old metadata, a model that loads and predicts wrongly. POSIX cannot rename a folder onto
  a non-empty one, so an existing target is first renamed aside, the new folder renamed in, and
  the old one deleted: a kill between the two renames leaves no model at the target (it then
  fails to load with a clear error, it is never a mix) and the previous one intact beside it as
  ``.NAME.old``, which :func:`atomic_dir` puts back on its next call if the target is missing.

Temporary names start with ``.`` and end with ``.tmp``; they carry the process id, so several
processes writing the same target never write into each other's file. Temporaries left by a
killed process are removed by the next :func:`atomic_dir` of the same target.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np


def temporary_name(path: str | os.PathLike[str], pid: int | None = None) -> str:
    """The name of this process's temporary file for the target ``path``: ``.NAME.PID.tmp``."""
    return f".{Path(path).name}.{os.getpid() if pid is None else pid}.tmp"


def is_temporary_of(name: str, target: str | os.PathLike[str]) -> bool:
    """Whether the file name ``name`` is a temporary of ``target`` (any process's, e.g. one a
    killed writer left behind)."""
    head = f".{Path(target).name}."
    pid = name[len(head) : -len(".tmp")] if name.startswith(head) else ""
    return name.endswith(".tmp") and pid.isdigit()


@contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """A temporary path to write to; it replaces ``path`` when the block ends without error.

    Parent folders are created. On error the temporary file is removed and ``path`` keeps its
    previous content (or stays absent).

    Args:
        path: The target file.

    Yields:
        The temporary path (in the target's folder).
    """
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(temporary_name(p))
    try:
        yield tmp
        os.replace(tmp, p)
    finally:
        tmp.unlink(missing_ok=True)


@contextmanager
def atomic_dir(path: str | os.PathLike[str]) -> Iterator[Path]:
    """An empty temporary folder to fill; it takes the place of folder ``path`` on success.

    Whatever ``path`` held before is replaced as a whole (files not written again are gone). On
    error the temporary folder is removed and ``path`` is left as it was. See the module
    docstring for the one window (between two renames) a kill can hit and how it is repaired.

    Args:
        path: The target folder.

    Yields:
        The temporary folder (a sibling of the target).
    """
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    old = p.with_name(f".{p.name}.old")
    if old.is_dir() and not p.exists():
        os.replace(old, p)  # a previous swap was killed between its two renames
    for stale in p.parent.glob(f".{p.name}.*.tmp"):
        shutil.rmtree(stale, ignore_errors=True)  # left by a killed writer
    tmp = p.with_name(f".{p.name}.{os.getpid()}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        yield tmp
        if p.exists():
            shutil.rmtree(old, ignore_errors=True)
            os.replace(p, old)
            os.replace(tmp, p)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, p)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def write_text(text: str, path: str | os.PathLike[str]) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.
    """
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as fh:
        fh.write(text)
    return Path(path)


def write_json(obj: Any, path: str | os.PathLike[str], **dumps: Any) -> Path:
    """Write ``obj`` as JSON atomically; numpy scalars and arrays become plain values.

    Other values JSON cannot represent are written as their ``str``. The text is built in memory
    first (the C encoder: about 5x faster than streaming, which matters for a large cache
    state), then written through :func:`write_text`; a write that fails half-way leaves ``path``
    as it was.

    Args:
        obj: The value.
        path: The target file.
        **dumps: Options for :func:`json.dumps` (default ``indent=2``, with a final newline;
            ``indent=None, separators=(",", ":")`` for a compact file without one).

    Returns:
        ``path`` as a :class:`~pathlib.Path`.
    """
    opts: dict[str, Any] = {"indent": 2, "default": _plain, **dumps}
    text = json.dumps(obj, **opts)
    return write_text(text + "\n" if opts["indent"] is not None else text, path)


def _plain(o: Any) -> Any:
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    return str(o)
