"""Build an engine's AOTInductor packages for this machine once, in the background, so `--backend auto` gets the
fastest backend without anyone waiting for the compile.

An engine ships exported programs (portable) but no compiled packages (they depend on the machine and on the torch
build). The first detector that starts on a machine without them spots at once (eager where the engine's probe
checks it, else the exported program) and starts `python -m fes_live.stream.engine_build ENGINE` at low priority
(about one or two minutes per model on a small CPU, finishing even if the detector stops first); when it has finished, the detector switches to the packages between two
frames (`Engine.upgrade`), and every later start takes them directly. The packages go to the engine's cache
(`engine.cache_dir`) with the sha256 of the program they were compiled from, so a changed engine is never run
through a stale package. A lock file keeps two detectors from compiling the same engine at once. `FES_AOTI_BUILD=0`
(or `DetectConfig.aoti_build: false`) turns the background build off; the test suite does, to keep its CPU for the
tests.
"""
from __future__ import annotations

import argparse
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from fes_live.stream.engine import (DEFAULT_ENGINE, MODEL_NAMES, EngineError, _find_variant, aoti_name, cache_dir,
                                    compile_aoti, read_manifest, verify_files)

log = logging.getLogger(__name__)

LOCK = "aoti-build.lock"
STALE_LOCK_S = 30 * 60  # a lock older than this belongs to a build that died


def missing_packages(folder: Path, manifest: dict, device: str = "cpu") -> list[str]:
    """The models of the engine that have no valid AOTInductor package for `device`."""
    return [name for name in MODEL_NAMES if name in manifest["models"]
            and _find_variant(folder, manifest, aoti_name(name, device)) is None]


def build(folder: Path, device: str = "cpu") -> list[Path]:
    """Compile what is missing into the engine's cache, under the lock; returns the packages written."""
    manifest = read_manifest(folder)
    verify_files(folder, manifest)
    lock = cache_dir(folder, manifest) / LOCK
    if lock.exists() and time.time() - lock.stat().st_mtime > STALE_LOCK_S:
        lock.unlink(missing_ok=True)
    try:
        fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        raise EngineError(f"{lock}: another build of this engine is running") from None
    written = []
    try:
        os.write(fd, str(os.getpid()).encode())
        for name in missing_packages(folder, manifest, device):
            t = time.monotonic()
            log.info("compiling %s for %s (AOTInductor) ...", name, device)
            written.append(compile_aoti(folder, manifest, name, device))
            log.info("compiled %s in %.0f s -> %s", name, time.monotonic() - t, written[-1])
    finally:
        os.close(fd)
        lock.unlink(missing_ok=True)
    return written


def start_background_build(folder: Path, device: str = "cpu") -> subprocess.Popen | None:
    """Start `build` in a low-priority child process where packages are missing; None when there is nothing to do."""
    manifest = read_manifest(folder)
    todo = missing_packages(folder, manifest, device)
    if not todo or (cache_dir(folder, manifest) / LOCK).exists():
        return None
    out = cache_dir(folder, manifest) / "aoti-build.log"
    log.warning("building the AOTInductor packages of %s for this machine in the background (%s: about a minute "
                "or two each, once; log %s); spotting on the exported program until they are ready",
                folder, ", ".join(todo), out)
    low_priority = (lambda: os.nice(10)) if os.name == "posix" else None
    # its own session and its own log: a cache fill that holds no socket and no terminal, so it finishes quietly
    # even when the detector stops first
    with open(out, "ab") as log_file:
        return subprocess.Popen([sys.executable, "-m", "fes_live.stream.engine_build", str(folder), "--device", device],
                                preexec_fn=low_priority, stdin=subprocess.DEVNULL, stdout=log_file,
                                stderr=subprocess.STDOUT, start_new_session=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m fes_live.stream.engine_build", description=__doc__.splitlines()[0])
    p.add_argument("engine", nargs="?", default=str(DEFAULT_ENGINE), help="engine folder (default: the bundled one)")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s engine_build %(levelname)s %(message)s")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # stopped: release the lock on the way out
    try:
        written = build(Path(args.engine), args.device)
    except (EngineError, OSError) as e:
        print(f"engine_build: {e}", file=sys.stderr)
        return 1
    print(f"engine_build: {len(written)} package(s) written" + "".join(f"\n  {w}" for w in written))
    return 0


if __name__ == "__main__":
    sys.exit(main())
