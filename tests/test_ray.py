"""`fes-live detect --ray ADDRESS --workers 2` on a local two-node Ray cluster (two `ray start` on this machine,
one CPU each, so the two detector actors land on different nodes): ingests find their stream's actor by name and
send to it directly; an actor killed by Ray (`ray.kill(no_restart=False)`) mid-run is restarted by Ray, resumes its
streams with the same expressions, and the subscriber sees every event once. Skipped where ray is not installed
(`pip install fes-live[ray]`)."""
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

ray = pytest.importorskip("ray")

from conftest import REPO, Procs, scaled, wait_until  # noqa: E402
from fes_live.stream.ray_roles import ACTOR, NAMESPACE, features_endpoint  # noqa: E402
from test_events_wire import free_port  # noqa: E402
from fes_live.stream.workers import shard  # noqa: E402
from test_workers import (Pool, check_killed_run, engine, kill_mid_run, smile, smile_npz,  # noqa: E402,F401
                          split_streams)


def _session_members(sids: set[int]) -> list[int]:
    """Processes whose session is one of `sids` (Ray's workers have process groups of their own)."""
    out = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                if int((d / "stat").read_text().rsplit(")", 1)[1].split()[4]) in sids:
                    out.append(int(d.name))
            except (OSError, IndexError, ValueError):
                pass
    return out


@pytest.fixture(scope="module")
def cluster():
    """A head node and a second node with a resource of its own, each `ray start --block` in a session of its own;
    the finalizer kills both sessions (raylets, GCS and every worker process) whatever happened."""
    # Ray's session sockets must fit AF_UNIX's 107 bytes: pytest's (and xdist's) temp paths are too long for them
    tmp = Path(tempfile.mkdtemp(prefix="fes-ray-", dir="/tmp"))
    ray_bin = str(Path(sys.executable).with_name("ray"))
    port = free_port()
    common = ["--num-cpus", "1", "--disable-usage-stats", "--object-store-memory", str(100 << 20), "--block"]
    procs = Procs()
    logs = []
    try:
        for name, args in (("head", ["--head", "--port", str(port), "--include-dashboard=false"]),
                           ("node2", ["--address", f"127.0.0.1:{port}", "--resources", '{"node2": 1}'])):
            (tmp / name).mkdir()
            logs.append(open(tmp / f"{name}.log", "w"))
            procs.popen([ray_bin, "start", *args, "--temp-dir", str(tmp / name), *common],
                        stdout=logs[-1], stderr=logs[-1], env=dict(os.environ, RAY_USAGE_STATS_ENABLED="0"))
            if name == "head":
                assert wait_until(lambda: "--block" in (tmp / "head.log").read_text(), 300), \
                    (tmp / "head.log").read_text()[-2000:]
        address = f"127.0.0.1:{port}"
        ray.init(address=address, namespace=NAMESPACE, log_to_driver=False)
        assert wait_until(lambda: sum(n["Alive"] for n in ray.nodes()) == 2, 300), (tmp / "node2.log").read_text()
        yield address
    finally:
        if ray.is_initialized():
            ray.shutdown()
        sessions = {p.pid for p in procs.started}
        procs.close()
        for pid in _session_members(sessions):  # workers outliving their raylet
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        for f in logs:
            f.close()
        shutil.rmtree(tmp, ignore_errors=True)


@pytest.mark.slow
def test_detector_actors_on_two_nodes_come_back_after_ray_kills_one(cluster, smile, smile_npz, engine, procs,
                                                                     tmp_path):
    sids = split_streams(2)
    pool = Pool(procs, tmp_path, ("--ray", cluster))
    actors = [ray.get_actor(ACTOR.format(i), namespace=NAMESPACE) for i in range(2)]
    where = ray.get([a.where.remote() for a in actors])
    assert where[0]["node"] != where[1]["node"], where  # one per node
    ends = {sid: features_endpoint(cluster, sid) for sid in sids}  # as an ingest finds its detector: by name
    assert len(set(ends.values())) == 2 and ends[sids[2]] == ray.get(actors[1].endpoints.remote())["features"]
    # a real ingest process does the same (`fes-live ingest --ray`) and its stream lands on that actor
    ingest = subprocess.run([sys.executable, "-m", "fes_live.stream.cli", "ingest", "--features", str(smile_npz),
                             "--stream-id", "by-name", "--ray", cluster, "--no-preview"], cwd=REPO,
                            capture_output=True, text=True, timeout=scaled(120))
    owner = ray.get(actors[shard("by-name", 2)].endpoints.remote())["features"]
    assert ingest.returncode == 0 and f"sending to its detector actor at {owner}" in ingest.stderr, ingest.stderr
    pool.wait(lambda: any(e["stream_id"] == "by-name" and e["type"] == "stream" and e["data"]["status"] == "ended"
                          for e in pool.journal_of(shard("by-name", 2))), 60)

    def back():
        deadline = time.monotonic() + scaled(120)
        while True:  # a call on a restarting actor waits for it (max_task_retries=-1)
            try:
                now = ray.get(actors[1].where.remote(), timeout=5)
                if now["pid"] != where[1]["pid"]:
                    return
            except ray.exceptions.GetTimeoutError:
                pass
            assert time.monotonic() < deadline, "the killed actor did not come back"
            time.sleep(0.5)

    evs, frames = kill_mid_run(pool, smile, sids, ends, lambda: ray.kill(actors[1], no_restart=False), back)
    check_killed_run(pool, engine, evs, sids, frames)
