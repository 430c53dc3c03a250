"""`fes-export CKPT... -o ENGINE_DIR`: checkpoints of `fes-train` -> an engine folder that `fes_live.stream.engine` loads.

Per model: `torch.export` of the inference wrapper (`<model>.pt2`), its state dict (`<model>.pt`, for the eager
backend) and, with `--aoti`, an AOTInductor package for this machine's device. The manifest carries everything
the live side needs without the training code: model configs, input shapes, fps, window and stride, label maps,
thresholds, feature types, what data trained it, the version, and the sha256 of every file.
"""
from __future__ import annotations

import argparse
import datetime
import json
import logging
import sys
from pathlib import Path

import torch

from fes_live import version_text
from fes_live.calibration.thresholds import merge_spotter
from fes_live.stream.engine import (FORMAT_VERSION, EngineError, _dynamic_shapes, build_model, compile_aoti,
                                    compile_tensorrt, fingerprint, inference_module, load_engine, probe_input,
                                    write_manifest)

log = logging.getLogger("fes-export")


class ExportError(RuntimeError):
    """Checkpoints that cannot make an engine."""


def load_checkpoint(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise ExportError(f"{path}: checkpoint not found")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001
        raise ExportError(f"{path}: not a readable checkpoint ({type(e).__name__}: {str(e).splitlines()[0][:200]})") from None
    for key in ("model", "config", "state_dict", "engine"):
        if key not in ckpt:
            raise ExportError(f"{path}: not a fes-train checkpoint (no {key!r})")
    if ckpt["model"] not in ("gim", "fedn"):
        raise ExportError(f"{path}: unknown model {ckpt['model']!r}")
    return ckpt


def input_shape(ckpt: dict) -> list[int]:
    """-1 marks the dynamic batch: GIM takes any number of windows, FEDN any number of W-frame windows."""
    cfg = ckpt["config"]
    if ckpt["model"] == "gim":
        return [-1, int(cfg.get("window", 17)), int(cfg.get("n_rois", 12)), 2]
    return [-1, int(ckpt["engine"]["window"]), int(ckpt["engine"]["feature_dim"])]


def export_model(ckpt: dict, out: Path) -> dict:
    """Write <model>.pt2 and <model>.pt; return the manifest entry."""
    name = ckpt["model"]
    model = inference_module(name, build_model(name, ckpt["config"], ckpt["state_dict"]))
    shape = input_shape(ckpt)
    example = torch.zeros([2 if d < 0 else d for d in shape])
    with torch.no_grad():
        program = torch.export.export(model, (example,), dynamic_shapes=_dynamic_shapes({"input_shape": shape}))
    torch.export.save(program, str(out / f"{name}.pt2"))
    with torch.no_grad():  # what the eager backend must reproduce to be taken before the program (engine.py)
        probe = fingerprint(t.numpy() for t in program.module()(torch.from_numpy(probe_input({"input_shape": shape}))))
    torch.save(build_model(name, ckpt["config"], ckpt["state_dict"]).state_dict(), out / f"{name}.pt")
    from fes_live.stream.engine import model_classes
    outputs = ["intensity", "apex_probs"] if name == "gim" else list(model_classes("fedn")[2]._fields)
    return {"config": ckpt["config"], "input_shape": shape, "program": f"{name}.pt2", "weights": f"{name}.pt",
            "outputs": outputs, "probe": probe, "feature": ckpt["engine"].get("feature", ""),
            "epoch": ckpt.get("epoch"), "selected_on": ckpt.get("selected_on", "")}


def export(checkpoints: list[str | Path], out: str | Path, aoti: bool = False, tensorrt: bool = False,
           thresholds: dict | None = None, version: str | None = None) -> Path:
    """Export one GIM checkpoint and at most one FEDN checkpoint into the folder `out`; returns it."""
    ckpts = [load_checkpoint(p) for p in checkpoints]
    by_model: dict[str, dict] = {}
    for path, ckpt in zip(checkpoints, ckpts):
        if ckpt["model"] in by_model:
            raise ExportError(f"{path}: a second {ckpt['model']} checkpoint; give one per model")
        by_model[ckpt["model"]] = ckpt
    if "gim" not in by_model:
        raise ExportError("an engine needs a GIM checkpoint")
    gim = by_model["gim"]
    if "fedn" in by_model and by_model["fedn"]["engine"]["fps"] != gim["engine"]["fps"]:
        raise ExportError(f"GIM trained at {gim['engine']['fps']} fps, FEDN at {by_model['fedn']['engine']['fps']}")

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    for stale in out.iterdir():  # an engine folder holds exactly what its manifest lists
        if stale.is_file() and (stale.suffix in (".pt2", ".pt", ".ep", ".sha256") or stale.name == "manifest.json"):
            stale.unlink()
    models = {name: export_model(ckpt, out) for name, ckpt in by_model.items()}
    meta = gim["engine"]
    fedn_meta = by_model.get("fedn", {}).get("engine", {})
    manifest = {
        "format_version": FORMAT_VERSION,
        "version": version or f"{meta.get('package_version', '0.1.0')}+{datetime.date.today().isoformat()}",
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "models": models,
        "inputs": {"gim": "roi_flow windows (B, 17, 12, 2): ROI flow of frames t-8..t+8 (stream.features.flow_windows)",
                   **({"fedn": f"per-frame {fedn_meta.get('feature', 'geometry')} features of W frames (B, W, F)"}
                      if "fedn" in models else {})},
        "fps": meta["fps"],
        "window": {"gim": models["gim"]["input_shape"][1], **({"fedn": fedn_meta["window"]} if fedn_meta else {})},
        "stride": {"gim": 1, **({"fedn": fedn_meta["stride"]} if fedn_meta else {})},
        "labels": {"kinds": ["macro", "micro"], "emotions": list(fedn_meta.get("emotions", meta.get("emotions", [])))},
        "thresholds": thresholds if thresholds is not None else dict(meta.get("thresholds", {})),
        "feature_type": {"gim": "roi-flow", **({"fedn": fedn_meta.get("feature", "geometry")} if fedn_meta else {})},
        "training_data": {name: ckpt["engine"].get("training_data", {}) for name, ckpt in by_model.items()},
        "spotter": merge_spotter(meta.get("spotter", {}), (thresholds or {}).get("spotter", {})),
        "files": {f"{name}.pt2": "" for name in models} | {f"{name}.pt": "" for name in models},
    }
    write_manifest(out, manifest)
    manifest = json.loads((out / "manifest.json").read_text())
    for name in models:
        if aoti:
            device = "cuda" if torch.cuda.is_available() else "cpu"
            path = compile_aoti(out, manifest, name, device, out_dir=out)
            manifest["files"][path.name] = ""
        if tensorrt:
            path = compile_tensorrt(out, manifest, name, out_dir=out)
            manifest["files"][path.name] = ""
    write_manifest(out, manifest)
    engine = load_engine(out, backend="export", device="cpu")  # refuse to leave an engine that does not load
    log.info("wrote %s", engine.describe())
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="fes-export", description=__doc__.splitlines()[0])
    parser.add_argument("checkpoints", nargs="+", help="fes-train checkpoints: one GIM, optionally one FEDN")
    parser.add_argument("-o", "--output", required=True, help="engine folder to write")
    parser.add_argument("--aoti", action="store_true", help="also compile AOTInductor packages for this device")
    parser.add_argument("--tensorrt", action="store_true", help="also compile TensorRT FP16 engines (CUDA)")
    parser.add_argument("--thresholds", help="JSON file of calibrated thresholds (fes_live.calibration.thresholds) to embed")
    parser.add_argument("--engine-version", help="engine version string (default: package version + date)")
    parser.add_argument("--version", action="version", version=version_text("fes-export"))
    parser.add_argument("--log-level", default="INFO", help="DEBUG, INFO, WARNING or ERROR")
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        thresholds = json.loads(Path(args.thresholds).read_text()) if args.thresholds else None
        out = export(args.checkpoints, args.output, aoti=args.aoti, tensorrt=args.tensorrt,
                     thresholds=thresholds, version=args.engine_version)
    except (ExportError, EngineError, OSError, json.JSONDecodeError) as e:
        print(f"fes-export: {e}", file=sys.stderr)
        return 1
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
