"""CurveZMQ on the detector's endpoints: an authorised peer gets events and its frames are spotted; an unauthorised
or plain one gets nothing and cannot inject a frame. Tests stay on 127.0.0.1, so they force CURVE there
(`curve.require = "always"`); off loopback "auto" does the same by default."""
import threading
import time

import numpy as np
import pytest
import zmq

from fes_live.stream import auth, wire
from fes_live.stream.cli import main as cli_main
from fes_live.stream.client import ReplayError, _ask, fetch, subscribe
from fes_live.stream.detect import Detector, run_detector
from fes_live.stream.engine import load_engine
from fes_live.stream.features import GEOMETRY_DIM, FrameFeatures
from fes_live.stream.pipeline_config import CurveConfig, DetectConfig, Endpoints
from fes_live.stream.supervise import FATAL_EXIT
from test_events_wire import free_port


@pytest.mark.parametrize("addr, auto", [
    ("tcp://127.0.0.1:5556", False), ("tcp://localhost:5556", False), ("tcp://[::1]:5556", False),
    ("ipc:///tmp/x", False), ("tcp://0.0.0.0:5555", True), ("tcp://*:5555", True), ("tcp://10.1.2.3:5555", True),
    ("tcp://detector.lan:5555", True), ("tcp://eth0:5555", True)])
def test_curve_is_on_by_default_exactly_off_loopback(addr, auto):
    assert auth.needs_curve(addr, CurveConfig()) is auto
    assert auth.needs_curve(addr, CurveConfig(require="never")) is False
    assert auth.needs_curve(addr, CurveConfig(require="always")) is addr.startswith("tcp://")


def test_keygen_command_writes_both_key_pairs(tmp_path, capsys):
    assert cli_main(["keygen", str(tmp_path / "keys")]) == 0
    assert '"server_secret"' in capsys.readouterr().out
    for name in ("server.key", "server.key_secret", "client.key", "client.key_secret", "clients/client.key"):
        assert (tmp_path / "keys" / name).is_file(), name
    assert (tmp_path / "keys" / "server.key_secret").stat().st_mode & 0o077 == 0


def endpoints(tmp_path, curve: CurveConfig) -> Endpoints:
    return Endpoints(features=f"tcp://127.0.0.1:{free_port()}", events=f"tcp://127.0.0.1:{free_port()}",
                     replay=f"tcp://127.0.0.1:{free_port()}", preview=f"ipc://{tmp_path}/p", curve=curve)


def test_missing_keys_refuse_to_start_with_one_clear_line(tmp_path, caplog):
    ep = endpoints(tmp_path, CurveConfig(require="always"))
    assert run_detector(DetectConfig(endpoints=ep)) == FATAL_EXIT  # before the engine is even loaded
    assert "curve.server_secret" in caplog.text and "--insecure" in caplog.text
    with pytest.raises(auth.AuthError, match="client key pair"):
        auth.apply_client(zmq.Context.instance().socket(zmq.PUSH), "tcp://10.0.0.1:5555", CurveConfig())
    keys = auth.curve_paths(tmp_path)  # paths given, files absent
    with pytest.raises(auth.AuthError, match="cannot read"):
        auth.ServerAuth(None, CurveConfig(**keys, require="always")).check(ep.features)


def test_a_replay_client_whose_handshake_failed_gets_an_error_not_a_hang(tmp_path):
    """After a failed CURVE handshake ZeroMQ drops the DEALER's pipe, and a plain send then blocks for ever: a
    request must wait for room within its timeout. (This hung the suite once, in the test below; before the fix
    every try here but those within the first few ms of the connect hung.)"""
    good = CurveConfig(**auth.keygen(tmp_path / "keys"), require="always")
    other = auth.keygen(tmp_path / "intruder")
    bad = CurveConfig(client_secret=other["client_secret"], server_public=good.server_public, require="always")
    addr = f"tcp://127.0.0.1:{free_port()}"
    ctx = zmq.Context()
    server = ctx.socket(zmq.ROUTER)
    server.setsockopt(zmq.LINGER, 0)
    guard = auth.ServerAuth(ctx, good)
    guard.apply(server, addr)
    server.bind(addr)
    outcomes: list[str] = []

    def ask(client) -> None:
        try:
            _ask(client, addr, 0, -1, timeout_s=0.2)
            outcomes.append("answered")
        except ReplayError as e:
            outcomes.append(str(e))

    try:
        for delay_s in (0.0, 0.05, 0.1, 0.2, 0.3):  # the handshake fails within a few ms of the connect
            client = ctx.socket(zmq.DEALER)
            client.setsockopt(zmq.LINGER, 0)
            auth.apply_client(client, addr, bad)
            client.connect(addr)
            time.sleep(delay_s)
            asker = threading.Thread(target=ask, args=(client,), daemon=True)
            asker.start()
            asker.join(5)
            assert not asker.is_alive(), f"the replay request hung ({delay_s} s after the connect)"
            client.close()
        assert len(outcomes) == 5 and all("within 0.2 s" in o for o in outcomes), outcomes
    finally:
        server.close()
        guard.close()


