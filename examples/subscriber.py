"""The smallest fes-live subscriber: print every final expression of a running `fes-live`.

    fes-live --source 0 &        # or a video file, an rtsp:// URL...
    python examples/subscriber.py
"""
from fes_live.stream.client import subscribe

for event in subscribe(types=["expression.onset", "expression"]):
    d = event["data"]
    if event["type"] == "expression.onset":
        print(f"{event['stream_id']}: something starts at {d['onset']['pts_s']:.2f} s ...")
    else:
        print(f"{event['stream_id']}: {d['kind']} {d['emotion'] or ''} from {d['onset']['pts_s']:.2f} s "
              f"to {d['offset']['pts_s']:.2f} s (apex {d['apex']['pts_s']:.2f} s, score {d['score']:.2f})")
