"""fes_live.benchmarks.models runs end to end on tiny models and reports positive per-frame costs."""
from fes_live.benchmarks.models import main, run
from fes_live.models.fedn import FEDNConfig
from fes_live.models.gim import GIMConfig


def test_bench_tiny(tmp_path, capsys):
    res = run(GIMConfig(dim=8, heads=2, dim_head=4, mlp_dim=16),
              FEDNConfig(window=32, backbone_hidden=16, backbone_dim=8, dim=8, heads=2, head_dim=8),
              stride=8, repeat=2, threads=1, batches=(1, 4))
    assert res["gim"]["batch4"]["ms_per_frame"] > 0 and res["fedn"]["ms_per_frame"] > 0
    assert res["spotter_ms_per_frame"] > 0


def test_bench_cli_rejects_bad_config(tmp_path):
    bad = tmp_path / "gim.json"
    bad.write_text('{"dimension": 3}')
    import pytest
    from fes_live.stream.config import ConfigError
    with pytest.raises(ConfigError, match="unknown"):
        main(["--gim-config", str(bad), "--repeat", "1"])
