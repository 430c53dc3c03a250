"""The smallest fes-live subscriber: print every expression of a running `fes-live` once, as it is spotted.

    fes-live --source 0 --quiet &        # or a video file, an rtsp:// URL... (--quiet: only this script prints)
    python examples/subscriber.py [EVENTS_ENDPOINT REPLAY_ENDPOINT]   # default tcp://127.0.0.1:5556 and :5557

Ctrl-C ends it.
"""
import sys

from fes_live.stream.client import DEFAULT_EVENTS, DEFAULT_REPLAY, subscribe


def main(events: str = DEFAULT_EVENTS, replay: str = DEFAULT_REPLAY) -> None:
    for event in subscribe(events, replay, types=["expression.onset", "expression"]):
        d = event["data"]
        if event["type"] == "expression.onset":
            print(f"{event['stream_id']}: something starts at {d['onset']['pts_s']:.2f} s ...", flush=True)
        else:
            print(f"{event['stream_id']}: {d['kind']} {d['emotion'] or ''} from {d['onset']['pts_s']:.2f} s "
                  f"to {d['offset']['pts_s']:.2f} s (apex {d['apex']['pts_s']:.2f} s, score {d['score']:.2f})",
                  flush=True)


if __name__ == "__main__":
    try:
        main(*sys.argv[1:3])
    except KeyboardInterrupt:  # Ctrl-C is how this script ends
        pass
