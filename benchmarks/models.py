"""CPU cost per frame of GIM, FEDN and the whole OnlineSpotter, on random weights and inputs.

GIM runs one 17-frame window per frame (batched), FEDN one window per stride, the OnlineSpotter both models plus
post-processing.

    fes-bench models [--threads 1] [--repeat 50] [--json out.json]

Weights do not change the cost, so no checkpoint is needed; pass `--gim-config/--fedn-config` JSON files to time
other sizes. Per-frame figures are what one 30 fps stream costs: GIM batch b costs t_b / b per frame, FEDN a
window every `stride` frames costs t_window / stride per frame.
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import time

import numpy as np
import torch

from fes_live.models.fedn import FEDN, FEDNConfig
from fes_live.models.gim import GIM, GIMConfig
from fes_live.models.online import OnlineSpotter, SpotterConfig, eager_fedn_fn, eager_gim_fn
from fes_live.stream.config import load_config


def _ms(fn, repeat: int, warmup: int = 3) -> float:
    """Median wall time of fn() in milliseconds."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return 1000.0 * float(np.median(times))


def run(gim_cfg: GIMConfig, fedn_cfg: FEDNConfig, stride: int, repeat: int, threads: int,
        batches: tuple[int, ...] = (1, 8, 32)) -> dict:
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    gim, fedn = GIM(gim_cfg).eval(), FEDN(fedn_cfg).eval()
    res: dict = {"threads": threads, "torch": torch.__version__, "cpu": platform.processor() or platform.machine(),
                 "gim_params": sum(p.numel() for p in gim.parameters()),
                 "fedn_params": sum(p.numel() for p in fedn.parameters()), "gim": {}, "fedn": {}}
    with torch.no_grad():
        for b in batches:
            x = torch.randn(b, gim_cfg.window, gim_cfg.n_rois, 2)
            ms = _ms(lambda: gim(x), repeat)
            res["gim"][f"batch{b}"] = {"ms_per_call": ms, "ms_per_frame": ms / b}
        x = torch.randn(1, fedn_cfg.window, fedn_cfg.in_dim)
        ms = _ms(lambda: fedn(x), repeat)
        res["fedn"] = {"window": fedn_cfg.window, "stride": stride, "ms_per_window": ms, "ms_per_frame": ms / stride}
        exported = torch.export.export(gim, (torch.randn(1, gim_cfg.window, gim_cfg.n_rois, 2),)).module()
        x = torch.randn(1, gim_cfg.window, gim_cfg.n_rois, 2)
        res["gim"]["exported_batch1_ms"] = _ms(lambda: exported(x), repeat)

    # the whole spotter, one stream, frame by frame (what the detector does per stream)
    cfg = SpotterConfig(fedn_window=fedn_cfg.window, fedn_stride=stride, geometry_dim=fedn_cfg.in_dim)
    spotter = OnlineSpotter(eager_gim_fn(gim), eager_fedn_fn(fedn), cfg)
    rng = np.random.default_rng(0)
    n = max(2 * fedn_cfg.window, 4 * repeat)
    geom = rng.normal(size=(n, fedn_cfg.in_dim)).astype(np.float32)
    flow = rng.normal(size=(n, gim_cfg.n_rois, 2)).astype(np.float32)
    for t in range(fedn_cfg.window):  # fill the rings first
        spotter.push(t, True, geom[t], flow[t])
    t0 = time.perf_counter()
    for t in range(fedn_cfg.window, n):
        spotter.push(t, True, geom[t], flow[t])
    res["spotter_ms_per_frame"] = 1000.0 * (time.perf_counter() - t0) / (n - fedn_cfg.window)
    res["streams_at_30fps_per_core"] = 1000.0 / 30.0 / res["spotter_ms_per_frame"] * (1.0 / threads)
    return res


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    p.add_argument("--repeat", type=int, default=50, help="timed calls per figure (median)")
    p.add_argument("--stride", type=int, default=SpotterConfig().fedn_stride, help="FEDN window stride (frames)")
    p.add_argument("--gim-config", help="GIMConfig JSON (default: the built-in CPU size)")
    p.add_argument("--fedn-config", help="FEDNConfig JSON (default: the built-in CPU size)")
    p.add_argument("--json", metavar="PATH", help="also write the results to PATH as JSON")


def main(argv: list[str] | None = None) -> int:
    parts = __doc__.strip().split("\n\n")  # summary, what is timed, usage, notes
    p = argparse.ArgumentParser(prog="fes-bench models", description="\n\n".join(parts[:2]), epilog=parts[-1],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(p)
    args = p.parse_args(argv)
    res = run(load_config(GIMConfig, args.gim_config), load_config(FEDNConfig, args.fedn_config), args.stride,
              args.repeat, args.threads)
    print(f"CPU ({res['cpu']}, {res['threads']} thread(s), torch {res['torch']})")
    print(f"GIM  {res['gim_params']:,} params")
    for k, v in res["gim"].items():
        if isinstance(v, dict):
            print(f"  {k:<8} {v['ms_per_call']:8.2f} ms/call  {v['ms_per_frame']:7.3f} ms/frame")
    print(f"  exported batch1 {res['gim']['exported_batch1_ms']:.2f} ms/frame")
    f = res["fedn"]
    print(f"FEDN {res['fedn_params']:,} params, window {f['window']}, stride {f['stride']}")
    print(f"  {f['ms_per_window']:8.2f} ms/window  {f['ms_per_frame']:7.3f} ms/frame")
    print(f"OnlineSpotter (GIM batch 1 + FEDN + post-processing): {res['spotter_ms_per_frame']:.2f} ms/frame "
          f"-> {res['streams_at_30fps_per_core']:.1f} streams at 30 fps per core")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(res, fh, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
