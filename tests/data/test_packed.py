"""A missing or damaged array file ends with one line naming it, for shards, packed arrays and
single cached arrays alike."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from medcl.data.cache import load_cached
from medcl.data.packed import ArrayFile
from medcl.errors import MedclError


def _damaged(tmp_path: Path) -> Path:
    path = tmp_path / "damaged.npy"
    path.write_bytes(b"\x93NUMPY\x01\x00garbage, not a header")
    return path


def test_missing_file_is_named() -> None:
    missing = Path("/nonexistent/medcl/a.npy")
    for read in (load_cached, ArrayFile):
        with pytest.raises(MedclError) as err:
            read(missing)
        assert str(err.value) == f"{missing}: cached array not found (re-run medcl ingest)"


def test_damaged_file_is_named(tmp_path: Path) -> None:
    path = _damaged(tmp_path)
    with pytest.raises(MedclError) as err:
        load_cached(path)
    assert (
        str(err.value) == f"{path}: not a readable cached array (ValueError; re-run medcl ingest)"
    )
    with pytest.raises(MedclError) as err:
        ArrayFile(path)
    assert str(err.value) == f"{path}: not a readable cached array (ValueError)"


def test_readable_files_still_read(tmp_path: Path) -> None:
    """Guard: the same readers return the arrays of well-formed files."""
    array = np.arange(12, dtype=np.float32).reshape(3, 1, 2, 2)
    np.save(tmp_path / "shard.npy", array)
    np.testing.assert_array_equal(load_cached(tmp_path / "shard.npy"), array)
    np.testing.assert_array_equal(ArrayFile(tmp_path / "shard.npy").row(1), array[1])
    np.testing.assert_array_equal(load_cached(f"{tmp_path / 'shard.npy'}#2"), array[2])
