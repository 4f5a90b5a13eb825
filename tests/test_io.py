"""Atomic writes: the target is replaced whole or not at all, numpy values become plain JSON."""

from __future__ import annotations

import json

import numpy as np
import pytest

from medcl.io import atomic_path, write_json, write_text


def test_write_json_converts_numpy_and_creates_folders(tmp_path):
    p = write_json(
        {"a": np.float32(0.5), "b": np.arange(3), "c": np.int64(7)}, tmp_path / "x/y.json"
    )
    assert json.loads(p.read_text()) == {"a": 0.5, "b": [0, 1, 2], "c": 7}
    assert p.read_text().endswith("}\n")
    assert sorted(q.name for q in p.parent.iterdir()) == ["y.json"]  # no temporary file left


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    target = write_text("old\n", tmp_path / "t.txt")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("disk full")
    assert target.read_text() == "old\n"
    assert [q.name for q in tmp_path.iterdir()] == ["t.txt"]
