"""`fes-bench NAME [options]`: run one of the benchmarks in `benchmarks/` (each prints figures and ratios).

    fes-bench ingest   decode + face alignment + features, one 640x360 stream
    fes-bench models   CPU cost per frame of GIM and FEDN
    fes-bench live     N concurrent streams through the real sockets: fps and event latency
    fes-bench scale    the largest N streams one detector holds at 30 fps, against the model-only ceiling
    fes-bench journal  replay from old sequence numbers of a 300k-event journal while events flow
    fes-bench fuzz     hostile messages against a detector while a real stream runs: survival, RSS, fps
    fes-bench synth    fes-synth speed: one annotated 60 s video through the CLI, against real time
"""
from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path

from fes_live import version_text

BENCHMARKS = ("ingest", "models", "live", "scale", "journal", "fuzz", "synth")


def emit(report: str, figures: dict, json_path: str | None) -> int:
    """Print a benchmark's report and, with --json, write its figures; 0, the exit code of a finished run."""
    print(report)
    if json_path:
        Path(json_path).write_text(json.dumps(figures, indent=2))
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "--version":
        print(version_text("fes-bench"))
        return 0
    if not argv or argv[0] not in BENCHMARKS:
        print(__doc__.strip(), file=sys.stderr if argv and argv[0] not in ("-h", "--help") else sys.stdout)
        return 0 if argv and argv[0] in ("-h", "--help") else 2
    module = importlib.import_module(f"fes_live.benchmarks.{argv[0]}")
    return int(module.main(argv[1:]) or 0)


if __name__ == "__main__":
    sys.exit(main())
