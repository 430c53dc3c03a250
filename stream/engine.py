"""Engines: load an exported GIM + FEDN pair with its manifest and run it on numpy arrays.

An engine is a folder written by `fes-export`:
  manifest.json   format version, model configs, inputs, fps, window, stride, label maps, thresholds, feature type,
                  training data, version, and the sha256 of every file below
  gim.pt2         torch.export program: windows (B, 17, 12, 2) -> (intensity (B,), apex_probs (B, 2))
  fedn.pt2        torch.export program: x (1, W, F) -> the fields of models.fedn.FEDNOutput
  gim.pt, fedn.pt state dicts (the eager backend rebuilds the models from the manifest's configs)
  optional: <model>.aoti-cpu.pt2 / <model>.aoti-cuda.pt2 (AOTInductor packages), <model>.trt.ep (TensorRT FP16)

Backends, best first: "tensorrt" (CUDA, torch_tensorrt installed), "aoti" (a compiled package for this device),
"eager" (state dict + config, run by this code) when it reproduces the manifest's probe, "export" (the exported
program itself), then eager unchecked. `backend="auto"` takes the best one that is present and works, and
`Engine.backend` says which and why. Eager loads in a tenth of a second and runs batch-1 calls ~20% faster than
the exported program (which takes ~2.6 s to deserialize), but it runs this code's models: the probe (the exported
program's outputs on a fixed input, written at export) is what shows that the code still computes what was
exported, so an engine from another version of the code falls back to its exported program. Compiled variants
can also be built on demand (`compile_aoti`, `compile_tensorrt`) and are cached next to the engine (or in
~/.cache/fes-live/engines when the folder is read-only). Every failure to load is an `EngineError` that names the file and the problem.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.nn as nn

from fes_live.stream.pipeline_config import (BUNDLED_ENGINES, DEFAULT_ENGINE, EngineError,  # noqa: F401 (re-export)
                                             engine_folder)

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
BACKENDS = ("tensorrt", "aoti", "export", "eager")
MODEL_NAMES = ("gim", "fedn")
REQUIRED_KEYS = ("format_version", "version", "models", "fps", "window", "stride", "labels", "thresholds",
                 "feature_type", "training_data", "files")


# ----------------------------------------------------------------------------------------------- inference wrappers

class GIMInference(nn.Module):
    """What is exported for GIM: windows -> (intensity (B,), apex probabilities (B, 2) = sigmoid(apex logits))."""

    def __init__(self, gim: nn.Module):
        super().__init__()
        self.gim = gim

    def forward(self, windows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.gim(windows)
        return out.intensity, torch.sigmoid(out.apex_logits)


class FEDNInference(nn.Module):
    """What is exported for FEDN: x (1, W, F) -> the FEDNOutput fields as a flat tuple (order of FEDNOutput)."""

    def __init__(self, fedn: nn.Module):
        super().__init__()
        self.fedn = fedn

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return tuple(self.fedn(x))


def model_classes(name: str) -> tuple[type, type, type]:
    """(config class, model class, output NamedTuple class) of "gim" or "fedn"; imported only when needed."""
    if name == "gim":
        from fes_live.models.gim import GIM, GIMConfig, GIMOutput
        return GIMConfig, GIM, GIMOutput
    if name == "fedn":
        from fes_live.models.fedn import FEDN, FEDNConfig, FEDNOutput
        return FEDNConfig, FEDN, FEDNOutput
    raise EngineError(f"unknown model {name!r}; known: {MODEL_NAMES}")


def build_model(name: str, config: dict, state_dict: dict | None = None) -> nn.Module:
    """An eval-mode model from its config dict (and weights), as the eager backend and the exporter need it."""
    from fes_live.stream.config import ConfigError, from_dict
    cfg_cls, model_cls, _ = model_classes(name)
    try:
        model = model_cls(from_dict(cfg_cls, config, where=f"{name} config"))
    except (ConfigError, ValueError) as e:
        raise EngineError(f"{name}: config does not build the model: {e}") from None
    if state_dict is not None:
        try:
            model.load_state_dict(state_dict)
        except RuntimeError as e:
            raise EngineError(f"{name}: weights do not fit the config: {str(e).splitlines()[0]}") from None
    return model.eval()


def inference_module(name: str, model: nn.Module) -> nn.Module:
    return (GIMInference if name == "gim" else FEDNInference)(model).eval()


# ------------------------------------------------------------------------------------------------------- the engine

def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def read_manifest(folder: Path) -> dict:
    """manifest.json of an engine folder, checked for the keys and version this loader understands."""
    path = folder / "manifest.json"
    if not folder.is_dir():
        bundled = ", ".join(sorted(p.name for p in BUNDLED_ENGINES.iterdir() if (p / "manifest.json").is_file()))
        raise EngineError(f"{folder}: engine folder not found (bundled engines, by name: {bundled})")
    if not path.is_file():
        raise EngineError(f"{path}: missing (not an engine folder?)")
    try:
        manifest = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise EngineError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(manifest, dict):
        raise EngineError(f"{path}: top level must be a JSON object")
    missing = [k for k in REQUIRED_KEYS if k not in manifest]
    if missing:
        raise EngineError(f"{path}: missing key(s) {missing}")
    if manifest["format_version"] != FORMAT_VERSION:
        raise EngineError(f"{path}: format_version {manifest['format_version']!r}, this loader reads {FORMAT_VERSION}")
    if "gim" not in manifest["models"]:
        raise EngineError(f"{path}: models has no 'gim' entry")
    for name, entry in manifest["models"].items():
        if name not in MODEL_NAMES:
            raise EngineError(f"{path}: unknown model {name!r}")
        for key in ("config", "input_shape", "program", "weights"):
            if key not in entry:
                raise EngineError(f"{path}: models.{name} lacks {key!r}")
    return manifest


def verify_files(folder: Path, manifest: dict) -> None:
    """Every file the manifest lists exists and has its recorded sha256."""
    for name, digest in manifest["files"].items():
        path = folder / name
        if not path.is_file():
            raise EngineError(f"{path}: missing (listed in manifest.json)")
        actual = sha256_file(path)
        if actual != digest:
            raise EngineError(f"{path}: sha256 {actual[:12]}... does not match manifest.json ({digest[:12]}...); "
                              "the file is corrupt or was changed after export")


def cache_dir(folder: Path, manifest: dict) -> Path:
    """Where compiled variants go: the engine folder if writable, else a per-engine user cache."""
    if os.access(folder, os.W_OK):
        return folder
    key = hashlib.sha256(json.dumps(manifest["files"], sort_keys=True).encode()).hexdigest()[:16]
    path = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "fes-live" / "engines" / key
    path.mkdir(parents=True, exist_ok=True)
    return path


@dataclass
class Runner:
    """One model behind one backend: numpy in, tuple of numpy out."""
    name: str
    backend: str
    fn: Callable
    device: str

    def __post_init__(self) -> None:
        self._pinned: dict[tuple[int, ...], torch.Tensor] = {}  # CUDA: one page-locked staging buffer per shape

    def _to_device(self, x: np.ndarray) -> torch.Tensor:
        """One host-to-device copy; on CUDA through a pinned buffer (asynchronous, no pageable bounce)."""
        x = np.ascontiguousarray(x, dtype=np.float32)
        if not self.device.startswith("cuda"):
            return torch.as_tensor(x, device=self.device)
        buf = self._pinned.get(x.shape)
        if buf is None:
            buf = self._pinned[x.shape] = torch.empty(x.shape, dtype=torch.float32, pin_memory=True)
        buf.numpy()[...] = x
        return buf.to(self.device, non_blocking=True)

    def __call__(self, x: np.ndarray) -> tuple[np.ndarray, ...]:
        t = self._to_device(x)
        with torch.inference_mode():
            out = self.fn(t)
        if isinstance(out, torch.Tensor):
            out = (out,)
        return tuple(o.detach().float().cpu().numpy() for o in out)


class Engine:
    """A loaded engine. `gim(windows)` -> (intensity, apex_probs); `fedn(x)` -> FEDNOutput of numpy arrays."""

    def __init__(self, folder: Path, manifest: dict, runners: dict[str, Runner], reason: str):
        self.folder = folder
        self.manifest = manifest
        self._runners = runners
        self.backend = f"{runners['gim'].backend}: {reason}"
        self.has_fedn = "fedn" in runners
        self.fedn_threshold: float | None = None  # the user's, in place of the manifest's (load_engine)

    def gim(self, windows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        windows = np.asarray(windows, dtype=np.float32)
        want = tuple(self.manifest["models"]["gim"]["input_shape"][1:])
        if windows.ndim != 4 or windows.shape[1:] != want:
            raise ValueError(f"GIM input must be (B, {', '.join(map(str, want))}), got {windows.shape}")
        if len(windows) == 0:
            return np.zeros(0, np.float32), np.zeros((0, 2), np.float32)
        intensity, apex = self._runners["gim"](windows)
        return intensity, apex

    def fedn_batch(self, x: np.ndarray) -> tuple[np.ndarray, ...]:
        """FEDN on several windows (B, W, F) -> the FEDNOutput fields with batch B: one call where the program takes
        a batch (manifest input_shape[0] == -1), else one call per window (engines exported before batching)."""
        x = np.asarray(x, dtype=np.float32)
        if x.ndim != 3 or len(x) == 0:
            raise ValueError(f"FEDN batch input must be (B, W, F) with B >= 1, got {x.shape}")
        if self.manifest["models"]["fedn"]["input_shape"][0] == -1:
            return tuple(self.fedn(x))
        outs = [tuple(self.fedn(x[i:i + 1])) for i in range(len(x))]
        return tuple(np.concatenate(field) for field in zip(*outs))

    def fedn(self, x: np.ndarray):
        if not self.has_fedn:
            raise EngineError(f"{self.folder}: this engine has no FEDN model")
        x = np.asarray(x, dtype=np.float32)
        want = tuple(self.manifest["models"]["fedn"]["input_shape"])
        if x.ndim != len(want) or any(d != w for d, w in zip(x.shape, want) if w != -1):
            raise ValueError(f"FEDN input must be {want} (-1: any batch), got {x.shape}")
        _, _, output_cls = model_classes("fedn")
        return output_cls(*self._runners["fedn"](x))

    @property
    def device(self) -> str:
        return self._runners["gim"].device

    def upgrade(self, backend: str) -> bool:
        """Switch to `backend` if every model's variant is present and runs (e.g. packages a background build just
        finished); the spotters notice nothing, since `gim` and `fedn` read the runners on every call."""
        device = self.device
        try:
            runners = _try_backend(self.folder, self.manifest, backend, device, compile_missing=False)
        except EngineError as e:
            log.warning("%s: staying on %s (%s)", self.folder, self.backend, e)
            return False
        self._runners = runners
        self.backend = f"{backend}: upgraded on {device}"
        log.info("%s", self.describe())
        return True

    @property
    def labels(self) -> dict:
        return self.manifest["labels"]

    def spotter_config(self, fps: float | None = None):
        """models.online.SpotterConfig from the manifest (thresholds calibrated at export included) for a stream
        of `fps` (default: the engine's); the models' rate and FEDN window always follow the engine, so a manifest
        cannot disagree with its own models, and a faster stream is brought down to the models' rate."""
        from fes_live.models.online import SpotterConfig
        from fes_live.stream.config import ConfigError, from_dict
        data = dict(self.manifest.get("spotter", {}))
        if self.fedn_threshold is not None:
            data["fedn_only_threshold"] = self.fedn_threshold
        data["fps"] = float(fps or self.manifest["fps"])
        data["model_fps"] = float(self.manifest["fps"])
        data.setdefault("emotions", list(self.manifest["labels"]["emotions"]))
        data.setdefault("baseline", {})
        data["baseline"] = {**data["baseline"], "fps": data["fps"]}
        if self.has_fedn:
            data["fedn_window"] = int(self.manifest["models"]["fedn"]["input_shape"][1])
            data["geometry_dim"] = int(self.manifest["models"]["fedn"]["input_shape"][2])
            data["fedn_stride"] = int(self.manifest["stride"].get("fedn", data.get("fedn_stride", 16)))
        try:
            return from_dict(SpotterConfig, data, where=f"{self.folder / 'manifest.json'} spotter")
        except ConfigError as e:
            raise EngineError(str(e)) from None
        except ValueError as e:  # a value SpotterConfig rejects
            raise EngineError(f"{self.folder / 'manifest.json'} spotter: {e}") from None

    def new_spotter(self, fps: float | None = None):
        """A fresh models.online.OnlineSpotter on this engine's callables (one per stream of `fps`)."""
        from fes_live.models.online import OnlineSpotter
        return OnlineSpotter(self.gim, self.fedn if self.has_fedn else None, self.spotter_config(fps))

    def describe(self) -> str:
        m = self.manifest
        own = m.get("spotter", {}).get("fedn_only_threshold")
        threshold = "" if self.fedn_threshold is None else f", FEDN threshold {self.fedn_threshold} (its own {own})"
        return (f"engine {self.folder} v{m['version']} ({m['feature_type']}, {m['fps']} fps, "
                f"models {sorted(self._runners)}{threshold}) backend {self.backend}")


# ------------------------------------------------------------------------------------------------------- backends

def _load_eager(folder: Path, name: str, entry: dict, device: str) -> Callable:
    path = folder / entry["weights"]
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - torch raises many types for a bad file
        raise EngineError(f"{path}: cannot read weights ({type(e).__name__}: {str(e).splitlines()[0][:200]})") from None
    return inference_module(name, build_model(name, entry["config"], state)).to(device)


def _load_export(folder: Path, name: str, entry: dict, device: str) -> Callable:
    path = folder / entry["program"]
    try:
        program = torch.export.load(str(path))
    except Exception as e:  # noqa: BLE001
        raise EngineError(f"{path}: cannot load the exported program ({type(e).__name__}: "
                          f"{str(e).splitlines()[0][:200] if str(e) else ''})") from None
    module = program.module()
    if device != "cpu":
        module = module.to(device)
    return module


def aoti_name(name: str, device: str) -> str:
    return f"{name}.aoti-{'cuda' if device.startswith('cuda') else 'cpu'}.pt2"


def trt_name(name: str) -> str:
    return f"{name}.trt.ep"


def _find_variant(folder: Path, manifest: dict, filename: str) -> Path | None:
    """A compiled variant listed in the manifest (verified), or one cached by an earlier on-demand compile."""
    if filename in manifest["files"]:
        return folder / filename
    cached = cache_dir(folder, manifest) / filename
    stamp = cached.with_suffix(cached.suffix + ".sha256")
    if cached.is_file() and stamp.is_file() and stamp.read_text().strip() == _source_digest(manifest, filename):
        return cached
    return None


def _source_digest(manifest: dict, filename: str) -> str:
    """A compiled file is valid for the program it was compiled from: remember that program's sha256."""
    name = filename.split(".")[0]
    return manifest["files"][manifest["models"][name]["program"]]


def _load_aoti(folder: Path, name: str, entry: dict, device: str, manifest: dict, compile_missing: bool) -> Callable:
    filename = aoti_name(name, device)
    path = _find_variant(folder, manifest, filename)
    if path is None:
        if not compile_missing:
            raise EngineError(f"{folder / filename}: no AOTInductor package for {device}")
        path = compile_aoti(folder, manifest, name, device)
    try:
        return torch._inductor.aoti_load_package(str(path))
    except Exception as e:  # noqa: BLE001
        raise EngineError(f"{path}: cannot load the AOTInductor package ({type(e).__name__}: "
                          f"{str(e).splitlines()[0][:200] if str(e) else ''})") from None


def _load_tensorrt(folder: Path, name: str, entry: dict, device: str, manifest: dict,
                   compile_missing: bool) -> Callable:
    if not device.startswith("cuda"):
        raise EngineError("tensorrt backend needs a CUDA device")
    try:
        import torch_tensorrt  # noqa: F401  (registers the TensorRT runtime ops the saved program calls)
    except ImportError:
        raise EngineError("tensorrt backend needs the torch_tensorrt package (pip install torch-tensorrt)") from None
    filename = trt_name(name)
    path = _find_variant(folder, manifest, filename)
    if path is None:
        if not compile_missing:
            raise EngineError(f"{folder / filename}: no TensorRT engine")
        path = compile_tensorrt(folder, manifest, name)
    try:
        return torch.export.load(str(path)).module()
    except Exception as e:  # noqa: BLE001
        raise EngineError(f"{path}: cannot load the TensorRT program ({type(e).__name__}: {e})") from None


def compile_aoti(folder: Path, manifest: dict, name: str, device: str, out_dir: Path | None = None) -> Path:
    """AOTInductor-compile <name>.pt2 for `device` and cache it (about a minute per model on a small CPU)."""
    entry = manifest["models"][name]
    program = torch.export.load(str(folder / entry["program"]))
    if device.startswith("cuda"):  # re-export on the device: a CPU program's constants stay on the CPU otherwise
        module = program.module().to(device)
        example = torch.zeros(_example_shape(entry), device=device)
        program = torch.export.export(module, (example,), dynamic_shapes=_dynamic_shapes(entry))
    out = (out_dir or cache_dir(folder, manifest)) / aoti_name(name, device)
    log.info("compiling %s with AOTInductor for %s -> %s", name, device, out)
    torch._inductor.aoti_compile_and_package(program, package_path=str(out))
    if out_dir is None:
        out.with_suffix(out.suffix + ".sha256").write_text(_source_digest(manifest, out.name))
    return out


def compile_tensorrt(folder: Path, manifest: dict, name: str, out_dir: Path | None = None,
                     max_batch: int = 256) -> Path:
    """TensorRT FP16 through torch_tensorrt's dynamo path, saved as an ExportedProgram (CUDA only)."""
    import torch_tensorrt
    entry = manifest["models"][name]
    module = _load_eager(folder, name, entry, "cuda")
    shape = _example_shape(entry)
    if entry["input_shape"][0] == -1:  # one optimisation profile over the batch buckets
        spec = torch_tensorrt.Input(min_shape=(1, *shape[1:]), opt_shape=(min(64, max_batch), *shape[1:]),
                                    max_shape=(max_batch, *shape[1:]), dtype=torch.float32)
    else:
        spec = torch_tensorrt.Input(shape=shape, dtype=torch.float32)
    log.info("compiling %s with TensorRT (FP16)", name)
    compiled = torch_tensorrt.compile(module, ir="dynamo", inputs=[spec], enabled_precisions={torch.float16})
    out = (out_dir or cache_dir(folder, manifest)) / trt_name(name)
    torch_tensorrt.save(compiled, str(out), inputs=[torch.zeros(shape, device="cuda")])
    if out_dir is None:
        out.with_suffix(out.suffix + ".sha256").write_text(_source_digest(manifest, out.name))
    return out


def _example_shape(entry: dict) -> tuple[int, ...]:
    return tuple(2 if d < 0 else d for d in entry["input_shape"])


def _dynamic_shapes(entry: dict):
    """A batch dimension where the manifest says -1: GIM any number of windows (a whole video is one batch), FEDN
    one window per stream of a batched round (engines exported before that say 1 and take one window a call)."""
    return ({0: torch.export.Dim("batch", min=1, max=1 << 16)},) if entry["input_shape"][0] == -1 else None


PROBE_SEED = 0


def probe_input(entry: dict) -> np.ndarray:
    """The fixed input every backend of a model must agree on (standard normal, the manifest's example shape)."""
    return np.random.default_rng(PROBE_SEED).standard_normal(_example_shape(entry)).astype(np.float32)


def fingerprint(outputs) -> list[list[float]]:
    """Per output: sum, sum of |x| and a fixed random projection; three numbers that any change of the computation
    moves, small enough for the manifest."""
    rng = np.random.default_rng(PROBE_SEED + 1)
    out = []
    for o in outputs:
        o = np.asarray(o, dtype=np.float64)
        out.append([float(o.sum()), float(np.abs(o).sum()), float((o * rng.standard_normal(o.shape)).sum())])
    return out


def _check_probe(runner: Runner, entry: dict, path: Path) -> None:
    """The model reproduces what the exported program gave on the probe at export (float32 noise allowed)."""
    got, want = np.array(fingerprint(runner(probe_input(entry)))), np.array(entry["probe"], dtype=np.float64)
    scale = np.abs(want[:, 1:2]) + 1.0  # per output: its sum of |x|, so the tolerance follows the output's size
    if got.shape != want.shape or not np.all(np.abs(got - want) <= 1e-4 * scale):
        raise EngineError(f"{path}: this code's {runner.name} model does not reproduce the exported program's probe "
                          "(the model code changed since export)")


def _check_runs(runner: Runner, entry: dict, path: Path) -> None:
    """Run once on zeros of the declared input: a program that does not fit the manifest fails here, clearly."""
    shape = _example_shape(entry)
    try:
        out = runner(np.zeros(shape, dtype=np.float32))
    except Exception as e:  # noqa: BLE001
        raise EngineError(f"{path}: does not run on the manifest's input shape {shape} "
                          f"({type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''})") from None
    if runner.name == "gim" and (len(out) != 2 or out[0].shape != (shape[0],) or out[1].shape != (shape[0], 2)):
        raise EngineError(f"{path}: GIM outputs {[o.shape for o in out]}, expected ({shape[0]},) and ({shape[0]}, 2)")


def _try_backend(folder: Path, manifest: dict, backend: str, device: str, compile_missing: bool,
                 checked: bool = False) -> dict[str, Runner]:
    runners = {}
    for name, entry in manifest["models"].items():
        if backend == "eager":
            fn, path = _load_eager(folder, name, entry, device), folder / entry["weights"]
        elif backend == "export":
            fn, path = _load_export(folder, name, entry, device), folder / entry["program"]
        elif backend == "aoti":
            fn, path = _load_aoti(folder, name, entry, device, manifest, compile_missing), folder / aoti_name(name, device)
        elif backend == "tensorrt":
            fn, path = _load_tensorrt(folder, name, entry, device, manifest, compile_missing), folder / trt_name(name)
        else:
            raise EngineError(f"unknown backend {backend!r}; choose one of {('auto',) + BACKENDS}")
        runner = Runner(name, backend, fn, device)
        _check_runs(runner, entry, path)
        if checked:  # (eager only: the backend that runs this code's models)
            _check_probe(runner, entry, path)
        runners[name] = runner
    return runners


def _auto_order(manifest: dict, device: str) -> list[tuple[str, bool]]:
    """(backend, checked) in the order "auto" tries them: eager before export only where every model has a probe
    to check it against."""
    probed = all("probe" in entry for entry in manifest["models"].values())
    order = [("tensorrt", False)] if device.startswith("cuda") else []
    order.append(("aoti", False))
    if probed:
        order.append(("eager", True))
    order.append(("export", False))
    if not probed:
        order.append(("eager", False))
    return order


def load_engine(path: str | Path | None = None, backend: str = "auto", device: str | None = None,
                fedn_threshold: float | None = None) -> Engine:
    """Load an engine folder (None: the bundled default). `backend`: "auto" or one of BACKENDS. `fedn_threshold`:
    the FEDN score an expression needs, in place of the engine's own (`--fedn-threshold`: higher, fewer false
    alarms and fewer expressions found; docs/real_dev.md, "Operating points").

    "auto" tries tensorrt (CUDA only), aoti, eager checked against the manifest's probe, export (then eager
    unchecked where there is no probe) in that order, using only what is present (nothing is compiled on the way),
    and records in `Engine.backend` which one it took and why the better ones were skipped.
    A named backend compiles its variant on demand if missing (and caches it), and fails with EngineError if it
    cannot be used.
    """
    if fedn_threshold is not None and not 0.0 < fedn_threshold < 1.0:
        raise EngineError(f"FEDN threshold {fedn_threshold}: give a score between 0 and 1 (exclusive)")
    folder = engine_folder(path)
    manifest = read_manifest(folder)
    verify_files(folder, manifest)
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    if backend != "auto":
        if backend not in BACKENDS:
            raise EngineError(f"unknown backend {backend!r}; choose one of {('auto',) + BACKENDS}")
        runners = _try_backend(folder, manifest, backend, device, compile_missing=True)
        engine = Engine(folder, manifest, runners, f"requested, on {device}")
    else:
        skipped = []
        candidates = _auto_order(manifest, device)
        for i, (name, checked) in enumerate(candidates):
            try:
                runners = _try_backend(folder, manifest, name, device, compile_missing=False, checked=checked)
            except EngineError as e:
                if i == len(candidates) - 1:
                    raise
                skipped.append(f"{name}: {e}")
                continue
            reason = f"best present on {device}" + (f" (skipped {'; '.join(skipped)})" if skipped else "")
            engine = Engine(folder, manifest, runners, reason)
            break
    engine.fedn_threshold = fedn_threshold
    log.info("%s", engine.describe())
    return engine


def write_manifest(folder: Path, manifest: dict) -> None:
    """(Re)write manifest.json with fresh sha256 sums of the files it lists (used by fes-export and calibration)."""
    manifest = dict(manifest)
    manifest["files"] = {name: sha256_file(folder / name) for name in sorted(manifest["files"])}
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=False) + "\n")


def manifest_summary(manifest: dict) -> dict[str, Any]:
    """The few manifest fields a user wants to see (CLI, logs, events)."""
    keys = ("version", "feature_type", "fps", "window", "stride", "labels", "thresholds", "training_data")
    return {k: manifest[k] for k in keys if k in manifest}
