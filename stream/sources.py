"""Live video sources: webcam, RTSP/HTTP, video file, folder of numbered images -> one iterator of `Frame`.

Every frame carries four clocks: its 0-based index, the source timestamp (PTS, so variable-frame-rate files keep
their real timing), the capture wall-clock time and the capture time on `time.monotonic()` (RTSP timestamps jump
and restart, MediaPipe's video mode needs a clock that never goes back). Network sources open and read with a
timeout instead of hanging and reconnect with exponential backoff after a drop; a missing file or an unreachable
URL raises `SourceError` within seconds. A network source may also be asked to keep trying at start
(`retry_open`: a camera that is down when the pipeline starts), and reports each outage and recovery through
`on_outage` so the pipeline can say so on the event stream.
"""
from __future__ import annotations

import dataclasses
import logging
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

# OpenCV and its FFmpeg print several lines of their own for every source that fails to open ("moov atom not
# found", "can't open camera by index"); our SourceError says it in one line instead. Read when cv2 loads.
os.environ.setdefault("OPENCV_LOG_LEVEL", "ERROR")
os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")  # AV_LOG_QUIET

import cv2  # noqa: E402
import numpy as np  # noqa: E402

cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)  # in case cv2 was imported before us

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
NETWORK_SCHEMES = ("rtsp://", "rtsps://", "http://", "https://", "rtmp://", "udp://", "tcp://", "srt://")


class SourceError(RuntimeError):
    """A source that cannot be opened or read: missing file, unreachable URL, no camera, gave up reconnecting."""


@dataclass(frozen=True)
class Frame:
    stream_id: str
    index: int         # 0-based, counts frames delivered by this source (gaps only on reconnect)
    pts_s: float       # source timestamp (PTS; VFR files included)
    wall_s: float      # capture wall-clock time, time.time()
    mono_s: float      # capture time on time.monotonic(); recorded sources (files, folders): open time + PTS
    image: np.ndarray  # (H, W, 3) uint8 BGR


def on_source_clock(frame: Frame) -> Frame:
    """The frame with MediaPipe's clock (`mono_s`) set to its PTS. MediaPipe's landmark smoothing depends on the
    timestamps it is given, in whole milliseconds: open time + PTS rounds differently on every run (33 or 34 ms
    steps), a file's own timestamps do not, so every pass over a file (extract, batch, lossless ingest) gives the
    same features."""
    return dataclasses.replace(frame, mono_s=frame.pts_s)


@dataclass(frozen=True)
class SourceConfig:
    realtime: bool = False            # files and folders: play at their own rate (as a camera would), not flat out
    loop: bool = False                # files and folders: start again at the end (PTS and index keep increasing)
    folder_fps: float = 30.0          # frame rate of a folder of images (they carry none)
    open_timeout_s: float = 5.0       # network: give up opening after this long
    read_timeout_s: float = 5.0       # network: a read that blocks this long counts as a drop
    reconnect: bool = True            # network and webcam: reopen after a drop
    backoff_initial_s: float = 0.5    # first wait before reopening; doubles per failed try
    backoff_max_s: float = 8.0
    give_up_after_s: float = 30.0     # no frame for this long while reconnecting -> SourceError (0: never give up)
    retry_open: bool = False          # network: a source that cannot be opened at start is retried like a drop
    width: int = 0                    # webcam: requested size (0: the driver's default)
    height: int = 0

    def __post_init__(self) -> None:
        if self.folder_fps <= 0:
            raise ValueError(f"folder_fps must be > 0, got {self.folder_fps}")
        if self.open_timeout_s <= 0 or self.read_timeout_s <= 0:
            raise ValueError("open_timeout_s and read_timeout_s must be > 0")


