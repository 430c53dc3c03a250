"""Frozen dataclass configs that reject unknown keys.

Every component of fes-live takes one of these. `from_dict` is the single place where a config is built from
user data (a JSON file, a checkpoint, an engine manifest), so a typo in a key is an error, never a silent default.
"""
from __future__ import annotations

import dataclasses
import json
import typing
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")


class ConfigError(ValueError):
    """A config that cannot be built: unknown key, wrong type, missing file."""


def from_dict(cls: type[T], data: dict[str, Any] | None, *, where: str = "") -> T:
    """Build dataclass `cls` from `data`, recursing into nested dataclass fields; unknown keys raise ConfigError."""
    data = dict(data or {})
    name = where or cls.__name__
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(f"{name}: unknown key(s) {unknown}; known keys are {sorted(fields)}")
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for key, value in data.items():
        hint = hints.get(key)
        if dataclasses.is_dataclass(hint) and isinstance(value, dict):
            value = from_dict(hint, value, where=f"{name}.{key}")
        elif isinstance(value, list) and typing.get_origin(hint) is tuple:
            value = tuple(tuple(v) if isinstance(v, list) else v for v in value)
        kwargs[key] = value
    try:
        return cls(**kwargs)
    except TypeError as e:  # missing required field
        raise ConfigError(f"{name}: {e}") from None


def to_dict(cfg: Any) -> dict[str, Any]:
    """Plain JSON-ready dict of a (nested) dataclass config."""
    return json.loads(json.dumps(dataclasses.asdict(cfg)))


def load_config(cls: type[T], path: str | Path | None, overrides: dict[str, Any] | None = None) -> T:
    """Read a JSON config file (or nothing) and apply `overrides` on top; unknown keys raise ConfigError."""
    data: dict[str, Any] = {}
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"config file not found: {p}")
        try:
            data = json.loads(p.read_text())
        except json.JSONDecodeError as e:
            raise ConfigError(f"{p}: not valid JSON ({e})") from None
        if not isinstance(data, dict):
            raise ConfigError(f"{p}: top level must be a JSON object")
    data.update(overrides or {})
    return from_dict(cls, data, where=str(path) if path else "")
