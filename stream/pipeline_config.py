"""Configs of the live pipeline's roles: endpoints, queues, throttles.

All are frozen dataclasses built through `stream.config.from_dict`, so a JSON file or a role's command line gives
the same object. Endpoints are ZeroMQ addresses: `ipc://` on one machine (the default for frames), `tcp://` across
machines; everything binds to 127.0.0.1 unless told otherwise.
"""
from __future__ import annotations

import getpass
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from fes_live.stream.config import ConfigError

BUNDLED_ENGINES = Path(__file__).resolve().parent / "engines"
DEFAULT_ENGINE = BUNDLED_ENGINES / "default"
ENGINE_HELP = ("engine folder, or the name of a bundled one: default (real faces; the default) or lab (also "
               "micro-expressions, docs/real_dev.md)")

THRESHOLD_HELP = ("the FEDN score an expression needs, in place of the engine's own (default 0.6, lab 0.5): higher "
                  "reports less talking and fewer expressions, lower the reverse (docs/real_dev.md, 'Operating points')")


def check_threshold(value: float) -> None:
    """A FEDN threshold override: 0 (none, the engine's own) or a score strictly between 0 and 1."""
    if not 0.0 <= value < 1.0:
        raise ConfigError(f"fedn_threshold {value}: give a score between 0 and 1 (0: the engine's own)")


class EngineError(RuntimeError):
    """An engine that cannot be used: missing, corrupt or mismatched file, unknown backend. (Here, not in
    stream.engine, so that commands that only report it, `fes-live extract`, do not import torch.)"""


def engine_folder(path: str | Path | None) -> Path:
    """A folder as given, or a bundled engine by name when no such folder exists here (`--engine lab`)."""
    if path is None or str(path) == "":
        return DEFAULT_ENGINE
    folder = Path(path)
    if not folder.exists() and folder.name == str(path) and (BUNDLED_ENGINES / folder.name).is_dir():
        return BUNDLED_ENGINES / folder.name
    return folder


def runtime_dir() -> str:
    """Folder for ipc:// sockets: $XDG_RUNTIME_DIR, else /tmp/fes-live-<user> (short: ipc paths max ~100 chars).

    Roles started separately (`fes-live detect`, `fes-live ingest`) meet here; `fes-live run` uses a folder of
    its own inside it (`instance_dir`), so two runs on one machine never share a socket."""
    base = os.environ.get("XDG_RUNTIME_DIR") or os.path.join(tempfile.gettempdir(), f"fes-live-{getpass.getuser()}")
    return base


def instance_dir() -> str:
    """A fresh private folder for one `fes-live run`'s ipc sockets: <runtime_dir>/run-<pid>-<random>."""
    base = runtime_dir()
    os.makedirs(base, mode=0o700, exist_ok=True)
    return tempfile.mkdtemp(prefix=f"run-{os.getpid()}-", dir=base)


@dataclass(frozen=True)
class CurveConfig:
    """CurveZMQ keys for tcp endpoints off loopback (stream/auth.py, docs/security.md; `fes-live keygen DIR`).

    The detector needs `server_secret` and `clients_dir`; every role that connects to it needs `client_secret` and
    `server_public`. `require`: "auto" = CURVE on exactly the tcp endpoints that are not loopback (a role refuses
    to start without its keys); "always" = on every tcp endpoint (tests force it on 127.0.0.1); "never" = off
    (`--insecure`: anyone who can reach the port may read events and send frames).
    """
    server_secret: str = ""  # the detector's key pair: <keys>/server.key_secret
    clients_dir: str = ""  # public keys of the authorised clients: <keys>/clients/*.key
    client_secret: str = ""  # a connecting role's key pair: <keys>/client.key_secret
    server_public: str = ""  # the detector's public key: <keys>/server.key
    require: str = "auto"  # auto | always | never


