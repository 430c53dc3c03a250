"""H.264 .mp4 files that browsers play: yuv420p, `+faststart` (the index first), written with PyAV.

OpenCV's `mp4v` writer makes MPEG-4 Part 2, which Chromium refuses (`DEMUXER_ERROR_NO_SUPPORTED_STREAMS`). One
writer for every video fes-live makes: `--record` clips and `fes-synth` videos.
"""
from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import cv2
import numpy as np


TICKS = 90000  # time base of a file written at the frames' own timestamps (MPEG's 90 kHz)


class VideoWriter:
    """`write(bgr_frame)` ... `close()`; frames of one size (odd sizes are cropped to even: yuv420p needs it).

    `crf` is x264's quality (lower is better; 23 is its default, 18 looks lossless). Use it as a context manager or
    call `close()`: the file is only complete (and playable) once closed.
    """

    def __init__(self, path: str | Path, fps: float, crf: int = 20, preset: str = "veryfast"):
        import av  # PyAV comes with aiortc

        if not fps or fps <= 0:
            raise ValueError(f"fps must be > 0, got {fps}")
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._av = av
        self._container = av.open(str(self.path), "w", format="mp4", options={"movflags": "+faststart"})
        rate = Fraction(fps).limit_denominator(1001)
        self._time_base = 1 / rate
        self._stream = self._container.add_stream("libx264", rate=rate)
        self._stream.pix_fmt = "yuv420p"
        # The same frames must give the same file (fes-synth is deterministic by seed). They did not in a process that
        # had run MediaPipe and numba (x264's float-based macroblock-tree and adaptive quantisation differed from run
        # to run; found by tests/test_synth_generator.py): one thread, no mbtree, no AQ, and BGR -> I420 by OpenCV.
        self._stream.options = {"crf": str(crf), "preset": preset, "threads": "1", "x264-params": "mbtree=0:aq-mode=0"}
        self._size: tuple[int, int] | None = None
        self.frames = 0
        self._stamps: bool | None = None  # frames written at their own timestamps (pts_s), or at n / fps
        self._origin, self._tick = 0, -1  # with timestamps: the first frame's, in ticks; the last frame's tick

    def write(self, image: np.ndarray, pts_s: float | None = None) -> None:
        """One (H, W, 3) uint8 BGR frame, at `pts_s` seconds (the first frame's is the file's 0; a recording from a
        camera whose frames do not come at its rate) or, without it, at n / fps. One or the other for a whole file."""
        image = np.asarray(image)
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"expected an (H, W, 3) uint8 BGR frame, got {image.dtype} {image.shape}")
        h, w = image.shape[0] // 2 * 2, image.shape[1] // 2 * 2
        if self._size is None:
            if h < 2 or w < 2:
                raise ValueError(f"frame of {image.shape[1]}x{image.shape[0]} is too small for H.264")
            self._size = (w, h)
            self._stream.width, self._stream.height = w, h
            self._stamps = pts_s is not None
            if self._stamps:
                self._time_base = Fraction(1, TICKS)
                self._stream.codec_context.time_base = self._time_base
                self._origin = round(pts_s * TICKS)
        elif self._size != (w, h):
            raise ValueError(f"frame size {w}x{h} differs from the first frame's {self._size[0]}x{self._size[1]}")
        if (pts_s is not None) != self._stamps:
            raise ValueError("give every frame of a file its pts_s, or none")
        yuv = cv2.cvtColor(np.ascontiguousarray(image[:h, :w]), cv2.COLOR_BGR2YUV_I420)
        frame = self._av.VideoFrame.from_ndarray(yuv, format="yuv420p")
        if self._stamps:  # at its own time (ticks always increase: a repeated stamp goes one tick later)
            self._tick = frame.pts = max(self._tick + 1, round(pts_s * TICKS) - self._origin)
        else:
            frame.pts = self.frames  # frame n at n / fps
        frame.time_base = self._time_base
        self._container.mux(self._stream.encode(frame))
        self.frames += 1

    def close(self) -> None:
        if self._container is None:
            return
        try:
            if self._size is not None:
                self._container.mux(self._stream.encode(None))  # flush the encoder's delayed frames
        finally:
            self._container.close()
            self._container = None

    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
