"""--record: the clip recorder (ring of JPEG frames + expression events -> mp4) and the intensity CSV."""
import time

import cv2
import numpy as np
import zmq

from fes_live.stream import wire
from fes_live.stream.pipeline_config import Endpoints, IngestConfig
from fes_live.stream.record import ClipRecorder, IntensityCsv
from fes_live.stream.sources import Frame
from test_events_wire import free_port


def expression(sid, onset, offset, seq):
    pt = lambda f: {"frame": f, "pts_s": f / 30, "wall_s": 0.0}
    return {"schema": 1, "seq": seq, "type": "expression", "stream_id": sid, "wall_s": 0.0, "publisher": "t",
            "data": {"track": 0, "onset": pt(onset), "apex": pt((onset + offset) // 2), "offset": pt(offset),
                     "kind": "macro", "emotion": None, "emotion_probs": {}, "score": 1.0, "peak_intensity": 1.0,
                     "models": ["gim"], "duration_s": 1.0, "latency_s": 0.1}}


def test_clip_around_each_expression(tmp_path):
    ctx = zmq.Context()
    events = f"tcp://127.0.0.1:{free_port()}"
    pub = ctx.socket(zmq.PUB)
    pub.bind(events)
    cfg = IngestConfig(endpoints=Endpoints(events=events, features="ipc:///tmp/unused-f", preview="ipc:///tmp/unused-p"),
                       record_dir=str(tmp_path), clip_pad_s=0.2)  # 6 frames of padding at 30 fps
    rec = ClipRecorder(cfg, "cam0", 30.0, ctx=ctx)
    time.sleep(0.3)  # the SUB connects (events before that are simply not clipped)
    for i in range(60):
        img = np.full((360, 640, 3), (i * 4) % 255, np.uint8)
        rec.add(Frame("cam0", i, i / 30, time.time(), time.monotonic(), img))
        if i == 30:  # the detector says: expression 10..20 (it knows ~10 frames after the offset)
            pub.send_multipart(wire.event_message(expression("cam0", 10, 20, 5)))
            pub.send_multipart(wire.event_message(expression("other", 10, 20, 6)))  # not ours
            time.sleep(0.2)
    pub.send_multipart(wire.event_message(expression("cam0", 50, 58, 7)))  # near the end: padded by what exists
    pub.send_multipart(wire.event_message({"schema": 1, "seq": 8, "type": "stream", "stream_id": "cam0",
                                           "wall_s": 0.0, "publisher": "t",
                                           "data": {"status": "ended", "message": ""}}))
    t0 = time.monotonic()
    rec.close(wait_s=5)
    assert time.monotonic() - t0 < 3  # the 'ended' event lets it finish early
    names = sorted(p.name for p in rec.written)
    assert names == ["cam0_10-20_macro.mp4", "cam0_50-58_macro.mp4"]
    cap = cv2.VideoCapture(str(tmp_path / "clips" / "cam0_10-20_macro.mp4"))
    n = 0
    while cap.read()[0]:
        n += 1
    cap.release()
    assert n == (20 + 6) - (10 - 6) + 1  # the expression plus 0.2 s on each side
    pub.close()
    ctx.destroy(linger=0)


def test_intensity_csv_appends_after_restart(tmp_path):
    a = IntensityCsv(tmp_path, "cam0")
    a.write(0, 0.0, 100.0, 0.5, (0.1, 0.2))
    a.close()
    b = IntensityCsv(tmp_path, "cam0")  # a restarted stream goes on in the same file, one header
    b.write(1, None, None, 0.25, (0.0, 1.0))
    b.close()
    assert (tmp_path / "intensity_cam0.csv").read_text().splitlines() == [
        "frame,pts_s,wall_s,intensity,apex_macro,apex_micro",
        "0,0.000000,100.000000,0.500000,0.100000,0.200000", "1,,,0.250000,0.000000,1.000000"]
