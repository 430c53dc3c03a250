"""fes-live: real-time facial expression spotting.

The repository's folders `stream/`, `models/`, `train/`, `calibration/` and `benchmarks/` install as
`fes_live.stream`, `fes_live.models`, ... (see pyproject.toml), so user code never shadows them.
"""
from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version as _version
from pathlib import Path as _Path

# Run from a source checkout (its root on sys.path, installed or not), this folder shadows an installed fes_live:
# its subpackages are then the checkout's top-level folders, the same files an install maps.
_root = _Path(__file__).resolve().parent.parent
if (_root / "stream" / "__init__.py").is_file() and not (_root / "fes_live" / "stream").exists():
    __path__.append(str(_root))

try:
    __version__ = _version("fes-live")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+unknown"


def version_text(prog: str) -> str:
    """What `--version` prints on every console script."""
    return f"{prog} {__version__}"
