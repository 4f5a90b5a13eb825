"""Configs written before the objectives' options moved under ``method.options``.

Until then every option sat flat in the ``method`` section: ``method.queue_size``,
``method.ema_base``, six ``method.dino_*`` and three ``method.vicreg_*`` keys. Saved run folders
(``config.yaml``) and user configs still hold them, so every mapping is migrated when it is read
(a file, the command-line overrides, a saved config compared for resumption): each old key moves to
the option it became, ``method.ema_base`` to the ``ema_base`` of every momentum objective (MoCo,
BYOL, DINO), which all read it before. An option also given in the new form in the same mapping
keeps that value.
"""

from __future__ import annotations

from typing import Any

_MOMENTUM_OBJECTIVES = ("moco", "byol", "dino")

LEGACY_METHOD_KEYS: dict[str, tuple[tuple[str, str], ...]] = {
    "queue_size": (("moco", "queue_size"),),
    "ema_base": tuple((name, "ema_base") for name in _MOMENTUM_OBJECTIVES),
    **{
        f"dino_{key}": (("dino", key),)
        for key in (
            "out_dim",
            "student_temp",
            "teacher_temp",
            "warmup_teacher_temp",
            "teacher_temp_warmup",
            "center_momentum",
        )
    },
    **{f"vicreg_{key}": (("vicreg", key),) for key in ("sim_weight", "var_weight", "cov_weight")},
}
"""Old ``method`` key → the ``(objective, option)`` pairs under ``method.options`` it sets."""


def migrate(data: dict[str, Any]) -> dict[str, Any]:
    """``data`` with the old ``method`` keys moved under ``method.options``.

    Args:
        data: A config mapping (a YAML file's, the overrides', a saved config's); not changed.

    Returns:
        ``data`` itself when it holds no old key, else a copy in the new form. A malformed
        ``method`` or ``method.options`` is left for the loader to refuse.
    """
    method = data.get("method")
    if not isinstance(method, dict) or not LEGACY_METHOD_KEYS.keys() & method.keys():
        return data
    options = method.get("options") or {}
    if not isinstance(options, dict):
        return data
    method, options = dict(method), dict(options)
    for old, targets in LEGACY_METHOD_KEYS.items():
        if old not in method:
            continue
        value = method.pop(old)
        for name, key in targets:
            entry = options.get(name) or {}
            if isinstance(entry, dict):
                options[name] = {key: value, **entry}
    method["options"] = options
    return {**data, "method": method}
