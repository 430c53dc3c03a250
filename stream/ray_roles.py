"""`fes-live detect --ray ADDRESS --workers N`: the detector workers as Ray actors, on the cluster's nodes.

Ray places and restarts the processes; ZeroMQ still carries every frame and event. Each worker is a named actor
(`fes-detector-<i>` in namespace `fes-live`; `num_gpus=1` where the cluster has GPUs, else `num_cpus=1`;
`max_restarts=-1`) running the ordinary detector (stream/detect.py) in a thread, on tcp endpoints of its node
whose ports the driver chose, so that a restarted actor (Ray calls its constructor again, with the same
arguments) is found at the same address, reads the same journal and resumes its streams. The driver (this
command) runs the front of stream/workers.py in-process: ingests that know nothing of Ray send to its features
endpoint, subscribers read its events and replay endpoints. An ingest that does know (`features_endpoint`) finds
the actor that owns its stream by name and sends to it directly, skipping the front.

Endpoints bind on 127.0.0.1 when the public endpoints are loopback (one machine, the tests), else on the node's
IP, CurveZMQ-authenticated with the keys of `--keys` (which every node must hold at the same path).
"""
from __future__ import annotations

import dataclasses
import logging
import os
import re
import signal
import threading
import time

log = logging.getLogger(__name__)

NAMESPACE = "fes-live"
ACTOR = "fes-detector-{}"
READY_TIMEOUT_S = 300.0


def actor_options(i: int, gpus: bool) -> dict:
    """Where and how Ray runs worker i: one GPU each where there are GPUs (else one CPU), restarted forever."""
    opts = {"name": ACTOR.format(i), "namespace": NAMESPACE, "max_restarts": -1, "max_task_retries": -1,
            "max_concurrency": 4}  # (endpoints, where and stop answer while the loop runs in its own thread)
    opts.update({"num_gpus": 1, "num_cpus": 0} if gpus else {"num_cpus": 1})
    return opts


class DetectorActor:
    """One detector worker inside a Ray actor process: the detector loop in a thread, stopped by `stop`."""

    def __init__(self, cfg, loopback: bool, ports: tuple[int, int, int]):
        """`cfg`: the worker's DetectConfig (its endpoints replaced here); `loopback`: bind 127.0.0.1, else this
        node's IP; `ports`: features, events, replay."""
        from fes_live.stream.detect import run_detector
        from fes_live.stream.pipeline_config import Endpoints
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
        if loopback:
            host = "127.0.0.1"
        else:
            import ray
            host = ray.util.get_node_ip_address()
        f, e, r = (f"tcp://{host}:{p}" for p in ports)
        self.cfg = dataclasses.replace(cfg, endpoints=Endpoints(features=f, events=e, replay=r, preview="",
                                                               curve=cfg.endpoints.curve))
        self.stop_event = threading.Event()
        self.code: int | None = None

        def serve():
            try:
                self.code = run_detector(self.cfg, self.stop_event)
            except Exception:
                log.exception("detector worker crashed")
                self.code = 1
            if not self.stop_event.is_set():  # a crash, not a stop: let Ray restart this actor
                os._exit(1)

        self.thread = threading.Thread(target=serve, name="detector", daemon=True)
        self.thread.start()

    def endpoints(self) -> dict:
        ep = self.cfg.endpoints
        return {"features": ep.features, "events": ep.events, "replay": ep.replay}

    def where(self) -> dict:
        """Process and node of this actor (for operators and tests)."""
        import ray
        return {"pid": os.getpid(), "node": ray.get_runtime_context().get_node_id()}

    def stop(self, timeout_s: float = 30.0) -> int | None:
        """Flush every stream and exit the loop (the actor stays until killed)."""
        self.stop_event.set()
        self.thread.join(timeout_s)
        return self.code


def connect(address: str):
    """This process as a Ray driver of the cluster at `address`, keeping our SIGINT / SIGTERM handlers (Ray's own
    would end the process without the workers' flush)."""
    try:
        import ray
    except ImportError:
        from fes_live.stream.config import ConfigError
        raise ConfigError("--ray needs Ray: pip install 'fes-live[ray]'") from None
    if not ray.is_initialized():
        ours = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
        ray.init(address=address, namespace=NAMESPACE, log_to_driver=False, configure_logging=False)
        if threading.current_thread() is threading.main_thread():
            for s, handler in ours.items():
                signal.signal(s, handler)
    return ray


