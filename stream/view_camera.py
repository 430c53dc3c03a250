"""The browser's camera as a source of the viewer (`fes-live view`): its WebRTC track goes through the same face
tracker, feature extractor and sender as an ingest process, so the detector cannot tell it from a camera.

`hub` is the viewer's `stream.view.Hub` (its config, previews and broadcasts to the browsers).
"""
from __future__ import annotations

import asyncio
import collections
import logging
import threading
import time

import numpy as np

from fes_live.stream import wire

log = logging.getLogger(__name__)


class CameraIngest:
    """Browser camera -> FaceTracker -> FeatureExtractor -> detector, as an ingest does; previews go to the hub.

    A reader task keeps only the newest frame; one worker thread processes frames in order of arrival and skips
    what it could not keep up with (counted), so a slow machine lags by at most one frame.
    """

    def __init__(self, hub, track, stream_id: str, loop: asyncio.AbstractEventLoop):
        self.hub, self.track, self.stream_id, self.loop = hub, track, stream_id, loop
        self.latest: tuple | None = None
        self.have = threading.Condition()
        self.stopping = threading.Event()
        self.stats = collections.Counter()
        self.reader = asyncio.ensure_future(self._read())
        self.worker = threading.Thread(target=self._work, name=f"camera:{stream_id}", daemon=True)
        self.worker.start()

    async def _read(self) -> None:
        from aiortc.mediastreams import MediaStreamError
        while not self.stopping.is_set():
            try:
                frame = await self.track.recv()
            except MediaStreamError:
                break
            image = frame.to_ndarray(format="bgr24")
            with self.have:
                if self.latest is not None:
                    self.stats["skipped"] += 1
                self.latest = (image, time.time(), time.monotonic())
                self.have.notify()
            self.stats["received"] += 1
        self.stopping.set()
        with self.have:
            self.have.notify()

    def _work(self) -> None:
        from fes_live.stream.face import FaceConfig, FaceTracker
        from fes_live.stream.features import FeatureConfig, FeatureExtractor
        from fes_live.stream.ingest import Sender
        from fes_live.stream.pipeline_config import IngestConfig
        from fes_live.stream.sources import Frame
        cfg = self.hub.cfg
        sender = Sender(IngestConfig(stream_id=self.stream_id, endpoints=cfg.endpoints, preview=False,
                                     face_model=cfg.face_model))
        tracker, index = None, 0
        try:
            tracker = FaceTracker(FaceConfig(face_model=cfg.face_model))
            extractor = FeatureExtractor(FeatureConfig())
            sender.control(self.stream_id, "started", source="browser camera", fps=0.0)
            t_first = None
            while True:
                with self.have:
                    while self.latest is None and not self.stopping.is_set():
                        self.have.wait(0.5)
                    item, self.latest = self.latest, None
                if item is None:
                    break
                image, wall_s, mono_s = item
                t_first = mono_s if t_first is None else t_first
                frame = Frame(self.stream_id, index, mono_s - t_first, wall_s, mono_s, image)
                faces = tracker.update(frame)
                feats = extractor.update(frame, faces)
                self.stats[f"face_{faces.state.value}"] += 1
                if not sender.features(self.stream_id, feats, faces.state.value):
                    self.stats["send_dropped"] += 1
                self._preview(frame, faces)
                index += 1
            sender.control(self.stream_id, "ended", message="browser camera closed", frame_index=index - 1,
                           frames=index, dropped=sender.dropped)
        except Exception as e:  # a broken model file or the like: say so to the browser, keep the server up
            log.exception("camera stream %s failed", self.stream_id)
            self.stats["errors"] += 1
            sender.control(self.stream_id, "error", message=f"{type(e).__name__}: {e}", frame_index=index - 1,
                           frames=index, dropped=sender.dropped)
            self.loop.call_soon_threadsafe(self.hub.broadcast, {"t": "error", "stream": self.stream_id,
                                                                "error": f"{type(e).__name__}: {e}"})
        finally:
            if tracker is not None:
                tracker.close()
            sender.close()

    def _preview(self, frame, faces) -> None:
        face = faces.primary
        p = wire.Preview(self.stream_id, frame.index, frame.pts_s, frame.wall_s, faces.state.value,
                         np.zeros(0, np.uint8),
                         face.landmarks[:, :2].astype(np.float32) if face is not None else np.zeros((0, 2), np.float32),
                         tuple(map(float, face.box)) if face is not None else None,
                         frame.image.shape[1], frame.image.shape[0])
        asyncio.run_coroutine_threadsafe(self.hub.put_preview(p, frame.image, source="browser"), self.loop)

    async def stop(self) -> None:
        self.stopping.set()
        self.reader.cancel()
        with self.have:
            self.have.notify()
        await asyncio.get_running_loop().run_in_executor(None, self.worker.join, 5.0)
        s = self.hub.streams.get(self.stream_id)
        if s is not None:
            s.status = "ended"
            self.hub.broadcast({"t": "streams", "streams": self.hub.summary()})

    def report(self) -> dict:
        return dict(self.stats)
