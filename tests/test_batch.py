"""`fes-live batch` and the lossless file mode: every frame scored, the same events and table on every run, and
the same as a live `fes-live --source FILE --lossless` run on the same frames (real processes, real sockets)."""
import json
import os
import signal
import subprocess
import sys
import tempfile

import pandas as pd
import pytest

from conftest import FACE_MODEL, REPO, VIDEO, need, need_tool, scaled
from fes_live.stream.batch import timing_free
from fes_live.stream.events import read_journal
from fes_live.stream.events import validate
from fes_live.stream.table import COLUMNS
from test_events_wire import free_port

SMILE = VIDEO / "pyfeat_single_face.mp4"  # 72 frames, 30 fps: one smile (frames ~18-70)
NOFACE = VIDEO / "pyfeat_no_face.mp4"
ENGINE = REPO / "stream" / "engines" / "default"


def start(procs, args) -> subprocess.Popen:
    """A fes-live command in its own process group (`procs`: killed with every child whatever happens), its
    output to a file (several run at once)."""
    env = dict(os.environ, FES_FACE_MODEL=str(FACE_MODEL), FES_NO_DOWNLOAD="1")
    log = tempfile.TemporaryFile("w+")
    p = procs.popen([sys.executable, "-m", "fes_live.stream.cli", *args], env=env, cwd=REPO, text=True,
                    stdout=log, stderr=subprocess.STDOUT)
    p.log = log
    return p


def finish(p: subprocess.Popen, timeout: float) -> tuple[int, str]:
    p.wait(scaled(timeout))
    p.log.seek(0)
    return p.returncode, p.log.read()


def run(args, timeout=600, **kw):
    """A fes-live command in its own process group, killed with every child whatever happens."""
    env = dict(os.environ, FES_FACE_MODEL=str(FACE_MODEL), FES_NO_DOWNLOAD="1")
    p = subprocess.Popen([sys.executable, "-m", "fes_live.stream.cli", *args], env=env, cwd=REPO, text=True,
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True, **kw)
    try:
        out, _ = p.communicate(timeout=scaled(timeout))
    finally:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()
    return p.returncode, out


