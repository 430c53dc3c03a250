"""`fes-events`: print a running fes-live's events, live, one line each (or raw JSON with --json).

    fes-events                                  # everything, human-readable
    fes-events --type expression --stream cam0  # final expressions of one stream
    fes-events --json --replay-from 0           # the whole journal, then live, as JSON Lines
"""
from __future__ import annotations

import argparse
import json
import logging
import sys

from fes_live import version_text
from fes_live.stream.client import DEFAULT_EVENTS, DEFAULT_REPLAY, subscribe
from fes_live.stream.events import EVENT_TYPES, format_event


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="fes-events", description="print the events of a running fes-live")
    p.add_argument("--version", action="version", version=version_text("fes-events"))
    p.add_argument("--events", default=DEFAULT_EVENTS, help=f"event PUB endpoint (default {DEFAULT_EVENTS})")
    p.add_argument("--replay", default=DEFAULT_REPLAY, help=f"replay endpoint (default {DEFAULT_REPLAY})")
    p.add_argument("--type", action="append", default=[], choices=EVENT_TYPES, help="only this type (repeatable)")
    p.add_argument("--stream", action="append", default=[], help="only this stream id (repeatable)")
    p.add_argument("--json", action="store_true", help="one JSON object per line instead of text")
    p.add_argument("--replay-from", type=int, default=None, metavar="SEQ",
                   help="first print the journal from this sequence number, then go on live")
    p.add_argument("--count", type=int, default=0, help="exit after this many printed events (0: never)")
    p.add_argument("--idle-timeout", type=float, default=None, metavar="S",
                   help="exit when no event arrived for S seconds")
    from fes_live.stream.auth import add_flags
    add_flags(p)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="fes-events: %(message)s")
    if args.replay_from is not None and args.replay_from < 0:
        print("fes-events: --replay-from must be >= 0", file=sys.stderr)
        return 2
    from fes_live.stream.auth import endpoints_with_flags
    from fes_live.stream.config import from_dict
    from fes_live.stream.pipeline_config import CurveConfig
    curve = from_dict(CurveConfig, endpoints_with_flags({}, args)["curve"])
    sub = subscribe(args.events, args.replay, types=args.type, streams=args.stream, from_seq=args.replay_from,
                    idle_timeout_s=args.idle_timeout, curve=curve)
    printed = 0
    try:
        for ev in sub:
            print(json.dumps(ev, separators=(",", ":")) if args.json else format_event(ev), flush=True)
            printed += 1
            if args.count and printed >= args.count:
                break
    except KeyboardInterrupt:
        pass
    finally:
        sub.close()
    if sub.missed:
        print(f"fes-events: {sub.missed} event(s) could not be recovered from the replay endpoint", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
