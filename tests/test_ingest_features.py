"""Per-frame features: the ROI flow kernel on hand-made flow fields, windows, geometry, and `fes-live extract`."""
from __future__ import annotations

import time

import cv2
import numpy as np
import pytest

from conftest import DATA, VIDEO, need
from fes_live.stream import cli
from fes_live.stream.config import ConfigError, from_dict
from fes_live.stream.face import BLENDSHAPE_NAMES, CROP_SIZE, FaceConfig, FaceResult, FaceState, FaceTracker
from fes_live.stream.features import (GEOMETRY_DIM, ROI_MESH_INDEX, ROI_NAMES, WINDOW, FeatureConfig, FeatureExtractor,
                             _dominant_mean, flow_windows, load_features, roi_flow_from_field)
from fes_live.stream.sources import Frame, open_source


def test_dominant_mean_by_hand():
    # 6 vectors pointing right (+x bin), 2 pointing up (-y bin): the +x bin dominates
    us = np.array([1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 0.0, 0.0])
    vs = np.array([0.0, 0.0, 0.0, 0.0, 0.0, 0.0, -9.0, -9.0])
    u, v = _dominant_mean(us, vs, 0.5)  # top half of the +x bin: 4, 5, 6 -> mean magnitude 5, direction +x
    assert (u, v) == pytest.approx((5.0, 0.0))
    u, v = _dominant_mean(us, vs, 1.0)
    assert (u, v) == pytest.approx((3.5, 0.0))
    # mixed directions inside one bin: unit mean direction x mean magnitude
    u, v = _dominant_mean(np.array([1.0, 1.0]), np.array([0.5, -0.5]), 1.0)
    assert v == pytest.approx(0.0) and u == pytest.approx(np.hypot(1, 0.5))
    assert _dominant_mean(np.zeros(0), np.zeros(0), 0.6) == (0.0, 0.0)


def _centers():
    return np.array([[20, 20], [40, 20], [60, 20], [80, 20], [20, 60], [40, 60],
                     [56, 56], [56, 66], [30, 90], [50, 90], [70, 90], [50, 100]], np.int64)


def test_head_motion_is_removed_and_local_motion_kept():
    flow = np.zeros((112, 112, 2), np.float32)
    flow[..., 0] = 2.0   # the whole face moves 2 px right (head motion)
    flow[..., 1] = -1.0
    flow[85:96, 65:76] += (0.0, 3.0)  # the left mouth corner also moves 3 px down
    nose_box = np.array([50, 50, 62, 72], np.int64)
    out = roi_flow_from_field(flow, _centers(), nose_box, 4, 0.6, 0.88)
    assert out.shape == (12, 2) and out.dtype == np.float32
    mouth_left = ROI_NAMES.index("mouth_left")
    assert out[mouth_left] == pytest.approx((0.0, 3.0), abs=1e-5)
    others = np.delete(out, mouth_left, axis=0)
    assert np.abs(others).max() < 1e-5


def test_patch_at_the_border_is_clipped_not_an_error():
    flow = np.ones((32, 32, 2), np.float32)
    centers = np.array([[0, 0], [31, 31], [-50, 200]] + [[16, 16]] * 9, np.int64)
    out = roi_flow_from_field(flow, centers, np.array([10, 10, 20, 20], np.int64), 4, 0.6, 0.88)
    assert np.all(np.isfinite(out)) and np.abs(out).max() < 1e-5
    assert out[2].tolist() == [0.0, 0.0]  # entirely outside: no pixels, zero flow


def test_flow_windows_pad_with_zeros():
    t = 20
    roi = np.arange(t * 12 * 2, dtype=np.float32).reshape(t, 12, 2) + 1
    w = flow_windows(roi, [0, 10, t - 1])
    assert w.shape == (3, WINDOW, 12, 2)
    assert np.all(w[0, :8] == 0) and np.array_equal(w[0, 8:], roi[:9])
    assert np.array_equal(w[1], roi[2:19])
    assert np.array_equal(w[2, :9], roi[t - 9:]) and np.all(w[2, 9:] == 0)
    assert flow_windows(roi, np.arange(t)).shape == (t, WINDOW, 12, 2)
    with pytest.raises(ValueError, match="centres"):
        flow_windows(roi, [t])


