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


def _fail_after_writing_part(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Make every file opened for writing write half of what it is given, then fail (the text
    written is recorded; bytes as UTF-8 text)."""
    written: list[str] = []
    real_open = open

    def failing_open(file, mode="r", *args, **kwargs):
        fh = real_open(file, mode, *args, **kwargs)
        if "w" in mode and "b" not in mode:

            def half_then_fail(s: str) -> int:
                written.append(s[: len(s) // 2])
                fh.buffer.write(s[: len(s) // 2].encode())
                raise OSError("disk full")

            fh.write = half_then_fail
        elif "w" in mode:

            def half_bytes_then_fail(b: bytes) -> int:
                written.append(bytes(b[: len(b) // 2]).decode("utf-8", "replace"))
                real_write(b[: len(b) // 2])
                raise OSError("disk full")

            real_write = fh.write
            fh.write = half_bytes_then_fail
        return fh

    monkeypatch.setattr("builtins.open", failing_open)
    return written


def test_write_json_interrupted_mid_write_keeps_the_previous_file(tmp_path, monkeypatch):
    target = write_json({"old": 1}, tmp_path / "metrics.json")
    before = target.read_bytes()
    written = _fail_after_writing_part(monkeypatch)
    with pytest.raises(OSError, match="disk full"):
        write_json({"a": list(range(50)), "b": "new"}, target)
    assert written and written[0].startswith('{\n  "a": [')  # part of the new file was written
    assert target.read_bytes() == before
    assert [q.name for q in tmp_path.iterdir()] == ["metrics.json"]


def test_write_json_compact_has_no_newline(tmp_path):
    p = write_json({"a": [1, 2]}, tmp_path / "s.json", indent=None, separators=(",", ":"))
    assert p.read_text() == '{"a":[1,2]}'


def _tiny_classifier(bias: float):
    import torch
    from torch import nn

    from medcl.evaluate.classifier import Classifier
    from medcl.models.description import ModelDescription
    from medcl.models.encoders import EncoderSpec, build_encoder

    spec = EncoderSpec("resnet10", 2, 32, stem="small", width=0.125)
    enc = build_encoder(spec)
    head = nn.Linear(enc.out_dim, 2)
    with torch.no_grad():
        head.bias.fill_(bias)
    return Classifier(enc, head, ModelDescription(spec, ["a", "b"], "mr", (0.0, 1.0)))


def test_an_interrupted_model_save_leaves_the_previous_model_whole(tmp_path, monkeypatch):
    import medcl.evaluate.model as model_mod
    from medcl.evaluate.model import load_model, save_model

    d = save_model(tmp_path / "model", _tiny_classifier(0.25), card="# old\n")
    before = {p.name: p.read_bytes() for p in d.iterdir()}

    def failing_write_json(obj, path, **kw):  # weights already written, metadata half-way
        path.write_text('{"classes": [')
        raise OSError("killed")

    monkeypatch.setattr(model_mod, "write_json", failing_write_json)
    with pytest.raises(OSError, match="killed"):
        save_model(d, _tiny_classifier(0.75), card="# new\n")
    assert {p.name: p.read_bytes() for p in d.iterdir()} == before
    assert [q.name for q in tmp_path.iterdir()] == ["model"]  # no temporary folder left
    assert load_model(d).head.bias[0].item() == 0.25
    monkeypatch.undo()
    save_model(d, _tiny_classifier(0.75), card="# new\n")  # a successful save replaces it whole
    assert load_model(d).head.bias[0].item() == 0.75
    assert (d / "model_card.md").read_text() == "# new\n"
    assert [q.name for q in tmp_path.iterdir()] == ["model"]


def test_atomic_dir_repairs_a_swap_killed_between_its_renames(tmp_path):
    from medcl.io import atomic_dir

    old = tmp_path / ".model.old"  # the previous model, renamed aside; the new one not yet in
    old.mkdir()
    (old / "weights.pt").write_text("previous")
    (tmp_path / ".model.999999.tmp").mkdir()  # a killed writer's temporary folder
    with pytest.raises(RuntimeError), atomic_dir(tmp_path / "model") as tmp:
        (tmp / "weights.pt").write_text("half")
        raise RuntimeError("disk full")
    assert (tmp_path / "model" / "weights.pt").read_text() == "previous"
    assert [q.name for q in tmp_path.iterdir()] == ["model"]


def test_an_interrupted_cache_state_save_keeps_the_previous_state(tmp_path, monkeypatch):
    from medcl.data.cache import FileRecord, IngestState

    path = tmp_path / "state.json"
    IngestState({"v": 1}, {"a.dcm": FileRecord(1, 2, "x" * 64)}).save(path)
    before = path.read_bytes()
    written = _fail_after_writing_part(monkeypatch)
    state = IngestState({"v": 2}, {"b.dcm": FileRecord(3, 4, "y" * 64)})
    with pytest.raises(OSError, match="disk full"):
        state.save(path)
    assert written and written[0].startswith('{"fingerprint":{"v":2}')
    assert path.read_bytes() == before
    assert IngestState.load(path, {"v": 1}).files["a.dcm"].size == 1
    assert [q.name for q in tmp_path.iterdir()] == ["state.json"]
