"""fes-live: real-time facial expression spotting.

The repository's folders `stream/`, `models/`, `train/`, `calibration/` and `benchmarks/` install as
`fes_live.stream`, `fes_live.models`, ... (see pyproject.toml), so user code never shadows them.
"""
from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version as _version

try:
    __version__ = _version("fes-live")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+unknown"


def version_text(prog: str) -> str:
    """What `--version` prints on every console script."""
    return f"{prog} {__version__}"
