"""Every shipped config file loads and validates."""

from __future__ import annotations

from pathlib import Path

import pytest

from medcl.config import load_config

CONFIGS = sorted((Path(__file__).parents[1] / "configs").rglob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_shipped_config_is_valid(path):
    load_config(path)


def test_there_are_configs():
    assert len(CONFIGS) >= 4
