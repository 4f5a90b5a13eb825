"""Reading a config: YAML and overrides in, a checked :class:`~medcl.config.schema.Config` out.

A run is described by :class:`~medcl.config.schema.Config`, loaded from YAML by
:func:`load_config` and then patched with command-line overrides (``section.key=value``, values
parsed as YAML). Loading is strict and happens before any work: an unknown key, a value of the
wrong type or outside its range is refused with one :class:`~medcl.errors.ConfigError` that names
the field (and suggests the closest valid key). Mappings are merged key by key, section within
section, except ``augment.options``, whose mapping is merged one level deep (an option's value is
replaced whole); ``method.options.<objective>`` merges option by option. Each source (file,
overrides, :func:`derive`'s changes) is read through :func:`medcl.config.legacy.migrate` first, so
old keys keep working and a later source overrides an earlier one in either form.

A loaded config is changed only through :func:`derive`, which validates the result as
:func:`load_config` does; :func:`save_config` writes it back as YAML.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import types
import typing
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal, TypeVar, Union, get_args, get_origin

import yaml

from medcl.config.legacy import migrate
from medcl.config.schema import Config
from medcl.errors import ConfigError
from medcl.io import write_text

T = TypeVar("T")


def _type_ok(value: Any, hint: Any) -> tuple[bool, Any]:
    """Whether ``value`` fits ``hint``; returns (ok, coerced value)."""
    origin = get_origin(hint)
    if hint is Any:
        return True, value
    if origin is Literal:
        return value in get_args(hint), value
    if origin in (Union, types.UnionType):
        for arm in get_args(hint):
            ok, v = _type_ok(value, arm)
            if ok:
                return True, v
        return False, value
    if hint is float:
        if isinstance(value, bool):
            return False, value
        if isinstance(value, int | float):
            return True, float(value)
        return False, value
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool), value
    if hint is bool:
        return isinstance(value, bool), value
    if hint is str:
        return isinstance(value, str), value
    if hint is dict or origin is dict:
        return isinstance(value, dict), value
    if hint is list or origin is list:
        return isinstance(value, list), value
    if hint is type(None):
        return value is None, value
    return isinstance(value, hint), value


def _describe(hint: Any) -> str:
    origin = get_origin(hint)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in get_args(hint))
    if origin in (Union, types.UnionType):
        return " or ".join(_describe(a) for a in get_args(hint))
    return getattr(hint, "__name__", str(hint))


def from_mapping(cls: type[T], data: Any, where: str) -> T:
    """The dataclass ``cls`` built from a mapping, strictly: every key a field, every value of the
    field's type (an int is taken for a float), nested dataclass fields built the same way.

    Args:
        cls: A dataclass (a config section, or an objective's options).
        data: The mapping.
        where: Dotted path of ``data`` in the config, for messages (``""`` at the top).

    Returns:
        ``cls(**data)`` with the values coerced; missing fields keep their defaults.

    Raises:
        ConfigError: ``unknown config key '<where>.<key>' (did you mean ...?); valid keys: ...``,
            or ``<where>.<key>: expected <type>, got <value>``.
    """
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in data.items():
        path = f"{where}.{key}" if where else str(key)
        if key not in names:
            close = difflib.get_close_matches(str(key), names, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            valid = ", ".join(names) or "none"
            raise ConfigError(f"unknown config key '{path}'{hint}; valid keys: {valid}")
        hint_t = hints[key]
        if dataclasses.is_dataclass(hint_t):
            kwargs[key] = from_mapping(hint_t, value if value is not None else {}, path)
            continue
        ok, coerced = _type_ok(value, hint_t)
        if not ok:
            raise ConfigError(f"{path}: expected {_describe(hint_t)}, got {value!r}")
        kwargs[key] = coerced
    return cls(**kwargs)


def _set_dotted(data: dict, dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    node = data
    for p in parts[:-1]:
        nxt = node.setdefault(p, {})
        if not isinstance(nxt, dict):
            raise ConfigError(f"override {dotted}: '{p}' is not a section")
        node = nxt
    node[parts[-1]] = value


def parse_overrides(overrides: Sequence[str]) -> dict:
    """``["optim.lr=0.01", "method.name=moco"]`` → nested dict (values parsed as YAML)."""
    data: dict = {}
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override '{item}': expected KEY=VALUE, e.g. optim.lr=0.001")
        key, raw = item.split("=", 1)
        try:
            value = yaml.safe_load(raw) if raw != "" else ""
        except yaml.YAMLError as exc:
            raise ConfigError(f"override '{item}': value is not valid YAML") from exc
        _set_dotted(data, key.strip(), value)
    return data


_MERGED_FLAT = {("augment", "options")}
"""Mappings merged one level deep: a key's value is replaced whole."""


def _merge(base: dict, patch: dict, at: tuple[str, ...] = ()) -> dict:
    """``patch`` over ``base``, mapping into mapping (see the module docstring)."""
    out = dict(base)
    for k, v in patch.items():
        here = (*at, k)
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = {**out[k], **v} if here in _MERGED_FLAT else _merge(out[k], v, here)
        else:
            out[k] = v
    return out


def load_config(
    path: str | Path | None = None, overrides: Sequence[str] = (), base: dict | None = None
) -> Config:
    """Load a YAML config, apply overrides, validate everything.

    Args:
        path: YAML file (None = defaults only).
        overrides: ``section.key=value`` strings, applied after the file.
        base: Extra mapping applied before the file (e.g. programmatic defaults).

    Raises:
        ConfigError: Naming the file and field on any problem.
    """
    data: dict = migrate(dict(base or {}))
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"{p}: config file not found")
        try:
            loaded = yaml.safe_load(p.read_text()) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"{p}: invalid YAML ({str(exc).splitlines()[0]})") from exc
        if not isinstance(loaded, dict):
            raise ConfigError(f"{p}: top level must be a mapping")
        data = _merge(data, migrate(loaded))
    return _validated(_merge(data, migrate(parse_overrides(overrides))), path)


def _validated(data: dict, path: str | Path | None) -> Config:
    """``data`` as a checked :class:`Config`; errors name ``path`` when given."""
    try:
        cfg = from_mapping(Config, data, "")
        cfg.check()
    except ConfigError as exc:
        if path is not None:
            raise ConfigError(f"{path}: {exc}") from exc
        raise
    return cfg


def derive(cfg: Config, **overrides: Any) -> Config:
    """A validated copy of ``cfg`` with some fields replaced; the one way to change a config.

    Keys are dotted field paths, values Python values (not YAML text)::

        derive(cfg, **{"finetune.epochs": 5, "out": "runs/x"})

    The copy is checked exactly as :func:`load_config` checks a file and its overrides (an
    ``augment.options`` or ``method.options`` mapping is merged into the current options, as an
    override is; old keys such as ``method.queue_size`` are migrated), so a bad value is refused
    with the same message. ``cfg`` itself is not changed.

    Args:
        cfg: The config to start from.
        **overrides: ``section.key`` → new value.

    Returns:
        A new :class:`Config`.

    Raises:
        ConfigError: On an unknown key or a bad value, naming the field.
    """
    patch: dict = {}
    for key, value in overrides.items():
        _set_dotted(patch, key, value)
    return _validated(_merge(cfg.to_dict(), migrate(json.loads(json.dumps(patch)))), None)


def save_config(cfg: Config, path: str | Path) -> Path:
    """Write the resolved config as YAML."""
    return write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False), path)
