"""The range checks shared by the config sections and the objectives' options."""

from __future__ import annotations

import pytest

from medcl.config.checks import at_least, in_range, positive
from medcl.errors import ConfigError

VALUES = (-0.5, 0, 0.5, 1, 1.5)
# which of VALUES each interval holds, written out by hand
HOLDS = {
    "[0, 1)": (False, True, True, False, False),
    "(0, 1]": (False, False, True, True, False),
    "[0, 1]": (False, True, True, True, False),
    "(0, 1)": (False, False, True, False, False),
    "(0, 10]": (False, False, True, True, True),
}


@pytest.mark.parametrize("interval", HOLDS)
def test_in_range_holds_what_the_interval_holds(interval):
    for value, holds in zip(VALUES, HOLDS[interval], strict=True):
        if holds:
            in_range(value, interval, "a.b")
        else:
            with pytest.raises(ConfigError) as err:
                in_range(value, interval, "a.b")
            assert str(err.value) == f"a.b: must be in {interval}, got {value}"


def test_positive_and_at_least():
    positive(0.1, "a.b")
    at_least(2, 2, "a.b")
    with pytest.raises(ConfigError, match=r"^a\.b: must be positive, got 0$"):
        positive(0, "a.b")
    with pytest.raises(ConfigError, match=r"^a\.b: must be ≥ 2, got 1$"):
        at_least(1, 2, "a.b")
