"""`--lsl`: a real LSL round trip. `fes-live` (real processes) opens the outlets; this test resolves them and
reads them with real inlets: the smile clip's events (markers) and I(t) + blendshapes, on the LSL clock.

LSL discovers streams by multicast/broadcast on the local network; a liblsl config (LSLAPICFG) keeps every part
of this test on this machine (ResolveScope machine, KnownPeers 127.0.0.1, IPv6 off) under a session id of its own.
"""
import json
import os
import secrets
import signal
import subprocess
import sys
import time

import pytest

from conftest import FACE_MODEL, REPO, VIDEO, need
from test_events_wire import free_port

SMILE = VIDEO / "pyfeat_single_face.mp4"  # 72 frames: one smile, frames ~18-70


@pytest.fixture
def lsl(tmp_path, monkeypatch):
    cfg = tmp_path / "lsl_api.cfg"
    cfg.write_text("[ports]\nIPv6 = disable\n\n[multicast]\nResolveScope = machine\n\n"
                   f"[lab]\nKnownPeers = {{127.0.0.1}}\nSessionID = fes-test-{secrets.token_hex(4)}\n")
    monkeypatch.setenv("LSLAPICFG", str(cfg))  # before liblsl reads its config (first use, in this process too)
    return pytest.importorskip("pylsl")


def test_smile_events_and_intensity_arrive_on_lsl_with_timestamps(lsl, tmp_path):
    need(SMILE)
    need(FACE_MODEL)
    from fes_live.stream.lsl_outlet import CHANNELS

    args = ["run", "--source", str(SMILE), "--lossless", "--lsl", "--lsl-wait", "120", "--quiet",
            "--events-endpoint", f"tcp://127.0.0.1:{free_port()}",
            "--replay-endpoint", f"tcp://127.0.0.1:{free_port()}",
            "--features-endpoint", f"ipc://{tmp_path}/f", "--preview-endpoint", f"ipc://{tmp_path}/p"]
    env = dict(os.environ, FES_FACE_MODEL=str(FACE_MODEL), FES_NO_DOWNLOAD="1")
    t_start = lsl.local_clock()
    proc = subprocess.Popen([sys.executable, "-m", "fes_live.stream.cli", *args], env=env, cwd=REPO, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        found = {}
        deadline = time.monotonic() + 180  # engine + face model load on a busy machine
        while len(found) < 2 and time.monotonic() < deadline and proc.poll() is None:
            for info in lsl.resolve_byprop("name", "fes-live pyfeat_single_face", timeout=1.0) + \
                    lsl.resolve_byprop("name", "fes-live pyfeat_single_face events", timeout=1.0):
                found[info.type()] = info
        assert set(found) == {"FacialExpression", "Markers"}, f"outlets not found: {found}"
        data, markers = lsl.StreamInlet(found["FacialExpression"]), lsl.StreamInlet(found["Markers"])
        for inlet in (data, markers):
            inlet.open_stream(timeout=30)  # the ingest waits (--lsl-wait) for us before the source starts
        info = data.info()
        assert info.channel_count() == len(CHANNELS) == 54 and info.nominal_srate() == pytest.approx(30.0)
        ch = info.desc().child("channels").child("channel")
        labels = []
        while not ch.empty():
            labels.append(ch.child_value("label"))
            ch = ch.next_sibling()
        assert labels == list(CHANNELS)

        samples, stamps, events = [], [], []
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            chunk, ts = data.pull_chunk(timeout=0.2)
            samples += chunk
            stamps += ts
            m, mts = markers.pull_chunk(timeout=0.0)
            events += [(json.loads(x[0]), t) for x, t in zip(m, mts)]
            if any(e["type"] == "stream" and e["data"]["status"] == "ended" for e, _ in events) and len(samples) >= 72:
                break
        t_end = lsl.local_clock()
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
    # I(t), the expression level + blendshapes: one sample per frame, stamped with the frame's capture time on the
    # LSL clock
    assert len(samples) == 72 and all(len(s) == 54 for s in samples)
    assert all(t_start < t < t_end for t in stamps) and stamps == sorted(stamps)
    intensity = [s[0] for s in samples]
    smile = CHANNELS.index("mouthSmileLeft")
    assert max(intensity[20:60]) > 0.5 > max(intensity[:3])
    assert max(s[smile] for s in samples[25:60]) > 0.5 > max(s[smile] for s in samples[:5])
    level = [s[CHANNELS.index("level")] for s in samples]
    assert max(level[25:60]) > 0.5 > max(level[:5])
    # events: the smile as a final macro expression, stamped at its onset frame's capture time
    types = [e["type"] for e, _ in events]
    assert types[0] == "stream" and "face" in types and "expression.onset" in types
    ((expr, t_expr),) = [(e, t) for e, t in events if e["type"] == "expression"]
    d = expr["data"]
    assert d["kind"] == "macro" and d["onset"]["frame"] <= 18 and d["offset"]["frame"] >= 60
    assert t_expr == pytest.approx(stamps[d["onset"]["frame"]], abs=1e-3)