def test_roi_mapping_is_complete():
    assert len(ROI_NAMES) == len(ROI_MESH_INDEX) == 12
    assert len(set(ROI_MESH_INDEX.tolist())) == 12 and ROI_MESH_INDEX.max() < 478
    assert GEOMETRY_DIM == 52 + 478 * 2 == len(BLENDSHAPE_NAMES) + 956
    with pytest.raises(ConfigError):
        from_dict(FeatureConfig, {"flow_sise": 64})
    with pytest.raises(ValueError):
        FeatureConfig(flow_method="tvl1")


@pytest.fixture(scope="module")
def clip_features():
    clip = need(VIDEO / "pyfeat_single_face.mp4")
    with open_source(str(clip)) as src, FaceTracker(FaceConfig()) as tracker:
        extractor = FeatureExtractor(FeatureConfig())
        return [extractor.update(f, tracker.update(f)) for f in src]


def test_features_of_a_real_clip(clip_features):
    feats = clip_features
    assert all(f.face_present for f in feats)
    geom = np.stack([f.geometry for f in feats])
    assert geom.shape == (72, GEOMETRY_DIM) and geom.dtype == np.float32
    lm = geom[:, 52:].reshape(72, 478, 2)
    assert np.abs(lm).max() < 0.75  # aligned, centred: within the crop (+/- 0.5) with some margin
    # pose-free: the nose tip stays put in the aligned frame although the head moves in the image
    assert lm[:, 4].std(axis=0).max() < 0.01
    roi = np.stack([f.roi_flow for f in feats])
    assert roi.shape == (72, 12, 2) and np.all(roi[0] == 0)  # no previous frame
    mag = np.linalg.norm(roi, axis=2)
    mouth = [ROI_NAMES.index(n) for n in ("mouth_right", "mouth_left", "upper_lip", "lower_lip")]
    # the smile's onset (frames ~16-24) moves the mouth far more than the neutral start does
    assert mag[16:25, mouth].max() > 3 * np.median(mag[1:14, mouth])
    assert feats[0].crop.shape == (CROP_SIZE, CROP_SIZE, 3)


def test_no_face_gives_zeros_and_resets_flow(clip_features):
    extractor = FeatureExtractor(FeatureConfig(keep_crop=False))
    frame = Frame("t", 5, 0.2, 0.0, 0.2, np.zeros((64, 64, 3), np.uint8))
    f = extractor.update(frame, FaceResult(FaceState.NONE, None, []))
    assert not f.face_present and f.crop is None
    assert f.geometry.shape == (GEOMETRY_DIM,) and not f.geometry.any()
    assert f.roi_flow.shape == (12, 2) and not f.roi_flow.any()
    assert (f.frame_index, f.pts_s) == (5, 0.2)


def test_grey_frames_work_end_to_end():
    img = cv2.cvtColor(cv2.imread(str(need(DATA / "images" / "pyfeat_single_face.jpg"))), cv2.COLOR_BGR2GRAY)
    frames = [Frame("t", i, i / 30, 0.0, i / 30, img) for i in range(3)]
    with FaceTracker() as tracker:
        extractor = FeatureExtractor()
        feats = [extractor.update(f, tracker.update(f)) for f in frames]
    assert all(f.face_present for f in feats) and feats[-1].roi_flow.shape == (12, 2)
    assert feats[-1].crop.shape == (CROP_SIZE, CROP_SIZE, 3)