class Source:
    """Iterator of `Frame`; subclasses provide `_read() -> (image, pts_s) | None` (None: end of stream)."""

    fps: float = 0.0  # nominal frame rate (0 when unknown)
    live: bool = False  # cameras and network streams set their own pace: never slowed down by `realtime`
    start_error: str = ""  # network: why the first open failed, while it is being retried (`retry_open`)

    def __init__(self, uri: str, cfg: SourceConfig, stream_id: str):
        self.uri, self.cfg, self.stream_id = uri, cfg, stream_id
        self._index = 0
        self._pts_offset = 0.0
        self._last_pts: float | None = None
        self._play_start: tuple[float, float] | None = None  # (mono, pts) at the first frame, for realtime pacing
        self.dropped_reconnects = 0
        self._clock0 = time.monotonic()
        self.on_outage: Callable[[str, str], None] | None = None  # ("down" | "up", message), network sources

    def __iter__(self) -> Source:
        return self

    def __next__(self) -> Frame:
        got = self._read()
        if got is None:
            raise StopIteration
        image, pts = got
        pts = self._monotone_pts(pts)
        self._pace(pts)
        mono = time.monotonic() if self.live else self._clock0 + pts
        frame = Frame(self.stream_id, self._index, pts, time.time(), mono, image)
        self._index += 1
        return frame

    def _monotone_pts(self, pts: float) -> float:
        """Keep PTS increasing across loops, reconnects and bogus stamps by shifting with an offset."""
        out = pts + self._pts_offset
        if self._last_pts is not None and out <= self._last_pts:
            step = 1.0 / self.fps if self.fps > 0 else 1.0 / 30.0
            self._pts_offset += self._last_pts + step - out
            out = self._last_pts + step
        self._last_pts = out
        return out

    def _pace(self, pts: float) -> None:
        if not self.cfg.realtime or self.live:
            return
        now = time.monotonic()
        if self._play_start is None:
            self._play_start = (now, pts)
            return
        wait = self._play_start[0] + (pts - self._play_start[1]) - now
        if wait > 0:
            time.sleep(wait)

    def _read(self) -> tuple[np.ndarray, float] | None:
        raise NotImplementedError

    def close(self) -> None:
        pass

    def describe(self) -> str:
        return f"{type(self).__name__}({redact(self.uri)!r}, fps={self.fps:g})"

    def __enter__(self) -> Source:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class CaptureSource(Source):
    """Anything OpenCV's VideoCapture reads: a video file, a webcam index, an RTSP/HTTP URL (FFmpeg backend)."""

    def __init__(self, uri: str, cfg: SourceConfig, stream_id: str, kind: str):
        super().__init__(uri, cfg, stream_id)
        self.kind = kind  # "file", "webcam" or "network"
        self.live = kind != "file"
        self._cap: cv2.VideoCapture | None = None
        self._closed = False
        self._live_start = time.monotonic()
        self._last_frame_mono = time.monotonic()  # last good read (or the open): outages are measured from here
        try:
            self._cap = self._open()
        except SourceError as e:
            if not (kind == "network" and cfg.retry_open and cfg.reconnect):
                raise
            log.error("%s; retrying with backoff (%s)", e, f"for {cfg.give_up_after_s:g} s" if cfg.give_up_after_s
                      else "until it answers")
            self.start_error = str(e)  # the first _read reconnects
        self._read_fps()

    def _read_fps(self) -> None:
        fps = float(self._cap.get(cv2.CAP_PROP_FPS) or 0.0) if self._cap is not None else 0.0
        self.fps = fps if 0 < fps < 1000 else 0.0

    def _open(self) -> cv2.VideoCapture:
        if self.kind == "webcam":
            cap = cv2.VideoCapture(int(self.uri))
            if self.cfg.width and self.cfg.height:
                cap.set(cv2.CAP_PROP_FRAME_WIDTH, self.cfg.width)
                cap.set(cv2.CAP_PROP_FRAME_HEIGHT, self.cfg.height)
        elif self.kind == "network":
            params = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, int(self.cfg.open_timeout_s * 1000),
                      cv2.CAP_PROP_READ_TIMEOUT_MSEC, int(self.cfg.read_timeout_s * 1000)]
            cap = cv2.VideoCapture(self.uri, cv2.CAP_FFMPEG, params)
        else:
            cap = cv2.VideoCapture(self.uri, cv2.CAP_FFMPEG)
        if not cap.isOpened():
            cap.release()
            what = {"webcam": "no camera at index", "network": "cannot connect to",
                    "file": "cannot decode video (not a video, or truncated):"}
            raise SourceError(f"{what[self.kind]} {redact(self.uri)}")
        return cap

    def _read(self) -> tuple[np.ndarray, float] | None:
        while not self._closed:
            ok, image = (False, None) if self._cap is None else self._cap.read()
            if ok and image is not None:
                self._last_frame_mono = time.monotonic()
                return image, self._pts()
            if self.kind == "file":
                if not self.cfg.loop or self._index == 0:
                    return None
                self._cap.set(cv2.CAP_PROP_POS_FRAMES, 0)  # loop: _monotone_pts shifts the restarted PTS
                ok, image = self._cap.read()
                if not ok:
                    return None
                return image, self._pts()
            if not self.cfg.reconnect:
                return None
            self._reconnect()
        return None

    def _pts(self) -> float:
        if self.kind == "webcam":  # drivers rarely give a usable PTS; the capture clock is the camera's clock
            return time.monotonic() - self._live_start
        return float(self._cap.get(cv2.CAP_PROP_POS_MSEC)) / 1000.0

    def _reconnect(self) -> None:
        """Reopen with exponential backoff; the index then skips the frames the outage cost (at the nominal fps).

        The outage counts from the last good frame, so a stream that reopens but never delivers still gives up."""
        dropped_at = self._last_frame_mono
        if self._cap is not None:
            self._cap.release()
            self._cap = None
            log.warning("%s: stream dropped, reconnecting", redact(self.uri))
            self._tell("down", f"{redact(self.uri)}: stream dropped, reconnecting")
        elif self.start_error:
            self._tell("down", f"{self.start_error}; retrying")
        delay = self.cfg.backoff_initial_s
        while not self._closed:
            waited = time.monotonic() - dropped_at
            if self.cfg.give_up_after_s and waited >= self.cfg.give_up_after_s:
                raise SourceError(f"{redact(self.uri)}: no frame for {waited:.1f} s, gave up reconnecting")
            time.sleep(delay)
            if self._closed:
                return
            try:
                self._cap = self._open()
            except SourceError as e:
                delay = min(delay * 2, self.cfg.backoff_max_s)
                log.info("%s: reconnect failed (%s); next try in %.1f s", redact(self.uri), e, delay)
                continue
            outage = time.monotonic() - dropped_at
            if self.start_error:  # the first open: nothing was dropped
                self.start_error = ""
                self._read_fps()
                self._live_start = time.monotonic()
                log.warning("%s: connected after %.1f s", redact(self.uri), outage)
                self._tell("up", f"connected after {outage:.1f} s")
                return
            self.dropped_reconnects += 1
            if self.fps > 0:  # frames the outage cost, beyond the one that is about to arrive
                self._index += max(0, int(outage * self.fps) - 1)
            log.warning("%s: reconnected after %.1f s", redact(self.uri), outage)
            self._tell("up", f"reconnected after {outage:.1f} s")
            return

    def _tell(self, what: str, message: str) -> None:
        if self.on_outage is not None:
            self.on_outage(what, message)

    def close(self) -> None:
        """Release the capture; a reconnect loop in progress stops at its next try."""
        self._closed = True
        if self._cap is not None:
            self._cap.release()
            self._cap = None