@dataclass(frozen=True)
class Endpoints:
    """Where the roles meet. The detector binds `features`, `events`, `replay`; ingests connect to `features`.

    `preview` is bound by the consumer (the viewer) and connected to by every ingest, so any number of ingests can
    publish previews to one viewer, and a viewer started later still receives them.
    """
    features: str = ""  # ingest -> detector (PUSH -> PULL); "" = ipc://<runtime_dir>/features
    events: str = "tcp://127.0.0.1:5556"  # detector PUB, topic "<type>/<stream_id>"
    replay: str = "tcp://127.0.0.1:5557"  # detector ROUTER: journal replay from a sequence number
    preview: str = ""  # ingest PUB (connect) -> viewer SUB (bind); "" = ipc://<runtime_dir>/preview
    curve: CurveConfig = CurveConfig()  # keys for the tcp endpoints that are not loopback

    def resolved(self, rt: str | None = None, tcp_ports: tuple[int, int] = (5558, 5559)) -> "Endpoints":
        """The same endpoints with the local defaults filled in: ipc sockets in the folder `rt` (default
        runtime_dir(), created), or, where ZeroMQ has no ipc:// (some Windows builds), tcp on 127.0.0.1 at
        `tcp_ports` (features, preview)."""
        if not has_ipc():
            return Endpoints(features=self.features or f"tcp://127.0.0.1:{tcp_ports[0]}", events=self.events,
                             replay=self.replay, preview=self.preview or f"tcp://127.0.0.1:{tcp_ports[1]}",
                             curve=self.curve)
        rt = rt or runtime_dir()
        if not self.features or not self.preview:
            os.makedirs(rt, mode=0o700, exist_ok=True)
        return Endpoints(features=self.features or f"ipc://{rt}/features",
                         events=self.events, replay=self.replay,
                         preview=self.preview or f"ipc://{rt}/preview", curve=self.curve)


def has_ipc() -> bool:
    import zmq
    return bool(zmq.has("ipc"))


@dataclass(frozen=True)
class IngestConfig:
    """One source -> face -> features -> detector."""
    source: str = "0"
    stream_id: str = ""  # "" = derived from the source by fes_live.stream.sources
    endpoints: Endpoints = Endpoints()
    fast: bool = False  # files: as fast as possible instead of at their own frame rate
    send_crops: bool = False  # only engines with an image backbone need the 224x224 crops
    send_hwm: int = 256  # frames queued towards the detector before new ones are dropped (and counted)
    preview: bool = True  # publish JPEG previews for the viewer
    preview_fps: float = 15.0  # at most this many preview frames per second
    preview_width: int = 640  # previews are downscaled to at most this width
    preview_quality: int = 75  # JPEG quality
    face_model: str | None = None
    max_faces: int = 1
    loop: bool = False  # files and folders: start again at the end (a demo clip that plays until Ctrl-C)
    reconnect_give_up_s: float = 0.0  # network: stop retrying after this long without a frame (0: never)
    record_dir: str = ""  # "" = off; else clips around each expression go to <record_dir>/clips
    clip_pad_s: float = 1.0  # seconds of video kept before the onset and after the offset
    lsl: bool = False  # Lab Streaming Layer outlets for events, I(t) and blendshapes (stream/lsl_outlet.py)
    lsl_wait_s: float = 0.0  # with lsl: wait this long for a consumer (e.g. LabRecorder) before the source starts
    end_timeout_s: float = 5.0  # how long the "stream ended" message may wait for a full queue


