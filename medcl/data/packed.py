"""Row access to large ``.npy`` files without holding them: shards and packed arrays.

Two kinds of file hold many cached images each (:mod:`medcl.data.cache`):

* **shards**, written by ingest for array inputs (MedMNIST ``.npz``): ``(n, 1, H, W)`` float32,
  one per chunk of a file's split; a manifest row names its image as ``<shard>.npy#<row>``;
* **packed arrays**, written by the streamed dataset (:mod:`medcl.data.dataset`) for one list of
  rows at one image size: ``name.cache/packed/<size>/<digest>.npy`` of shape ``(N, 1, s, s)`` (or
  ``(N, 1, s, s, s)``), row ``i`` = the ``i``-th row of the list, resized. ``digest`` is the
  SHA-256 of the ordered cache keys, the size, the dimensions and the ingest settings
  (:func:`pack_digest`), so the file is reused as long as the rows are the same and rebuilt (under
  another name) when they change. A JSON index ``<digest>.json`` next to it records how it was
  made.

:class:`ArrayFile` reads rows with ``os.pread`` from the data offset of the ``.npy`` header: no
memory map, so reading a row costs one system call and the process' resident memory does not grow
with the pages it has read (they stay in the operating system's page cache). It reopens its file
after a fork, so DataLoader workers each get their own descriptor.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from medcl.errors import MedclError
from medcl.io import atomic_path, write_json

PACK_VERSION = 1
"""Part of every packed digest: bump when the resize rule of the datasets changes."""

PACKED_DIR = "packed"
ROW_SEP = "#"
"""Separates a shard file from the row inside it in a manifest's ``cache_path``."""


def split_ref(ref: str) -> tuple[str, int | None]:
    """``"a/b.npy#12"`` → ``("a/b.npy", 12)``; a plain file → ``(ref, None)``."""
    head, sep, tail = ref.rpartition(ROW_SEP)
    if sep and tail.isdigit() and head.endswith(".npy"):
        return head, int(tail)
    return ref, None


@contextmanager
def reading_array(path: Path, hint: str = "") -> Iterator[None]:
    """Report a missing or unreadable ``.npy`` file, read inside this block, as one line.

    Args:
        path: The file the block reads.
        hint: Appended to the reason of an unreadable file (e.g. ``"; re-run medcl ingest"``).

    Raises:
        MedclError: Naming ``path``, instead of the block's ``FileNotFoundError``, other
            ``OSError`` or ``ValueError`` (a damaged header).
    """
    try:
        yield
    except FileNotFoundError:
        raise MedclError(f"{path}: cached array not found (re-run medcl ingest)") from None
    except (OSError, ValueError) as exc:
        raise MedclError(
            f"{path}: not a readable cached array ({type(exc).__name__}{hint})"
        ) from None


