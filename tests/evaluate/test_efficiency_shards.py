"""``medcl efficiency --shard K/N``: disjoint shares of the plan, a pretraining kept with its runs,
shards in parallel processes give the records of one process, a killed shard re-runs alone."""

from __future__ import annotations

from typing import Any

import pytest

import medcl.evaluate.efficiency as eff
from medcl.config import load_config
from medcl.errors import ConfigError
from medcl.evaluate.plan import Shard, plan_jobs
from tests.conftest import TINY_OVERRIDES, make_manifest

COMMON = [
    *TINY_OVERRIDES,
    "optim.epochs=1",
    "finetune.epochs=1",
    "efficiency.fractions=[0.5]",
    "efficiency.seeds=[0, 1]",
    "efficiency.methods=[supervised, sscl, sscl+fixmatch]",
    "efficiency.linear_probe=false",
    "efficiency.n_boot=10",
]


def _cfg(*extra: str) -> Any:
    return load_config(None, [*COMMON, *extra])


@pytest.mark.parametrize("n", [1, 2, 3, 5])
def test_shards_are_disjoint_cover_the_plan_and_keep_a_pretraining_with_its_runs(n):
    cfg = _cfg(
        "efficiency.methods=[supervised, simclr, sscl, sscl+fixmatch]",
        "efficiency.share_simclr=true",
    )
    jobs = plan_jobs(cfg)
    parts = [Shard(k, n).jobs(jobs, share_label_free=True) for k in range(n)]
    keys = [j.key for p in parts for j in p]
    assert sorted(keys) == sorted(j.key for j in jobs) and len(keys) == len(set(keys))
    owner = {j.key: k for k, p in enumerate(parts) for j in p}
    for seed in (0, 1):  # SSCL's pretraining of a seed feeds two arms: one shard runs both
        assert owner[f"sscl_f0.5_s{seed}"] == owner[f"sscl+fixmatch_f0.5_s{seed}"]
    assert owner["simclr_f0.5_s0"] == owner["simclr_f0.5_s1"]  # one SimCLR run for both seeds
    if n == 2:
        assert all(parts)  # both get work


def test_two_shards_split_a_plan_of_few_large_units_evenly():
    """The demo's arms at one seed: three units (SSCL's pretraining with its arms and student,
    supervised with its self-training student, FixMatch). Costs 4, 2, 2 in the shard's units
    (a job 1, a FixMatch job 2, a pretraining 2): the best 2-way split is 4 | 4, found by trying
    every assignment; handing units out in plan order gave 6 | 2."""
    import itertools

    from medcl.evaluate.plan import work_units

    cfg = _cfg(
        "efficiency.methods=[supervised, fixmatch, sscl, selftrain, sscl+selftrain]",
        "efficiency.seeds=[0]",
    )
    jobs = plan_jobs(cfg)

    def cost(unit):
        return sum(1 + (j.arm.finetune == "fixmatch") for j in unit) + 2 * bool(
            unit[0].arm.pretraining
        )

    units = work_units(jobs, share_label_free=False)
    costs = [cost(u) for u in units]
    best = min(
        max(sum(c for c, s in zip(costs, a, strict=True) if s == k) for k in (0, 1))
        for a in itertools.product((0, 1), repeat=len(units))
    )
    parts = [Shard(k, 2).jobs(jobs, share_label_free=False) for k in range(2)]
    loads = [sum(costs[i] for i, u in enumerate(units) if u[0] in p) for p in parts]
    assert sorted(costs) == [2, 2, 4]  # the case under test
    assert max(loads) == best == 4


@pytest.mark.parametrize("text", ["2/2", "1", "a/b", "-1/2", "0/0"])
def test_a_bad_shard_is_refused_in_one_line(text):
    with pytest.raises(ConfigError, match="^--shard: K/N"):
        Shard.parse(text)


def _comparable(recs: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    return [(r["run"], r["val_balanced_accuracy"], r["finetune_steps"], r["metrics"]) for r in recs]


def test_two_shards_in_two_processes_give_the_records_of_one(tmp_path):
    manifest = make_manifest(tmp_path / "data", n_patients=15, labelled_patients=9, test_patients=3)
    one = eff.run_efficiency(_cfg(), manifest, tmp_path / "one", log=lambda s: None, progress=False)
    two = eff.run_parallel(_cfg(), manifest, tmp_path / "two", workers=2, log=lambda s: None)
    assert _comparable(two.records) == _comparable(one.records)
    assert [(p["run"], p["method"]) for p in two.picks] == [
        (p["run"], p["method"]) for p in one.picks
    ]
    assert sorted(p.name for p in (tmp_path / "two" / "shards").iterdir()) == [
        "0of2.json",
        "1of2.json",
    ]
    assert two.report.is_file()


class KilledError(Exception):
    pass


def test_a_killed_shard_reruns_alone(tmp_path, monkeypatch):
    manifest = make_manifest(tmp_path / "data", n_patients=15, labelled_patients=9, test_patients=3)
    out = tmp_path / "out"
    quiet: dict[str, Any] = {"log": lambda s: None, "progress": False}
    eff.run_efficiency(_cfg(), manifest, out, shard=Shard(0, 2), **quiet)
    real = eff.finetune
    runs: list[str] = []

    def finetune(c: Any, *args: Any, **kwargs: Any) -> Any:
        runs.append(c.finetune.mode)
        if len(runs) == 2 and kill:
            raise KilledError
        return real(c, *args, **kwargs)

    monkeypatch.setattr(eff, "finetune", finetune)
    kill = True
    with pytest.raises(KilledError):
        eff.run_efficiency(_cfg(), manifest, out, shard=Shard(1, 2), **quiet)
    mine = [j.key for j in Shard(1, 2).jobs(plan_jobs(_cfg()), False)]
    runs.clear()
    kill = False
    again = eff.run_efficiency(_cfg(), manifest, out, shard=Shard(1, 2), **quiet)
    assert len(runs) == len(mine) - 1  # only what the killed shard had not finished
    assert sorted(r["run"] for r in again.records if r["run"] in mine) == sorted(mine)
    runs.clear()
    done = eff.run_efficiency(_cfg(), manifest, out, collect=True, **quiet)
    assert not runs and len(done.records) == len(plan_jobs(_cfg()))
    assert (out / "report.md").is_file()
