"""Range checks shared by every config section and every objective's options.

Each raises one :class:`~medcl.errors.ConfigError` that names the field and shows the value, e.g.
``optim.lr: must be in (0, 10), got -1``.
"""

from __future__ import annotations

from medcl.errors import ConfigError


def positive(value: int | float, name: str) -> None:
    """Refuse ``value ≤ 0``.

    Args:
        value: The field's value.
        name: Its dotted path, e.g. ``data.batch_size``.

    Raises:
        ConfigError: ``"<name>: must be positive, got <value>"``.
    """
    if value <= 0:
        raise ConfigError(f"{name}: must be positive, got {value}")


def at_least(value: int | float, bound: int | float, name: str) -> None:
    """Refuse ``value < bound``.

    Args:
        value: The field's value.
        bound: The smallest value allowed.
        name: Its dotted path.

    Raises:
        ConfigError: ``"<name>: must be ≥ <bound>, got <value>"``.
    """
    if value < bound:
        raise ConfigError(f"{name}: must be ≥ {bound}, got {value}")


def in_range(value: int | float, interval: str, name: str) -> None:
    """Refuse a value outside ``interval``, written as in mathematics: ``"[0, 1)"`` holds 0 but
    not 1, ``"(0, 10]"`` holds 10 but not 0.

    Args:
        value: The field's value.
        interval: ``[`` or ``(``, the low end, a comma, the high end, ``]`` or ``)``.
        name: Its dotted path.

    Raises:
        ConfigError: ``"<name>: must be in <interval>, got <value>"``.
    """
    low, high = (float(x) for x in interval[1:-1].split(","))
    above = value >= low if interval[0] == "[" else value > low
    below = value <= high if interval[-1] == "]" else value < high
    if not (above and below):
        raise ConfigError(f"{name}: must be in {interval}, got {value}")