def events(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture(scope="module")
def sixty_s(tmp_path_factory):
    """60 s (1800 frames): the smile clip 25 times over, re-encoded, made here (never committed)."""
    need(SMILE)
    need(FACE_MODEL)
    need(ENGINE / "manifest.json")
    ffmpeg = need_tool("ffmpeg")
    out = tmp_path_factory.mktemp("long") / "smile60.mp4"
    subprocess.run([ffmpeg, "-v", "error", "-stream_loop", "24", "-i", str(SMILE), "-an", "-c:v", "libx264",
                    "-preset", "ultrafast", "-pix_fmt", "yuv420p", str(out)], check=True, timeout=300)  # 2 s, not 15
    return out


@pytest.mark.slow
def test_two_batch_runs_and_the_live_lossless_run_agree(sixty_s, tmp_path, procs):
    """The two batch runs and the live run go at the same time: each is its own process, and they compete for the
    CPU (results that depended on speed would differ), and the test takes a third of the time on two cores."""
    ep = {"--events-endpoint": f"tcp://127.0.0.1:{free_port()}", "--replay-endpoint": f"tcp://127.0.0.1:{free_port()}",
          "--features-endpoint": f"ipc://{tmp_path}/f", "--preview-endpoint": f"ipc://{tmp_path}/p"}
    live_run = start(procs, ["run", "--source", str(sixty_s), "--lossless", "--quiet", "--record", str(tmp_path / "rec"),
                             *[x for kv in ep.items() for x in kv]])
    outs = [tmp_path / f"out{k}" for k in (1, 2)]
    batch_runs = [start(procs, ["batch", str(sixty_s), "-o", str(o), "--no-progress"]) for o in outs]
    for p in batch_runs:
        code, log = finish(p, 600)
        assert code == 0, log[-3000:]
    a, b = (events(o / "smile60.events.jsonl") for o in outs)
    for ev in a:
        validate(ev)
    assert [timing_free(e) for e in a] == [timing_free(e) for e in b]
    assert (outs[0] / "smile60.csv").read_bytes() == (outs[1] / "smile60.csv").read_bytes()
    finals = [e["data"] for e in a if e["type"] == "expression"]
    assert len(finals) >= 10, finals  # 25 smiles (glued back to back, so some merge)
    scored = [f for e in a if e["type"] == "intensity" for f in e["data"]["frames"]]
    assert scored == list(range(1800))  # every frame, once, in order
    table = pd.read_csv(outs[0] / "smile60.csv")
    assert tuple(table.columns) == COLUMNS and len(table) == 1800 and table["face_present"].all()
    assert table["intensity"].notna().all() and table["expression_kind"].notna().sum() > 900

    # the live pipeline, lossless, on the same file: the same expressions, intensities and table
    code, log = finish(live_run, 600)
    assert code == 0, log[-3000:]
    (rec,) = (tmp_path / "rec").iterdir()
    live = [e for e in read_journal(rec / "events.sqlite") if e["stream_id"] == "smile60"]
    # first that the live run saw every frame once, as one stream from its start (else the comparison is moot)
    streams = [e["data"] for e in live if e["type"] == "stream"]
    last = [e["data"] for e in live if e["type"] == "stats"][-1]
    assert last["frames_out"] == 1800 and last["dropped_ingest"] == 0 and last["dropped_detector"] == 0, (last, streams)
    assert "1800 sent, 0 not sent" in log, log[-3000:]  # the ingest's own count
    assert [s["status"] for s in streams] == ["started", "ended"], streams
    pick = lambda evs, t: [timing_free(e)["data"] for e in evs if e["type"] == t]
    for t in ("expression", "expression.onset", "expression.cancel", "face"):
        assert pick(live, t) == pick(a, t), t
    curve = lambda evs: [(f, v) for e in evs if e["type"] == "intensity" for f, v in zip(e["data"]["frames"],
                                                                                         e["data"]["values"])]
    assert curve(live) == curve(a)
    assert (rec / "table_smile60.csv").read_bytes() == (outs[0] / "smile60.csv").read_bytes()


def test_batch_folder_no_face_and_no_overwrite(tmp_path):
    need(SMILE)
    need(NOFACE)
    need(FACE_MODEL)
    need(ENGINE / "manifest.json")
    folder = tmp_path / "videos"
    folder.mkdir()
    for src in (SMILE, NOFACE):
        (folder / src.name).symlink_to(src)
    (folder / "notes.txt").write_text("not a video")
    out = tmp_path / "out"
    code, log = run(["batch", str(folder), "-o", str(out)], timeout=300)
    assert code == 0, log[-3000:]
    assert sorted(p.name for p in out.iterdir()) == ["pyfeat_no_face.csv", "pyfeat_no_face.events.jsonl",
                                                      "pyfeat_single_face.csv", "pyfeat_single_face.events.jsonl"]
    assert "frame/s" in log  # the progress bar
    smile = events(out / "pyfeat_single_face.events.jsonl")
    for ev in smile:
        validate(ev)
    assert [e["seq"] for e in smile] == list(range(len(smile)))
    (d,) = [e["data"] for e in smile if e["type"] == "expression"]
    assert d["kind"] == "macro" and d["onset"]["frame"] <= 18 and d["offset"]["frame"] >= 60
    table = pd.read_csv(out / "pyfeat_single_face.csv")
    assert len(table) == 72 and table["expression_kind"].eq("macro").sum() >= 40
    assert "no face found in 95 frames" in log or "no face found in" in log
    noface = pd.read_csv(out / "pyfeat_no_face.csv")
    assert (noface["face_present"] == 0).all() and noface["x_0"].isna().all()

    code, log = run(["batch", str(folder), "-o", str(out)], timeout=120)  # the same OUT again
    assert code == 2 and "already exists" in log and "Traceback" not in log
    code, log = run(["batch", str(tmp_path / "missing.mp4"), "-o", str(out)], timeout=120)
    assert code == 2 and "no such file" in log and "Traceback" not in log
