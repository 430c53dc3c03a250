"""Shared fixtures: where the real data lives, and skips for what a machine lacks (never a download)."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("FES_SHARED_DIR", REPO.parent / "shared"))
DATA = SHARED / "data"
VIDEO = DATA / "video"
FACE_MODEL = SHARED / "models" / "face_landmarker_v2_with_blendshapes.task"

# The product looks for the MediaPipe model via this variable before its user cache; tests point it at shared/.
if FACE_MODEL.is_file():
    os.environ.setdefault("FES_FACE_MODEL", str(FACE_MODEL))
# Detectors started by tests never compile AOTInductor packages in the background (tests/test_engine_build.py does).
os.environ.setdefault("FES_AOTI_BUILD", "0")


def need(path: Path) -> Path:
    """Skip the test when a file from ../shared is missing on this machine."""
    if not path.exists():
        pytest.skip(f"missing {path}")
    return path


def need_tool(name: str) -> str:
    found = shutil.which(name)
    if not found:
        pytest.skip(f"{name} not installed (.ci/run installs it)")
    return found


@pytest.fixture
def face_model() -> Path:
    return need(FACE_MODEL)
