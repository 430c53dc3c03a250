"""TensorRT INT8 calibration: entropy calibration over real, cached feature windows.

INT8 needs the activation ranges of real inputs. `CalibrationBatches` cuts them from `fes-live extract` feature
files (GIM: 17-frame ROI-flow windows; FEDN: W-frame geometry-minus-baseline windows, exactly as the spotter
feeds them); `entropy_calibrator` wraps them in a `tensorrt.IInt8EntropyCalibrator2` with a calibration cache,
for TensorRT's builder (`config.int8_calibrator = ...`). TensorRT is optional and imported only by
`entropy_calibrator`; without it that call raises a clear ImportError and the rest of fes-live is unaffected.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterator, Sequence

import numpy as np


class CalibrationBatches:
    """Fixed-size float32 batches of model inputs from feature files, seeded, at most `max_batches`."""

    def __init__(self, feature_files: Sequence[str | Path], model: str, batch_size: int = 32,
                 max_batches: int = 16, fedn_window: int = 128, fps: float = 30.0, seed: int = 0):
        if model not in ("gim", "fedn"):
            raise ValueError(f"model must be 'gim' or 'fedn', got {model!r}")
        if not feature_files:
            raise ValueError("INT8 calibration needs at least one feature file")
        self.files = [Path(f) for f in feature_files]
        self.model, self.batch_size, self.max_batches = model, batch_size, max_batches
        self.fedn_window, self.fps, self.seed = fedn_window, fps, seed

    @property
    def shape(self) -> tuple[int, ...]:
        return (self.batch_size, 17, 12, 2) if self.model == "gim" else (self.batch_size, self.fedn_window, 1008)

    def _samples(self) -> np.ndarray:
        from fes_live.models.baseline import BaselineConfig, baseline_normalize
        from fes_live.stream.features import flow_windows, load_features
        rng = np.random.default_rng(self.seed)
        need = self.batch_size * self.max_batches
        per_file = int(np.ceil(need / len(self.files)))
        out = []
        for path in self.files:
            f = load_features(path)
            T = len(f["frame_index"])
            face = np.flatnonzero(f["face_present"])
            if self.model == "gim":
                if len(face) == 0:
                    continue
                centres = rng.choice(face, size=min(per_file, len(face)), replace=False)
                out.append(flow_windows(f["roi_flow"], np.sort(centres)))
            else:
                if T < self.fedn_window:
                    continue
                x = baseline_normalize(f["geometry"], f["face_present"], BaselineConfig(fps=float(f["fps"])),
                                       f["new_face"])
                starts = rng.integers(0, T - self.fedn_window + 1, size=per_file)
                out.append(np.stack([x[s:s + self.fedn_window] for s in starts]))
        if not out:
            raise ValueError(f"no usable {self.model} calibration inputs in {[str(f) for f in self.files]}")
        samples = np.concatenate(out).astype(np.float32)
        return samples[rng.permutation(len(samples))][:need]

    def __iter__(self) -> Iterator[np.ndarray]:
        samples = self._samples()
        for b in range(len(samples) // self.batch_size):
            yield np.ascontiguousarray(samples[b * self.batch_size:(b + 1) * self.batch_size])


def entropy_calibrator(batches: CalibrationBatches, cache_file: str | Path):
    """A tensorrt.IInt8EntropyCalibrator2 over `batches` (CUDA device memory via torch), caching its table."""
    try:
        import tensorrt as trt
    except ImportError:
        raise ImportError("INT8 calibration needs TensorRT: pip install tensorrt (and a CUDA GPU)") from None
    import torch

    class EntropyCalibrator(trt.IInt8EntropyCalibrator2):
        def __init__(self):
            super().__init__()
            self.batches = iter(batches)
            self.cache_file = Path(cache_file)
            self.device_input = torch.empty(batches.shape, dtype=torch.float32, device="cuda")

        def get_batch_size(self) -> int:
            return batches.batch_size

        def get_batch(self, names):
            try:
                batch = next(self.batches)
            except StopIteration:
                return None
            self.device_input.copy_(torch.from_numpy(batch))
            return [int(self.device_input.data_ptr())]

        def read_calibration_cache(self):
            return self.cache_file.read_bytes() if self.cache_file.is_file() else None

        def write_calibration_cache(self, cache) -> None:
            self.cache_file.write_bytes(bytes(cache))

    return EntropyCalibrator()
