"""`fes-live`: one entry point, one subcommand per role.

`fes-live --source 0` (no subcommand) is `fes-live run`: start and supervise every role locally. Each command's
module exposes `add_arguments(parser)` and `main(args) -> int`. Only the chosen module is imported, so
`fes-live extract` never pays for aiortc and `fes-live view` never for numba.
"""
from __future__ import annotations

import argparse
import importlib
import logging
import sys

from fes_live import version_text
from fes_live.stream.supervise import is_user_error

# subcommand -> (module, one-line help)
COMMANDS = {
    "run": ("fes_live.stream.app", "start ingest, detector (and viewer) locally and supervise them [default]"),
    "ingest": ("fes_live.stream.ingest", "run the ingest role: source -> face alignment -> features -> detector"),
    "detect": ("fes_live.stream.detect", "run the detector service: features in, expression events out"),
    "view": ("fes_live.stream.view", "serve the browser viewer for a running pipeline"),
    "extract": ("fes_live.stream.extract", "write per-frame features of a whole video to .npz (for training)"),
    "preview": ("fes_live.stream.preview", "print per-frame face state and features of a source, live"),
    "keygen": ("fes_live.stream.auth", "write CurveZMQ key pairs for endpoints off loopback (docs/security.md)"),
    "batch": ("fes_live.stream.batch", "score every frame of video files: events + per-frame table per video"),
}


def usage() -> str:
    lines = ["usage: fes-live [COMMAND] [options]   (no COMMAND: run)", "", "commands:"]
    lines += [f"  {name:<9} {help_text}" for name, (_, help_text) in COMMANDS.items()]
    lines += ["", "fes-live COMMAND --help for a command's options; fes-live --version"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in ("-h", "--help"):
        print(usage())
        return 0
    if argv and argv[0] == "--version":
        print(version_text("fes-live"))
        return 0
    if not argv or argv[0].startswith("-"):
        argv = ["run", *argv]  # `fes-live --source 0` means `fes-live run --source 0`
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"fes-live: unknown command {name!r}\n\n{usage()}", file=sys.stderr)
        return 2
    module_name, help_text = COMMANDS[name]
    module = importlib.import_module(module_name)
    parser = argparse.ArgumentParser(prog=f"fes-live {name}", description=help_text)
    parser.add_argument("--log-level", default="INFO", help="DEBUG, INFO, WARNING or ERROR")
    parser.add_argument("--version", action="version", version=version_text("fes-live"))
    module.add_arguments(parser)
    args = parser.parse_args(rest)
    logging.basicConfig(level=args.log_level.upper(),
                        format="%(asctime)s %(processName)s %(name)s %(levelname)s %(message)s")
    try:
        return int(module.main(args) or 0)
    except KeyboardInterrupt:
        return 130
    except Exception as e:
        if not is_user_error(e):  # a bug: the traceback helps
            raise
        print(f"fes-live {name}: error: {e}", file=sys.stderr)  # bad config, source, engine, port: one line
        return 2


if __name__ == "__main__":
    sys.exit(main())
