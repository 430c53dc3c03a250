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
class Endpoints:
    """Where the roles meet. The detector binds `features`, `events`, `replay`; ingests connect to `features`.

    `preview` is bound by the consumer (the viewer) and connected to by every ingest, so any number of ingests can
    publish previews to one viewer, and a viewer started later still receives them.
    """
    features: str = ""  # ingest -> detector (PUSH -> PULL); "" = ipc://<runtime_dir>/features
    events: str = "tcp://127.0.0.1:5556"  # detector PUB, topic "<type>/<stream_id>"
    replay: str = "tcp://127.0.0.1:5557"  # detector ROUTER: journal replay from a sequence number
    preview: str = ""  # ingest PUB (connect) -> viewer SUB (bind); "" = ipc://<runtime_dir>/preview

    def resolved(self, rt: str | None = None, tcp_ports: tuple[int, int] = (5558, 5559)) -> "Endpoints":
        """The same endpoints with the local defaults filled in: ipc sockets in the folder `rt` (default
        runtime_dir(), created), or, where ZeroMQ has no ipc:// (some Windows builds), tcp on 127.0.0.1 at
        `tcp_ports` (features, preview)."""
        if not has_ipc():
            return Endpoints(features=self.features or f"tcp://127.0.0.1:{tcp_ports[0]}", events=self.events,
                             replay=self.replay, preview=self.preview or f"tcp://127.0.0.1:{tcp_ports[1]}")
        rt = rt or runtime_dir()
        if not self.features or not self.preview:
            os.makedirs(rt, mode=0o700, exist_ok=True)
        return Endpoints(features=self.features or f"ipc://{rt}/features",
                         events=self.events, replay=self.replay,
                         preview=self.preview or f"ipc://{rt}/preview")


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
    end_timeout_s: float = 5.0  # how long the "stream ended" message may wait for a full queue


@dataclass(frozen=True)
class DetectConfig:
    """The detector service: many streams in, events out."""
    endpoints: Endpoints = Endpoints()
    engine: str = ""  # "" = the bundled default engine
    backend: str = "auto"
    torch_threads: int = 1  # per-frame GIM batches are tiny: one thread is fastest and leaves cores to ingests
    batch_streams: bool = True  # one GIM engine call for the frames of all busy streams (threads, see detect.py)
    batch_frames: int = 4  # frames per stream per batched round
    queue_frames: int = 90  # per-stream backlog; beyond it the oldest frames are dropped (and counted)
    max_batch_msgs: int = 512  # messages drained from the socket per loop turn before processing
    intensity_hz: float = 10.0  # intensity events per second per stream (each carries every frame since the last)
    stats_interval_s: float = 1.0
    journal: str = ""  # JSONL path of the event journal; "" = replay from memory only
    replay_memory: int = 100_000  # events kept in memory for replay (older ones are read from the journal)
    record_dir: str = ""  # "" = off; else per-frame intensity CSVs go there
    idle_stream_s: float = 30.0  # a stream silent this long is flushed and announced as ended (error)
    run_token: str = ""  # set by `fes-live run`: prefixes the publisher id so the app knows its own detector


@dataclass(frozen=True)
class RunConfig:
    """`fes-live run`: every role locally, supervised."""
    sources: tuple[str, ...] = ("0",)
    endpoints: Endpoints = Endpoints()
    fast: bool = False
    record_dir: str = ""
    engine: str = ""
    backend: str = "auto"
    face_model: str | None = None
    max_faces: int = 1  # faces tracked per source
    loop: bool = False  # files and folders: play again from the start at the end
    reconnect_give_up_s: float = 0.0  # network sources: give up after this long without a frame (0: never)
    console: bool = True  # print expressions, face and stream changes on stdout (fes-events shows everything)
    max_restarts: int = 5  # per child within restart_window_s, then the child is given up
    restart_window_s: float = 60.0
    shutdown_timeout_s: float = 10.0