def start_actors(cfg, address: str) -> list:
    """`cfg.workers` named detector actors, each with its own lane and journal; returned once each answers."""
    from fes_live.stream.app import free_port
    from fes_live.stream.auth import is_loopback
    from fes_live.stream.workers import worker_config
    ray = connect(address)
    gpus = ray.cluster_resources().get("GPU", 0) > 0
    loopback = is_loopback(cfg.endpoints.resolved().features)
    actor_cls = ray.remote(DetectorActor)
    actors = []
    for i in range(cfg.workers):
        ports = (free_port(), free_port(), free_port())  # chosen once: a restarted actor binds the same ones
        actors.append(actor_cls.options(**actor_options(i, gpus)).remote(worker_config(cfg, i, cfg.endpoints),
                                                                        loopback, ports))
    ray.get([a.endpoints.remote() for a in actors], timeout=READY_TIMEOUT_S)
    return actors


def features_endpoint(address: str, stream_id: str) -> str:
    """For an ingest: the features endpoint of the detector actor that owns `stream_id`, found by name."""
    from fes_live.stream.config import ConfigError
    from fes_live.stream.workers import shard
    ours = not _ray_connected()  # a connection opened here (an ingest's) is closed again
    ray = connect(address)
    try:
        pattern = re.compile(ACTOR.format(r"(\d+)"))
        n = sum(1 for a in ray.util.list_named_actors(all_namespaces=True)
                if a.get("namespace") == NAMESPACE and pattern.fullmatch(a.get("name", "")))
        if n == 0:
            raise ConfigError(f"no fes-live detector actors on the Ray cluster at {address}")
        actor = ray.get_actor(ACTOR.format(shard(stream_id, n)), namespace=NAMESPACE)
        return ray.get(actor.endpoints.remote(), timeout=60)["features"]
    finally:
        if ours:
            ray.shutdown()


def _ray_connected() -> bool:
    import sys
    ray = sys.modules.get("ray")
    return ray is not None and ray.is_initialized()


def run_ray_pool(cfg, address: str, stop_event: threading.Event) -> int:
    """Start the actors, serve the front here until `stop_event`, then stop and remove the actors."""
    from fes_live.stream.client import ReplayError, hello
    from fes_live.stream.pipeline_config import Endpoints
    from fes_live.stream.workers import Front, front_config
    ray = connect(address)
    actors = start_actors(cfg, address)
    try:
        eps = [ray.get(a.endpoints.remote()) for a in actors]
        workers = tuple(Endpoints(features=e["features"], events=e["events"], replay=e["replay"], preview="",
                                  curve=cfg.endpoints.curve) for e in eps)
        deadline = time.monotonic() + READY_TIMEOUT_S  # every engine loaded
        for w in workers:
            while True:
                try:
                    hello(w.replay, timeout_s=1.0, curve=cfg.endpoints.curve)
                    break
                except ReplayError:
                    if time.monotonic() > deadline or stop_event.is_set():
                        raise RuntimeError(f"detector actor at {w.replay} did not come up") from None
        front = Front(front_config(cfg, list(workers)))
        log.info("detector: %d Ray actors behind %s / %s / %s", len(actors), cfg.endpoints.features,
                 cfg.endpoints.events, cfg.endpoints.replay)
        front_stop = threading.Event()
        t = threading.Thread(target=front.run, args=(front_stop,), name="front", daemon=True)
        t.start()
        stop_event.wait()
        try:  # the workers flush their streams while the front still forwards their last events
            ray.get([a.stop.remote() for a in actors], timeout=60)
        except Exception as e:  # an actor restarting or its node gone: what it journaled stays there
            log.warning("stopping the detector actors: %s", e)
        front_stop.set()
        t.join(30)
        return 0
    finally:
        for a in actors:
            ray.kill(a, no_restart=True)