class FolderSource(Source):
    """A folder of numbered frame images (dataset layout). Sorted by the number in the name, not as text, so
    unpadded and gapped numbering (CAS(ME)^3: 1.jpg, 2.jpg, ..., 10.jpg, 14.jpg) keeps its order; PTS follows the
    numbers, so a gap in the numbering is a gap in time."""

    def __init__(self, uri: str, cfg: SourceConfig, stream_id: str):
        super().__init__(uri, cfg, stream_id)
        self.fps = cfg.folder_fps
        files = [p for p in Path(uri).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()]
        numbered = []
        for p in files:
            m = re.findall(r"\d+", p.stem)
            if not m:
                raise SourceError(f"{uri}: image {p.name} has no frame number in its name")
            numbered.append((int(m[-1]), p.name, p))
        if not numbered:
            raise SourceError(f"{uri}: no images ({', '.join(IMAGE_SUFFIXES)}) in this folder")
        numbered.sort()
        self.numbers = [n for n, _, _ in numbered]
        self.paths = [p for _, _, p in numbered]
        self._pos = 0

    def _read(self) -> tuple[np.ndarray, float] | None:
        if self._pos >= len(self.paths):
            if not self.cfg.loop:
                return None
            self._pos = 0
        path, number = self.paths[self._pos], self.numbers[self._pos]
        self._pos += 1
        image = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if image is None:
            raise SourceError(f"cannot read image {path}")
        return image, (number - self.numbers[0]) / self.fps

    def __len__(self) -> int:
        return len(self.paths)


def open_source(uri: str, cfg: SourceConfig = SourceConfig(), stream_id: str | None = None) -> Source:
    """Open `uri`: "0" (webcam index), rtsp:// or http(s):// URL, a video file or a folder of numbered images."""
    uri = str(uri)
    if stream_id is None:
        stream_id = default_stream_id(uri)
    if re.fullmatch(r"\d+", uri):
        return CaptureSource(uri, cfg, stream_id, "webcam")
    if uri.lower().startswith(NETWORK_SCHEMES):
        return CaptureSource(uri, cfg, stream_id, "network")
    path = Path(uri).expanduser()
    if path.is_dir():
        return FolderSource(str(path), cfg, stream_id)
    if not path.is_file():
        raise SourceError(f"no such file or folder: {uri}")
    if not os.access(path, os.R_OK):
        raise SourceError(f"cannot read {uri}: permission denied")
    return CaptureSource(str(path), cfg, stream_id, "file")


def probe_source(uri: str, timeout_s: float = 2.5) -> str:
    """Open `uri` and read its first frame (files, folders) or just open it (cameras, network), then close it:
    a bad source is a one-line SourceError within seconds, before anything slow starts. Returns its description."""
    cfg = SourceConfig(open_timeout_s=timeout_s, read_timeout_s=timeout_s, reconnect=False)
    with open_source(uri, cfg) as src:
        if isinstance(src, FolderSource) or getattr(src, "kind", "") == "file":
            try:
                next(src)
            except StopIteration:
                raise SourceError(f"{uri}: no frame could be decoded (empty or truncated video?)") from None
        return src.describe()


def redact(uri: str) -> str:
    """The URI with any user:password@ replaced, for logs, errors and ids (camera URLs often carry credentials)."""
    return re.sub(r"^([a-z]+://)[^/@]*@", r"\1***@", uri, flags=re.I)


def default_stream_id(uri: str) -> str:
    """A short readable id: file stem, folder name, camera index or the URL's host/path."""
    if re.fullmatch(r"\d+", uri):
        return f"cam{uri}"
    name = re.sub(r"^[a-z]+://", "", redact(uri).rstrip("/"), flags=re.I).replace("***@", "")
    name = Path(name).stem if not uri.lower().startswith(NETWORK_SCHEMES) else name
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name)[-64:] or "stream"


