"""README's install gives the CPU build of torch on an ordinary Linux machine (no local wheels, no pip config).

Checked by pip's dry-run report (metadata only, the wheel is never downloaded); skipped when PyTorch's index
cannot be reached (this build machine), run where it can (CI with network access).
"""
import subprocess
import sys

import pytest

from conftest import REPO


def test_readme_torch_step_resolves_to_the_cpu_build():
    done = subprocess.run([sys.executable, str(REPO / "scripts" / "check_cpu_resolution.py")], capture_output=True,
                          text=True, timeout=900)
    if done.returncode == 77:
        pytest.skip(done.stderr.strip())
    assert done.returncode == 0, done.stdout + done.stderr
    assert "+cpu" in done.stdout and "0 nvidia" in done.stdout, done.stdout