@dataclass(frozen=True)
class DetectConfig:
    """The detector service: many streams in, events out."""
    endpoints: Endpoints = Endpoints()
    engine: str = ""  # "" = the bundled default engine; a folder or a bundled engine's name (engine_folder)
    backend: str = "auto"
    fedn_threshold: float = 0.0  # FEDN score an expression needs; 0 = the engine's own (load_engine)
    torch_threads: int = 1  # per-frame GIM batches are tiny: one thread is fastest and leaves cores to ingests
    batch_streams: bool = True  # one engine call per model for the frames of all busy streams (stream/batching.py)
    batch_frames: int = 4  # frames per stream per batched round
    queue_frames: int = 90  # per-stream backlog; beyond it the oldest frames are dropped (and counted)
    max_batch_msgs: int = 512  # messages drained from the socket per loop turn before processing
    intensity_hz: float = 10.0  # intensity events per second per stream (each carries every frame since the last)
    stats_interval_s: float = 1.0
    journal: str = ""  # SQLite file of the event journal (a `.jsonl` path means `.sqlite`); "" = memory only
    journal_max_mb: float = 1024.0  # retention: the oldest events are deleted beyond this size (0 = no limit)
    journal_max_age_h: float = 0.0  # retention: events older than this are deleted (0 = no limit)
    replay_memory_mb: float = 32.0  # newest events kept in memory for replay (older ones come from the journal)
    subscriber_buffer_mb: float = 64.0  # most a subscriber that does not read can hold of this process's memory
    state_interval_s: float = 2.0  # how often each stream's state (neutral baseline, track ids) is journaled
    record_dir: str = ""  # "" = off; else per-frame intensity CSVs go there
    idle_stream_s: float = 30.0  # a stream silent this long is flushed and announced as ended (error)
    aoti_build: bool = True  # with backend auto on a CPU: compile AOTInductor packages in the background, once per
                             # machine, and switch to them when ready (stream/engine_build.py; env FES_AOTI_BUILD=0: off)
    # admission and fairness: what a flood of messages or stream ids can cost (docs/security.md)
    max_streams: int = 256  # streams with a spotter; frames of further streams are refused and counted
    max_pending_streams: int = 64  # streams not yet proven real (cheap: a short queue, no spotter)
    admit_frames: int = 10  # valid feature frames, in increasing order, before a stream gets its spotter
    follow_frame_rate: bool = True  # the spotters get each frame's timestamp, so that a stream is spotted at the rate
                                    # its frames come at (the engine's SpotterConfig.follow_rate); False: as announced
    pending_idle_s: float = 3.0  # a stream that has not proven real and is silent this long is forgotten (one its
                                 # ingest announced with `started`: idle_stream_s)
    recv_hwm: int = 1000  # messages ZeroMQ queues per connected ingest before it stops reading that peer
    drain_budget_s: float = 0.02  # per loop turn, at most this long receiving before the streams get processed
    stream_msgs_per_turn: int = 128  # frames of one stream taken per loop turn; more are dropped (and counted)
    stats_streams: int = 8  # per-stream stats events up to this many streams; beyond, one detector-wide event
    notes_per_s: float = 10.0  # supervisor notes and ends of unknown streams published per second (burst 2x)
    run_token: str = ""  # set by `fes-live run`: prefixes the publisher id so the app knows its own detector
    workers: int = 1  # detector processes behind one set of endpoints, streams sharded by id (stream/workers.py)

    def __post_init__(self) -> None:
        check_threshold(self.fedn_threshold)


@dataclass(frozen=True)
class RunConfig:
    """`fes-live run`: every role locally, supervised."""
    sources: tuple[str, ...] = ("0",)
    endpoints: Endpoints = Endpoints()
    fast: bool = False
    record_dir: str = ""
    engine: str = ""
    backend: str = "auto"
    fedn_threshold: float = 0.0  # DetectConfig.fedn_threshold
    face_model: str | None = None
    lsl: bool = False  # every ingest opens Lab Streaming Layer outlets (IngestConfig.lsl)
    lsl_wait_s: float = 0.0
    max_faces: int = 1  # faces tracked per source
    loop: bool = False  # files and folders: play again from the start at the end
    reconnect_give_up_s: float = 0.0  # network sources: give up after this long without a frame (0: never)
    console: bool = True  # print expressions, face and stream changes on stdout (fes-events shows everything)
    max_restarts: int = 5  # per child within restart_window_s, then the child is given up
    restart_window_s: float = 60.0
    shutdown_timeout_s: float = 10.0
    workers: int = 1  # detector worker processes (DetectConfig.workers)

    def __post_init__(self) -> None:
        check_threshold(self.fedn_threshold)