class ArrayFile:
    """Rows of a C-ordered ``.npy`` file read on demand with ``pread``.

    Args:
        path: The ``.npy`` file (version 1, 2 or 3 header, not Fortran-ordered).

    Raises:
        MedclError: Missing or not a plain ``.npy`` array.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        with reading_array(self.path), open(self.path, "rb") as fh:
            major, _ = np.lib.format.read_magic(fh)
            read_header = (
                np.lib.format.read_array_header_1_0
                if major == 1
                else np.lib.format.read_array_header_2_0
            )
            shape, fortran, dtype = read_header(fh)
            self.offset = fh.tell()
        if fortran or dtype.hasobject or not shape:
            raise MedclError(f"{self.path}: not a C-ordered numeric array file")
        self.shape: tuple[int, ...] = tuple(int(s) for s in shape)
        self.dtype = dtype
        self.row_shape = self.shape[1:]
        self.row_bytes = int(np.prod(self.row_shape, dtype=np.int64)) * dtype.itemsize
        self._fd: int | None = None
        self._pid = -1

    def __len__(self) -> int:
        return self.shape[0]

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_fd"], state["_pid"] = None, -1
        return state

    def __del__(self) -> None:
        if getattr(self, "_fd", None) is not None and self._pid == os.getpid():
            try:
                os.close(self._fd)  # type: ignore[arg-type]
            except OSError:
                pass

    def _descriptor(self) -> int:
        if self._fd is None or self._pid != os.getpid():
            self._fd = os.open(self.path, os.O_RDONLY)
            self._pid = os.getpid()
        return self._fd

    def _read(self, start: int, count: int) -> np.ndarray:
        n = count * self.row_bytes
        buf = bytearray(n)
        view = memoryview(buf)
        done = 0
        fd = self._descriptor()
        while done < n:
            got = os.preadv(fd, [view[done:]], self.offset + start * self.row_bytes + done)
            if got <= 0:
                raise MedclError(f"{self.path}: file is shorter than its header says")
            done += got
        return np.frombuffer(buf, dtype=self.dtype).reshape((count, *self.row_shape))

    def row(self, i: int) -> np.ndarray:
        """Row ``i`` (a writable copy)."""
        if not 0 <= i < self.shape[0]:
            raise IndexError(f"row {i} outside {self.path.name} ({self.shape[0]} rows)")
        return self._read(i, 1)[0]

    def rows(self, index: Sequence[int] | np.ndarray) -> np.ndarray:
        """Rows ``index`` in that order: one read for a consecutive range, else one per row."""
        idx = np.asarray(index, dtype=np.int64)
        n = len(idx)
        if not n:
            return np.empty((0, *self.row_shape), dtype=self.dtype)
        if idx.min() < 0 or idx.max() >= self.shape[0]:
            raise IndexError(f"row index outside {self.path.name} ({self.shape[0]} rows)")
        first = int(idx[0])
        if n == 1 or (idx[-1] - first == n - 1 and bool(np.all(np.diff(idx) == 1))):
            return self._read(first, n)
        out = np.empty((n, *self.row_shape), dtype=self.dtype)
        view = memoryview(out.reshape(-1).view(np.uint8))
        fd, rb, base = self._descriptor(), self.row_bytes, self.offset
        for k, i in enumerate(idx.tolist()):
            got = os.preadv(fd, [view[k * rb : (k + 1) * rb]], base + i * rb)
            if got != rb:  # a short read: finish it the slow way
                out[k] = self._read(i, 1)[0]
        return out


def pack_digest(keys: Sequence[str], image_size: int, dims: int, settings: object = None) -> str:
    """The name of the packed array of these rows: SHA-256 of everything its content depends on.

    Args:
        keys: The rows' cache references in dataset order (file names, with ``#row`` for shards).
        image_size: Size of every resized axis.
        dims: 2 or 3.
        settings: What else the cached arrays depend on (e.g. the ingest sidecar's size).
    """
    h = hashlib.sha256()
    h.update(json.dumps([PACK_VERSION, image_size, dims, settings], default=str).encode())
    for k in keys:
        h.update(b"\n")
        h.update(k.encode())
    return h.hexdigest()[:32]


def packed_path(root: str | os.PathLike[str], image_size: int, digest: str) -> Path:
    """``root/packed/<size>/<digest>.npy`` (``root`` = the cache folder)."""
    return Path(root) / PACKED_DIR / str(image_size) / f"{digest}.npy"


def write_packed(
    target: Path, n: int, row_shape: tuple[int, ...], chunks, index: dict | None = None
) -> Path:
    """Write a packed array atomically from ``chunks`` (an iterable of ``(start, array)`` in row
    order).

    The rows are appended with plain writes after the ``.npy`` header (no memory map: the pages
    written do not count in this process' resident memory). The file appears under its final name
    only once it is complete, so a crashed build is never reused. ``index`` is written next to it
    as ``<digest>.json``.

    Raises:
        ValueError: Chunks out of order, or not ``n`` rows in all.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    header = {"descr": np.dtype(np.float32).str, "fortran_order": False, "shape": (n, *row_shape)}
    with atomic_path(target) as tmp, open(tmp, "wb") as fh:
        np.lib.format.write_array_header_2_0(fh, header)
        done = 0
        for start, block in chunks:
            if start != done:
                raise ValueError(f"packed rows out of order: chunk at {start}, expected {done}")
            fh.write(np.ascontiguousarray(block, dtype=np.float32).tobytes())
            done += len(block)
        if done != n:
            raise ValueError(f"packed array got {done} rows, expected {n}")
    write_json(
        {"rows": n, "row_shape": list(row_shape), **(index or {})}, target.with_suffix(".json")
    )
    return target
