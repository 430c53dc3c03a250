"""Two sources at once: one detector, two ingests, events told apart by stream id.

    python examples/two_streams.py VIDEO_OR_CAMERA_1 VIDEO_OR_CAMERA_2

Prints each expression once as it is spotted, and a per-stream tally when both sources have ended (files) or on
Ctrl-C. `fes-live` runs as a child process with its console quiet.
"""
import collections
import subprocess
import sys

from fes_live.stream.client import subscribe


def outage(ev: dict) -> bool:
    """A network source that went down and is being retried (it says so); its stream goes on afterwards."""
    return any(w in ev["data"]["message"] for w in ("reconnecting", "retrying"))


def main(sources: list[str]) -> None:
    cmd = [sys.executable, "-m", "fes_live", "--quiet"] + [arg for s in sources for arg in ("--source", s)]
    pipeline = subprocess.Popen(cmd)
    tally: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    ended = set()
    try:
        for ev in subscribe(types=["stream", "expression"], from_seq=0):
            if ev["type"] == "expression":
                d = ev["data"]
                tally[ev["stream_id"]][f"{d['kind']}/{d['emotion']}"] += 1
                print(ev["stream_id"], d["kind"], d["emotion"], d["onset"]["pts_s"], flush=True)
            elif ev["data"]["status"] == "ended" or (ev["data"]["status"] == "error" and not outage(ev)):
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


if __name__ == "__main__":
    try:
        main(sys.argv[1:3] or ["0", "1"])
    except KeyboardInterrupt:
        pass
