import dataclasses
import json

import pytest

from fes_live.stream.config import ConfigError, from_dict, load_config, to_dict


@dataclasses.dataclass(frozen=True)
class Inner:
    a: int = 1


@dataclasses.dataclass(frozen=True)
class Outer:
    inner: Inner = Inner()
    sizes: tuple[int, ...] = (1, 2)
    name: str = "x"


def test_round_trip_and_nested():
    cfg = from_dict(Outer, {"inner": {"a": 5}, "sizes": [3, 4]})
    assert cfg.inner.a == 5 and cfg.sizes == (3, 4)
    assert from_dict(Outer, to_dict(cfg)) == cfg


def test_unknown_key_rejected_with_name():
    with pytest.raises(ConfigError, match="unknown key.*'nmae'"):
        from_dict(Outer, {"nmae": "typo"})
    with pytest.raises(ConfigError, match=r"Outer.inner: unknown key.*'b'"):
        from_dict(Outer, {"inner": {"b": 1}})


def test_load_config_file(tmp_path):
    p = tmp_path / "c.json"
    p.write_text(json.dumps({"name": "y"}))
    assert load_config(Outer, p, {"sizes": [9]}) == Outer(name="y", sizes=(9,))
    with pytest.raises(ConfigError, match="not found"):
        load_config(Outer, tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(ConfigError, match="not valid JSON"):
        load_config(Outer, tmp_path / "bad.json")
