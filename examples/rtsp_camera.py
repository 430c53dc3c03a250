"""Spot expressions on an RTSP camera and print them, all in one script.

    python examples/rtsp_camera.py rtsp://user:pass@192.168.1.20:554/stream1

Starts `fes-live` (detector + one ingest, supervised: the camera source reconnects with backoff after a drop)
as a child process, then subscribes to its events. Ctrl-C stops both; pending events are flushed first.
"""
import subprocess
import sys

from fes_live.stream.client import subscribe
from fes_live.stream.events import format_event

url = sys.argv[1] if len(sys.argv) > 1 else "rtsp://127.0.0.1:8554/cam"
pipeline = subprocess.Popen([sys.executable, "-m", "fes_live.stream.cli", "--source", url])
try:
    for event in subscribe(types=["stream", "face", "expression.onset", "expression"], from_seq=0):
        print(format_event(event), flush=True)
        if event["type"] == "stream" and event["data"]["status"] == "error":
            print("camera problem:", event["data"]["message"], file=sys.stderr)
except KeyboardInterrupt:
    pass
finally:
    pipeline.terminate()  # SIGTERM: clean shutdown, like Ctrl-C
    pipeline.wait(30)
