"""The private path map under concurrent writers: two processes sharing a secret (two ingests at
once) both keep their entries."""

from __future__ import annotations

import multiprocessing as mp

from medcl.data.pseudonym import PathMap

N = 60


def _writer(path: str, who: str, start) -> None:
    start.wait()
    pm = PathMap(path)
    for i in range(N):
        pm.update({f"{who}{i}": f"/data/{who}/{i}.dcm"})


def test_two_processes_updating_the_path_map_lose_no_entry(tmp_path):
    target = tmp_path / "private" / "paths.json"
    ctx = mp.get_context("fork")
    start = ctx.Event()
    procs = [ctx.Process(target=_writer, args=(str(target), w, start)) for w in ("a", "b")]
    for p in procs:
        p.start()
    start.set()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    got = PathMap(target).load()
    assert len(got) == 2 * N, f"{2 * N - len(got)} entries lost"
    assert got["a7"] == "/data/a/7.dcm" and got["b59"] == "/data/b/59.dcm"
    assert not list(target.parent.glob(".paths.json.*.tmp"))