def test_extract_cli_roundtrip(tmp_path, capsys):
    clip = need(VIDEO / "pyfeat_face_noface.mov")
    out = tmp_path / "feat.npz"
    assert cli.main(["extract", str(clip), "-o", str(out), "--crops", "--no-progress"]) == 0
    assert "169 frames" in capsys.readouterr().out
    d = load_features(out)
    assert d["geometry"].shape == (169, GEOMETRY_DIM) and d["geometry"].dtype == np.float32
    assert d["roi_flow"].shape == (169, 12, 2) and d["roi_flow"].dtype == np.float32
    assert d["face_present"].dtype == bool and d["frame_index"].dtype == np.int64
    assert d["pts_s"].dtype == np.float64 and np.all(np.diff(d["pts_s"]) > 0)
    assert d["crops"].shape == (169, 224, 224, 3) and d["crops"].dtype == np.uint8
    assert d["roi_names"] == ROI_NAMES and d["fps"] > 0
    assert np.array_equal(d["frame_index"], np.arange(169))
    present = d["face_present"]
    cut = int(np.argmin(present))  # first frame without the face
    assert 60 <= cut <= 110 and present[:cut].all() and not present[cut:].any()
    assert not d["geometry"][cut:].any() and not d["crops"][cut:].any()


def test_extract_gives_the_same_features_on_every_run(smile_npz, tmp_path):
    """MediaPipe smooths landmarks by the timestamps it is given; a file's own clock (not open time + PTS, whose
    millisecond rounding changes with the open time) makes training features reproducible bit for bit."""
    out = tmp_path / "again.npz"
    time.sleep(0.0057)  # another sub-millisecond phase of the monotonic clock than the first run had
    assert cli.main(["extract", str(VIDEO / "pyfeat_single_face.mp4"), "-o", str(out), "--no-progress"]) == 0
    first, again = load_features(smile_npz), load_features(out)
    for key in ("geometry", "roi_flow", "face_present", "new_face", "pts_s"):
        assert np.array_equal(first[key], again[key]), key


def test_extract_and_load_errors(tmp_path):
    assert cli.main(["extract", str(tmp_path / "missing.mp4"), "-o", str(tmp_path / "x.npz"), "--no-progress"]) == 1
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"junk")
    with pytest.raises(ValueError, match="not a features"):
        load_features(bad)
    partial = tmp_path / "partial.npz"
    np.savez(partial, geometry=np.zeros((2, GEOMETRY_DIM), np.float32))
    with pytest.raises(ValueError, match="missing arrays"):
        load_features(partial)
    with pytest.raises(FileNotFoundError):
        load_features(tmp_path / "nope.npz")


def test_preview_prints_states(capsys):
    clip = need(VIDEO / "pyfeat_noface_face.mov")
    assert cli.main(["preview", "--source", str(clip)]) == 0
    lines = [ln for ln in capsys.readouterr().out.splitlines() if not ln.startswith("#")]
    assert len(lines) == 169
    states = [ln.split()[2] for ln in lines]
    assert states[0] == "none" and states.count("found") == 1
    assert "smileL=" in lines[-5]
    assert cli.main(["preview", "--source", "rtsp://127.0.0.1:1/none"]) == 1


def test_extract_a_folder_of_dataset_frames(tmp_path):
    """Datasets store frames as numbered JPEGs (CAS(ME)^3: unpadded, gapped); extract reads them in number order."""
    clip = need(VIDEO / "pyfeat_single_face.mp4")
    frames_dir = tmp_path / "color"
    frames_dir.mkdir()
    numbers = [5, 6, 7, 8, 9, 10, 11, 13, 14, 15]  # 12 is missing
    with open_source(str(clip)) as src:
        for n, frame in zip(numbers, src):
            cv2.imwrite(str(frames_dir / f"{n}.jpg"), frame.image)
    out = tmp_path / "f.npz"
    assert cli.main(["extract", str(frames_dir), "-o", str(out), "--fps", "30", "--no-progress"]) == 0
    d = load_features(out)
    assert d["fps"] == 30.0 and d["face_present"].all()
    assert np.array_equal(d["frame_index"], np.arange(10))
    assert np.allclose(d["pts_s"] * 30, np.array(numbers) - 5)
    assert "crops" not in d
