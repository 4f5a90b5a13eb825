"""Which files an ingest reads: argument checks, the walk of SOURCE, and what changed since the
last run (a file whose path, size and modification time are unchanged is not read again)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from medcl.data import cache
from medcl.data.ingest.outputs import log_path, rejects_path
from medcl.data.ingest.rowblock import RowBlock
from medcl.data.manifest import meta_path
from medcl.data.pseudonym import PATH_MAP_LOCK, PATH_MAP_NAME, secret_path
from medcl.errors import MedclError
from medcl.io import is_temporary_of

LABELS_REASON = "the labels CSV given with --labels (not an image)"
"""The reject reason of the labels CSV when it lies inside SOURCE."""

#: One file to read: path relative to the root, size in bytes, modification time (ns).
Task = tuple[str, int, int]


def check_arguments(
    source: Path,
    out: Path,
    labels: str | os.PathLike[str] | None,
    classes: Sequence[str] | None,
    dims: int,
    workers: int,
    size: int | None,
) -> None:
    """Refuse arguments :func:`medcl.data.ingest.ingest` cannot work with (same meaning there).

    Raises:
        MedclError: With a one-line reason naming the option.
    """
    if not source.exists():
        raise MedclError(f"{source}: no such file or folder")
    if dims not in (2, 3):
        raise MedclError(f"--dims must be 2 or 3, not {dims}")
    if workers < 1:
        raise MedclError(f"--workers must be at least 1, not {workers}")
    if size is not None and size < 1:
        raise MedclError(f"--size must be a positive number of pixels, not {size}")
    if out.suffix.lower() != ".csv":
        raise MedclError(f"{out}: the manifest must be a .csv file")
    if labels is not None and not Path(labels).is_file():
        raise MedclError(f"{labels}: labels CSV not found")
    if classes is not None:
        names = [str(c) for c in classes]
        if not names or any(not c.strip() for c in names) or len(set(names)) != len(names):
            raise MedclError(f"--classes must be distinct non-empty names, got {names}")


def own_outputs(out: Path, secret: str | os.PathLike[str] | None) -> set[Path]:
    """Resolved paths of ingest's own outputs, the project secret and path map, never ingested
    (nor their temporaries, :func:`walk`)."""
    key_file = secret_path(secret)
    return {
        p.resolve()
        for p in (
            out,
            meta_path(out),
            rejects_path(out),
            log_path(out),
            key_file,
            key_file.parent / ".gitignore",
            key_file.parent / PATH_MAP_NAME,
            key_file.parent / PATH_MAP_LOCK,
        )
    }


def walk(source: Path, exclude: set[Path], cache_root: Path) -> tuple[list[str], int]:
    """Relative POSIX paths of all regular files, sorted; ingest's own outputs and their
    temporaries (``.NAME.PID.tmp``, :func:`medcl.io.atomic_path`, also one a killed ingest left)
    left out. Also returns how many files were left out."""
    if source.is_file():
        return [source.name], 0
    found: list[str] = []
    own = 0
    names = {p.name for p in exclude}
    for dirpath, dirnames, filenames in os.walk(source, followlinks=False):
        here = Path(dirpath)
        if here.resolve() == cache_root:
            own += sum(len(f) for _, _, f in os.walk(here))
            dirnames[:] = []
            continue
        dirnames.sort()
        for name in filenames:
            p = here / name
            if not p.is_file():
                continue
            if name in names and p.resolve() in exclude:
                own += 1
                continue
            if name.endswith(".tmp") and any(
                is_temporary_of(name, t) and p.resolve().parent == t.parent for t in exclude
            ):
                own += 1
                continue
            found.append(p.relative_to(source).as_posix())
    return sorted(found), own


def partition(
    files: list[str],
    root: Path,
    label_file: Path | None,
    old: cache.IngestState,
    new: cache.IngestState,
    cache_root: Path,
) -> tuple[list[Task], set[str]]:
    """Split files into work ``(rel, size, mtime_ns)`` and unchanged ones (records reused)."""
    todo: list[Task] = []
    unchanged: set[str] = set()
    for rel in files:
        path = root / rel
        if label_file is not None and path.name == label_file.name and path.resolve() == label_file:
            new.files[rel] = cache.FileRecord(0, 0, "", reason=LABELS_REASON)
            continue
        try:
            st = path.stat()
        except OSError as exc:  # vanished or unreadable since the walk
            new.files[rel] = cache.FileRecord(0, 0, "", reason=unreadable_reason(exc))
            continue
        rec = old.files.get(rel)
        if (
            rec is not None
            and rec.size == st.st_size
            and rec.mtime_ns == st.st_mtime_ns
            and cache_present(rec.rows, cache_root)
        ):
            new.files[rel] = rec
            unchanged.add(rel)
        else:
            todo.append((rel, st.st_size, st.st_mtime_ns))
    return todo, unchanged


def cache_present(rows: list[dict] | RowBlock, cache_root: Path) -> bool:
    """Whether the cached array of every row is still there (each shard checked once)."""
    keys = (
        rows.distinct("cache_key") if isinstance(rows, RowBlock) else (r["cache_key"] for r in rows)
    )
    files = {k.partition("#")[0] for k in keys}
    return all(cache.key_present(cache_root, k) for k in files)


def unreadable_reason(exc: OSError) -> str:
    """The reject reason of a file the operating system cannot read (no path, no message)."""
    return f"file cannot be read ({type(exc).__name__})"
