"""Spot expressions on an RTSP camera and print them, all in one script.

    python examples/rtsp_camera.py rtsp://user:pass@192.168.1.20:554/stream1

Starts `fes-live` (detector + one ingest, supervised: the camera is retried with backoff while it is down, and a
`stream` event says each time it goes down and comes back) as a child process with its console quiet, then
subscribes to its events and prints each once. Ctrl-C stops both; pending events are flushed first.
"""
import subprocess
import sys

from fes_live.stream.client import subscribe
from fes_live.stream.events import format_event


def main(url: str) -> None:
    pipeline = subprocess.Popen([sys.executable, "-m", "fes_live", "--source", url, "--quiet"])
    try:
        for event in subscribe(types=["stream", "face", "expression.onset", "expression"], from_seq=0):
            print(format_event(event), flush=True)
            if event["type"] == "stream" and event["data"]["status"] == "error":
                print("camera problem:", event["data"]["message"], file=sys.stderr)
    except KeyboardInterrupt:  # Ctrl-C reached the child too: it shuts down cleanly by itself
        pass
    finally:
        pipeline.terminate()  # SIGTERM: clean shutdown, like Ctrl-C
        pipeline.wait(30)


if __name__ == "__main__":
    try:
        main(sys.argv[1] if len(sys.argv) > 1 else "rtsp://127.0.0.1:8554/cam")
    except KeyboardInterrupt:
        pass
