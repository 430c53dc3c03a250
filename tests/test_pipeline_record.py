"""--record: the ingest's Recording (H.264 clips and the per-frame table from the stream's events), run folders,
the intensity CSV."""
import time

import numpy as np
import zmq

from fes_live.stream import wire
from fes_live.stream.pipeline_config import Endpoints, IngestConfig
from fes_live.stream.record import IntensityCsv, Recording, new_run_folder
from fes_live.stream.sources import Frame
from test_events_wire import free_port


def expression(sid, onset, offset, seq):
    pt = lambda f: {"frame": f, "pts_s": f / 30, "wall_s": 0.0}
    return {"schema": 1, "seq": seq, "type": "expression", "stream_id": sid, "wall_s": 0.0, "publisher": "t",
            "data": {"track": 0, "onset": pt(onset), "apex": pt((onset + offset) // 2), "offset": pt(offset),
                     "kind": "macro", "emotion": None, "emotion_probs": {}, "score": 1.0, "peak_intensity": 1.0,
                     "models": ["gim"], "duration_s": 1.0, "latency_s": 0.1}}


def event(sid, type, data, seq):
    return {"schema": 1, "seq": seq, "type": type, "stream_id": sid, "wall_s": 0.0, "publisher": "t", "data": data}


def test_recording_clips_and_table_from_the_stream_events(tmp_path):
    """The ingest's Recording: frames in, the detector's events off a real PUB -> H.264 clips and the table."""
    import pandas as pd

    from fes_live.stream.table import COLUMNS

    ctx = zmq.Context()
    events = f"tcp://127.0.0.1:{free_port()}"
    pub = ctx.socket(zmq.PUB)
    pub.bind(events)
    ep = Endpoints(events=events, features="ipc:///tmp/unused-f", preview="ipc:///tmp/unused-p")
    cfg = IngestConfig(endpoints=ep, record_dir=str(tmp_path), clip_pad_s=0.2)  # 6 frames of padding at 30 fps
    rec = Recording(cfg, "cam0", 30.0, ctx=ctx)
    time.sleep(0.3)  # the SUB connects (events before that are simply not clipped)
    for i in range(60):
        img = np.full((360, 640, 3), (i * 4) % 255, np.uint8)
        rec.add(Frame("cam0", i, i / 30, time.time(), time.monotonic(), img), None)
        if i == 30:  # the detector says: expression 10..20 (it knows ~10 frames after the offset)
            pub.send_multipart(wire.event_message(expression("cam0", 10, 20, 5)))
            pub.send_multipart(wire.event_message(expression("other", 10, 20, 6)))  # not ours
            pub.send_multipart(wire.event_message(event("cam0", "intensity", {
                "frames": list(range(31)), "pts_s": [f / 30 for f in range(31)], "values": [f / 100 for f in range(31)],
                "apex_probs": [[0.5, 0.25]] * 31}, 7)))
            time.sleep(0.2)
    pub.send_multipart(wire.event_message(expression("cam0", 50, 58, 8)))  # near the end: padded by what exists
    pub.send_multipart(wire.event_message(event("cam0", "stream", {"status": "ended", "message": ""}, 9)))
    t0 = time.monotonic()
    rec.close(wait_s=5)
    assert time.monotonic() - t0 < 3  # the 'ended' event lets it finish early
    names = sorted(p.name for p in rec.clips.written)
    assert names == ["cam0_10-20_macro.mp4", "cam0_50-58_macro.mp4"]
    clip = tmp_path / "clips" / "cam0_10-20_macro.mp4"
    import av
    with av.open(str(clip)) as c:
        stream = c.streams.video[0]
        assert stream.codec_context.name == "h264" and stream.codec_context.pix_fmt == "yuv420p"
        n = sum(1 for _ in c.decode(stream))
    assert n == (20 + 6) - (10 - 6) + 1  # the expression plus 0.2 s on each side
    assert clip.read_bytes().index(b"moov") < clip.read_bytes().index(b"mdat")  # faststart: plays while loading
    table = pd.read_csv(tmp_path / "table_cam0.csv")
    assert tuple(table.columns) == COLUMNS and list(table["frame"]) == list(range(60))
    assert (table["face_present"] == 0).all()  # no face given: the face columns are empty
    assert table["intensity"].iloc[:31].tolist() == [f / 100 for f in range(31)]
    assert table["intensity"].iloc[31:].isna().all()  # never reported
    inside = table["expression_kind"].eq("macro")
    assert table["frame"][inside].tolist() == list(range(10, 21)) + list(range(50, 59))
    pub.close()
    ctx.destroy(linger=0)


def test_every_run_gets_a_fresh_folder(tmp_path):
    a, b = new_run_folder(tmp_path / "rec"), new_run_folder(tmp_path / "rec")
    assert a != b and a.parent == b.parent == tmp_path / "rec" and a.is_dir() and b.is_dir()


def test_intensity_csv_appends_after_restart(tmp_path):
    a = IntensityCsv(tmp_path, "cam0")
    a.write(0, 0.0, 100.0, 0.5, (0.1, 0.2), 0.3)
    a.close()
    b = IntensityCsv(tmp_path, "cam0")  # a restarted stream goes on in the same file, one header
    b.write(1, None, None, 0.25, (0.0, 1.0), 0.0)
    b.close()
    assert (tmp_path / "intensity_cam0.csv").read_text().splitlines() == [
        "frame,pts_s,wall_s,intensity,apex_macro,apex_micro,level",
        "0,0.000000,100.000000,0.500000,0.100000,0.200000,0.300000", "1,,,0.250000,0.000000,1.000000,0.000000"]


def test_a_restarted_ingest_writes_beside_the_first_never_over_it(tmp_path):
    """Within one run a restarted ingest counts frames from 0 again: a second table (and clips) beside the first."""
    ep = Endpoints(events=f"tcp://127.0.0.1:{free_port()}", features="ipc:///tmp/unused-f",
                   preview="ipc:///tmp/unused-p")
    cfg = IngestConfig(endpoints=ep, record_dir=str(tmp_path))
    for _ in range(2):
        rec = Recording(cfg, "cam0", 30.0)
        rec.add(Frame("cam0", 0, 0.0, time.time(), time.monotonic(), np.zeros((8, 8, 3), np.uint8)), None)
        rec.close(wait_s=0.1)
    assert sorted(p.name for p in tmp_path.glob("table_*")) == ["table_cam0-2.csv", "table_cam0.csv"]
