"""INT8 calibration inputs come from real feature files, in the spotter's shapes; TensorRT stays optional."""
import importlib.util

import numpy as np
import pytest

from fes_live.calibration.int8 import CalibrationBatches, entropy_calibrator


def features(path, T=200, face_from=20):
    rng = np.random.default_rng(0)
    np.savez(path, geometry=rng.normal(size=(T, 1008)).astype(np.float32),
             roi_flow=rng.normal(size=(T, 12, 2)).astype(np.float32),
             face_present=np.arange(T) >= face_from, frame_index=np.arange(T), pts_s=np.arange(T) / 30.0,
             fps=np.float64(30.0), roi_names=np.array([f"r{i}" for i in range(12)]))
    return path


def test_gim_and_fedn_batches(tmp_path):
    f = features(tmp_path / "a.npz")
    gim = list(CalibrationBatches([f], "gim", batch_size=8, max_batches=4))
    assert len(gim) == 4 and all(b.shape == (8, 17, 12, 2) and b.dtype == np.float32 for b in gim)
    assert all(np.abs(b).sum() > 0 for b in gim)  # windows centred on face frames only
    fedn = list(CalibrationBatches([f], "fedn", batch_size=2, max_batches=3, fedn_window=64))
    assert len(fedn) == 3 and fedn[0].shape == (2, 64, 1008)
    again = list(CalibrationBatches([f], "gim", batch_size=8, max_batches=4))
    assert all(np.array_equal(a, b) for a, b in zip(gim, again))  # seeded


def test_bad_inputs(tmp_path):
    with pytest.raises(ValueError, match="model must be"):
        CalibrationBatches([tmp_path / "a.npz"], "resnet")
    with pytest.raises(ValueError, match="at least one"):
        CalibrationBatches([], "gim")
    f = features(tmp_path / "short.npz", T=30)
    with pytest.raises(ValueError, match="no usable fedn"):
        list(CalibrationBatches([f], "fedn", fedn_window=64))


@pytest.mark.skipif(importlib.util.find_spec("tensorrt") is not None, reason="TensorRT installed")
def test_calibrator_without_tensorrt_says_so(tmp_path):
    f = features(tmp_path / "a.npz")
    with pytest.raises(ImportError, match="needs TensorRT"):
        entropy_calibrator(CalibrationBatches([f], "gim"), tmp_path / "cache")