def frames_of(sid: str, n: int) -> list[list]:
    out = [wire.control_message(sid, "started", source="test", fps=30.0)]
    for i in range(n):
        f = FrameFeatures(i, i / 30, time.time(), True, np.zeros(GEOMETRY_DIM, np.float32),
                          np.zeros((12, 2), np.float32), None)
        out.append(wire.features_message(sid, f, "tracked", {"dropped": 0}))
    out.append(wire.control_message(sid, "ended", message="done", frames=n))
    return out


def test_authorised_peer_gets_events_unauthorised_gets_nothing_and_cannot_inject(engine_dir, tmp_path):
    good = CurveConfig(**auth.keygen(tmp_path / "keys"), require="always")
    other = auth.keygen(tmp_path / "intruder")  # a valid key pair the detector does not know
    bad = CurveConfig(client_secret=other["client_secret"], server_public=good.server_public, require="always")
    ep = endpoints(tmp_path, good)
    det = Detector(DetectConfig(endpoints=ep, admit_frames=3), load_engine(engine_dir))
    stop = threading.Event()
    loop = threading.Thread(target=det.run, args=(stop,), daemon=True)
    loop.start()
    ctx = zmq.Context()
    socks = []

    def sock(kind, addr, curve):
        s = ctx.socket(kind)
        s.setsockopt(zmq.LINGER, 0)
        if curve is not None:
            auth.apply_client(s, addr, curve)
        if kind == zmq.SUB:
            s.setsockopt(zmq.SUBSCRIBE, b"")
        s.connect(addr)
        socks.append(s)
        return s

    try:
        spies = [sock(zmq.SUB, ep.events, bad), sock(zmq.SUB, ep.events, None)]  # wrong key, no CURVE at all
        with pytest.raises(ReplayError):
            fetch(ep.replay, 0, -1, timeout_s=1.0, curve=bad)
        got: list[dict] = []
        sub = subscribe(ep.events, ep.replay, from_seq=0, curve=good, idle_timeout_s=30)

        def collect():
            for ev in sub:
                got.append(ev)
                if ev["type"] == "stream" and ev["data"]["status"] == "ended":
                    return

        collector = threading.Thread(target=collect, daemon=True)
        collector.start()
        for name, curve in (("evil", bad), ("plain", None)):  # first: they would be seen first if they got in
            push = sock(zmq.PUSH, ep.features, curve)
            for frames in frames_of(name, 20):
                try:
                    push.send_multipart(frames, flags=zmq.NOBLOCK)
                except zmq.Again:  # the server already dropped the failed handshake's pipe: nothing to queue on
                    break
        time.sleep(1.0)
        push = sock(zmq.PUSH, ep.features, good)
        for frames in frames_of("good", 20):
            push.send_multipart(frames)
        collector.join(60)
        assert not collector.is_alive(), got[-3:]
        assert {e["stream_id"] for e in got if e["type"] != "stats"} == {"good"}
        assert [f for e in got if e["type"] == "intensity" for f in e["data"]["frames"]] == list(range(20))
        time.sleep(0.5)
        for spy in spies:
            assert not spy.poll(0), "an unauthorised subscriber received an event"
        assert det.bad_messages == 0 and not {"evil", "plain"} & {e["stream_id"] for e in det.publisher.memory}
        assert fetch(ep.replay, 0, -1, timeout_s=5.0, curve=good)[1] == det.publisher.seq
    finally:
        stop.set()
        loop.join(30)
        for s in socks:
            s.close()
        ctx.destroy(linger=0)
