"""Two sources at once: one detector, two ingests, events told apart by stream id.

    python examples/two_streams.py VIDEO_OR_CAMERA_1 VIDEO_OR_CAMERA_2

Prints a per-stream tally of expressions when both sources have ended (files) or on Ctrl-C.
"""
import collections
import subprocess
import sys

from fes_live.stream.client import subscribe

sources = sys.argv[1:3] or ["0", "1"]
cmd = [sys.executable, "-m", "fes_live.stream.cli"] + [arg for s in sources for arg in ("--source", s)]
pipeline = subprocess.Popen(cmd)
tally: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
ended = set()
try:
    for ev in subscribe(types=["stream", "expression"], from_seq=0):
        if ev["type"] == "expression":
            tally[ev["stream_id"]][f"{ev['data']['kind']}/{ev['data']['emotion']}"] += 1
            print(ev["stream_id"], ev["data"]["kind"], ev["data"]["emotion"], ev["data"]["onset"]["pts_s"], flush=True)
        elif ev["data"]["status"] in ("ended", "error"):
            ended.add(ev["stream_id"])
            if len(ended) == len(sources):
                break
except KeyboardInterrupt:
    pass
finally:
    pipeline.terminate()
    pipeline.wait(30)
for stream_id in sorted(ended | set(tally)):
    print(stream_id, dict(tally[stream_id]) or "no expressions")
