"""The causal spotter: frames in, updates out, for live streams and (through `spot_video`) whole videos alike.

GIM runs frame by frame. Frame t's 17-frame flow window needs frames t-8 .. t+8, so I(t) is known 8 frames after
t arrives (earlier at the end of a face track, where the window is zero-padded like `stream.features.flow_windows`
pads a video's ends). The curve drives a small state machine per stream:

  idle --I > low--> open --(I >= onset_threshold, once)--> OnsetUpdate
  open --I <= low--> closing: wait for the outer margin (0.2 x length) -> proposals on that piece of the curve
  closing --I > low--> open again (the piece grows); face lost / new face / gap / flush / too long -> proposals now

`low` is the lowest proposal threshold (0.2), so the pieces contain every run the reference's multi-threshold
grouping would find, with its margins. A piece with no surviving proposal cancels its OnsetUpdate.

FEDN runs window by window (W frames, every `fedn_stride`) on geometry minus the person's neutral baseline; its
intervals are NMS'd across windows. A GIM proposal waits until FEDN has covered it (+ `fedn_wait` frames), takes
the emotion of the best-overlapping FEDN interval, and is emitted; FEDN intervals that no GIM proposal claims
become proposals of their own (source "fedn") when confident enough. Where FEDN's proposals are the events (GIM's
switched off by calibration, the bundled engines), FEDN announces the onsets too (`SpotterConfig.onsets`).
`fedn_fn=None` is GIM only. Before a FEDN interval goes out, the blendshapes over it get the last word: a macro
happiness or surprise grows to the span its action units move in (`_grow`, waiting for them to come down), a plain
smile or surprise pattern (models.emotion) sets the emotion when the engine's label map is known (`emotions`), a
macro happiness or surprise whose action units never leave the person's neutral, or a happiness with no smile, is
dropped (`models.emotion.supported`), so is any other emotion's event over which the eyes close and the mouth
does not smile (a blink: `models.emotion.eyes_close`), so is a happiness said while the jaw moves like speech whose
mouth never reads as a smile outright (`speech_smile`: lips spread by speech), so is one lying mostly in a face's
first half second that they cannot confirm (`warmup_confirm`: the baseline is not yet a neutral face), and, when
switched on, so is an event that is speech with no such pattern (models.talking) (`_evidence`). An event keeps off
the frames of those of its emotion already sent out (`no_overlap`), and one that starts where such an event ended,
with no rest of the face in between, is that expression still going and is not sent again (`rest_seconds`).

Each intensity also carries the frame's expression level (`models.emotion.expression_level` of the deltas FEDN
sees, a 3-frame mean), and each event its top (`peak_level`): the intensity that reads real faces.

Memory is bounded: rings of flow (17 + batch), curve (one longest piece + margins), FEDN input (W frames), recent
blendshapes and levels (the longest expression + W) and a few recent intervals. Everything is numpy around the two
callables, so the engine, an eager model or a test double can be plugged in.

The model work is explicit: `steps(...)` is `push(...)` as a generator that yields each model call it needs,
`("gim", windows)` or `("fedn", x)`, and takes the result back through `send()`. `push` drives it with the
spotter's own callables; the detector drives many streams' generators at once and answers each round's requests
with one batched call per model (`stream.batching`). Either way the same code runs, so offline and live agree.
"""
from __future__ import annotations

import dataclasses
import math
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any, Callable, Generator

import numpy as np

from fes_live.models.baseline import BaselineConfig, NeutralBaseline
from fes_live.models.emotion import (READ_WELL, SMILE, EmotionEvidenceConfig, apex_index, au_strength,
                                     evidence_emotion, expression_level, eyes_close, shows_smile, smooth3, supported)
from fes_live.models.frame_rate import RateMeter, Resampler, resampling_ratio
from fes_live.models.proposals import (FEDNDecodeConfig, GIMProposalConfig, fedn_proposals, gim_proposals, iou_1d,
                              nms_1d)
from fes_live.models.spotting import (MACRO, MICRO, CancelUpdate, ExpressionUpdate, IntensityUpdate, OnsetUpdate,
                                      Proposal, Update)
from fes_live.models.talking import TalkingConfig, is_talking, moves_like_speech

GimFn = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]  # (B,17,R,2) -> (intensity (B,), apex_probs (B,2))
FednFn = Callable[[np.ndarray], Any]                             # (1,W,F) -> (cls_logits (1,N,C), intervals (1,N,2), ..)
Request = tuple[str, np.ndarray]                                 # ("gim", (B,17,R,2)) or ("fedn", (1,W,F))
Steps = Generator[Request, Any, list[Update]]                    # yields model requests, returns the updates


@dataclass(frozen=True)
class SpotterConfig:
    fps: float = 30.0                 # the stream's frame rate: durations in seconds become frames with it
    gim_radius: int = 8               # GIM window = frames t-8 .. t+8 (17)
    n_rois: int = 12                  # ROIs per frame in roi_flow
    gim_batch: int = 1                # run GIM when this many frames are ready (1 = lowest latency)
    onset_threshold: float = 0.5      # OnsetUpdate when I(t) reaches this within an open piece (GIM onsets)
    onsets: str = "auto"              # which model announces onsets: "gim" (its curve reaches onset_threshold),
                                      # "fedn" (a window holds the start of an interval that scores
                                      # fedn_only_threshold) or "auto": the one whose proposals become events
                                      # (FEDN when calibration switched GIM's proposals off)
    onset_stride: int = 8             # with FEDN announcing: also a window every this many frames between the
                                      # fedn_stride ones, which only announces (events still come from the
                                      # fedn_stride grid); 0: none
    max_segment_seconds: float = 10.0  # a piece longer than this is processed at once (reference macro max 8 s)
    proposals: GIMProposalConfig = field(default_factory=GIMProposalConfig)
    geometry_dim: int = 1008          # FEDN input width (stream.features.GEOMETRY_DIM)
    fedn_window: int = 128            # = FEDNConfig.window of the model behind fedn_fn
    fedn_stride: int = 16             # frames between FEDN windows (0.53 s at 30 fps)
    fedn_min_face: float = 0.5        # skip a FEDN window with fewer face frames than this fraction
    fedn_edge: int = 4                # drop intervals within this many frames of a window's inner edges:
                                      # they are cut off there, and the neighbouring window sees them whole
    fedn_wait: int = 4                # a GIM proposal waits until FEDN has covered its offset + this many frames
                                      # (= fedn_edge: the first window that can see the interval whole)
    fedn_settle: int = 4              # a FEDN interval is final once FEDN has covered its offset + this many
                                      # frames; later windows cannot re-find it (it suppresses them). Waiting for
                                      # every window that contains it would cost up to W frames (4 s) of latency
    fedn_max_lag: int = 24            # a window adds no interval that ended more than this many frames before the
                                      # window's end (stride + settle is the most the first window that sees an
                                      # interval whole can be late). FEDN finds some only once its windows no longer
                                      # hold an earlier expression, up to 3 s late: on the real dev folds those were
                                      # duplicates and false alarms, and they are what broke the 1 s latency goal.
                                      # They still suppress their re-finding and lend GIM proposals their emotion.
                                      # 0: no limit
    fedn_long: bool = True            # chain an expression longer than a window (no window sees it whole): an
                                      # interval running to its window's end, continued by the next windows,
                                      # ends in the first one whose interval ends before the window's last 2 edges
    edge_confirm: bool = True         # an interval ending within 2 edges of its window's end while the face is
                                      # still half as far from neutral as at its top waits for the next window: one
                                      # there that holds the same expression further (FEDN placed the end a few
                                      # frames early) takes its place; else it settles as usual
    fedn_decode: FEDNDecodeConfig = field(default_factory=FEDNDecodeConfig)
    match_iou: float = 0.3            # GIM proposal takes the emotion of a FEDN interval overlapping this much
    repeat_cover: float = 0.5         # a FEDN interval is the expression already reported (no second event, no
                                      # onset) when an emitted event of its emotion covers this share of the
                                      # shorter of the two, or their IoU is match_iou: later windows re-find a
                                      # reported expression with other boundaries (docs/real_dev.md, "One event per
                                      # expression"). 0: IoU alone (before session 31)
    no_overlap: bool = True           # an event keeps off the frames of the events of its emotion already sent out:
                                      # it starts after the end of one it overlaps, ends before the start of one it
                                      # runs into (a later window saw the expression end and start again; less than
                                      # repeat_cover of it is theirs, or it would be that expression). Its kind
                                      # stays: it is the rest of an expression of that length
    rest_seconds: float = 0.2         # an event starting where an emitted one of its emotion ended, and no longer
                                      # than it, is that expression still going, and is not sent, unless between
                                      # their tops the face rested (its emotion's action units under half the lower
                                      # top) this long: FEDN splits a smile where a blink or a MediaPipe dropout
                                      # takes it down for a few frames (docs/real_dev.md, "An expression split at a
                                      # dip"). A longer one is another expression (a smile, then a laugh). 0: off
    fedn_only_threshold: float = 0.6  # a FEDN interval no GIM proposal claims becomes one above this score
    baseline: BaselineConfig = field(default_factory=BaselineConfig)
    emotions: tuple[str, ...] = ()    # the engine's emotion label map (the index of Proposal.emotion); with it,
                                      # a clear blendshape pattern (models.emotion) overrides the model's emotion
    emotion_evidence: EmotionEvidenceConfig = field(default_factory=EmotionEvidenceConfig)
    grow_below: float = 0.2           # a macro happiness or surprise FEDN interval grows to where its emotion's
                                      # action units (models.emotion.au_strength) fall under this share of their peak
                                      # in it (and under emotion_evidence.min_rise), at most grow_seconds beyond
                                      # either end: FEDN's boundaries fall inside the movement's (docs/real_dev.md,
                                      # "Boundaries from the action units"). The event waits for them to fall. 0: off
    grow_seconds: float = 0.5
    chain_hold: float = 0.7           # FEDN ending an expression longer than a window (a chain) does not end it while
                                      # it still shows plainly on every frame of the window's last 2 edges: their
                                      # blendshapes name its emotion (happiness, surprise: evidence_emotion) and its
                                      # action units stay at this share of their top in it. A window can end a held
                                      # smile early, and it came out in pieces, or part of it not at all (FGNet's
                                      # talking face). 0.5 (then without the evidence) held fading ones too: the
                                      # lab folds' final p99 0.92 -> 1.26 s (docs/real_dev.md, "A held smile a
                                      # window ends early"). 0: off
    au_onset: float = 0.0             # with FEDN announcing onsets: also announce one as soon as a happiness's or
                                      # surprise's action units (models.emotion.au_strength) rise this far above the
                                      # person's neutral, as `supported` would accept them, for au_onset_frames
                                      # frames: a window must hold most of an expression before FEDN scores it, so
                                      # its own onsets come late on slowly building ones. 0: off
    au_onset_frames: int = 3
    apex_from: str = "blendshapes"    # a FEDN interval's apex: "blendshapes" (where its emotion's action units
                                      # deviate most from the neutral baseline, models.emotion.apex_index) or "gim"
                                      # (the top of GIM's curve over it: on real faces the curve saturates, and its
                                      # apex was 0.6 s from the labelled peak on average; docs/real_dev.md)
    warmup_confirm: bool = True       # while a face's neutral baseline is still being learnt (its first
                                      # baseline.warmup_frames), its deviations are from the frames so far, not from
                                      # a neutral face: an event most of whose frames fall then is reported only where
                                      # the blendshapes can confirm it (a happiness, asked for its smile; a macro
                                      # surprise, for its action units), not a micro surprise or an emotion MediaPipe
                                      # does not read
    talking: TalkingConfig = field(default_factory=TalkingConfig)  # drop events that are speech (models.talking;
                                                                    # off by default)
    speech_smile: float = 1.0         # a happiness said while the jaw moves like speech (models.talking's cycle
                                      # rate, over this many seconds before it and its own frames; whether or not
                                      # `talking` is on) must read as a smile outright (emotion_evidence.smile_raw):
                                      # speech spreads the lips, which MediaPipe reads as mouthSmile 0.3-0.45, and
                                      # the dev clips' smiles said while talking read 0.5-0.9. 0: off
    model_fps: float = 0.0            # the frame rate the models were trained at (the engine's). A stream more
                                      # than 5 % faster or slower (25, 60, 200, 12 fps) is resampled to it
                                      # (models.frame_rate: faster frames averaged, slower ones interpolated, flow
                                      # shared out by time), so that every window spans the time it was trained
                                      # on; 0: every frame as it comes
    follow_rate: float = 0.1          # frames pushed with their timestamps (pts_s) are spotted at the rate those
                                      # show (models.frame_rate.RateMeter: the median interval over 3 s) once it is
                                      # this far off the rate the stream is spotted at: a webcam that says 30 fps
                                      # and gives 15 in the dark, a phone video whose rate changes, a camera whose
                                      # stream says the wrong rate (`set_stream_fps`). 0: off

    def __post_init__(self) -> None:
        if self.onsets not in ("auto", "gim", "fedn"):
            raise ValueError(f"onsets must be 'auto', 'gim' or 'fedn', got {self.onsets!r}")
        if self.onset_stride < 0:
            raise ValueError(f"onset_stride must be >= 0 (0: none), got {self.onset_stride}")
        if not 0.0 <= self.repeat_cover <= 1.0:
            raise ValueError(f"repeat_cover must be in [0, 1] (0: IoU alone), got {self.repeat_cover}")
        if not 0.0 <= self.chain_hold <= 1.0:
            raise ValueError(f"chain_hold must be in [0, 1] (0: off), got {self.chain_hold}")
        if not 0.0 <= self.grow_below < 1.0 or self.grow_seconds < 0:
            raise ValueError(f"grow_below must be in [0, 1) (0: off) and grow_seconds >= 0, got {self.grow_below} and "
                             f"{self.grow_seconds}")
        if self.rest_seconds < 0 or self.speech_smile < 0:
            raise ValueError(f"rest_seconds and speech_smile must be >= 0 (0: off), got {self.rest_seconds} and "
                             f"{self.speech_smile}")
        if self.au_onset < 0 or self.au_onset_frames < 1:
            raise ValueError(f"au_onset must be >= 0 (0: off) and au_onset_frames >= 1, got {self.au_onset} and "
                             f"{self.au_onset_frames}")
        if not 0.0 <= self.follow_rate < 1.0:
            raise ValueError(f"follow_rate must be in [0, 1) (0: off), got {self.follow_rate}")
        if self.apex_from not in ("blendshapes", "gim"):
            raise ValueError(f"apex_from must be 'blendshapes' or 'gim', got {self.apex_from!r}")


def gim_proposes(cfg: SpotterConfig) -> bool:
    """Whether GIM's proposals can become events: a GIM score is at most 1 + apex_weight (inner - outer <= 1,
    A <= 1), so thresholds above that mean calibration switched them off."""
    return min(cfg.proposals.score_threshold) <= 1.0 + cfg.proposals.apex_weight


def fedn_announces(cfg: SpotterConfig, has_fedn: bool) -> bool:
    """Whether FEDN, not GIM's curve, announces onsets (`SpotterConfig.onsets`). On real faces GIM's curve
    (synthetic flow) sits near 1 from a track's first frames, so its onsets say "a face appeared", not "an
    expression started" (docs/events.md): by default the model that decides announces."""
    return has_fedn and (cfg.onsets == "fedn" or cfg.onsets == "auto" and not gim_proposes(cfg))


@dataclass
class _Pending:
    """GIM proposals of one finished curve piece, waiting for FEDN's emotion."""
    start: int
    end: int
    track: int
    proposals: list[Proposal]


class OnlineSpotter:
    def __init__(self, gim_fn: GimFn, fedn_fn: FednFn | None = None, cfg: SpotterConfig = SpotterConfig()):
        self._fps0 = cfg.fps
        self._ratio0 = resampling_ratio(cfg.fps, cfg.model_fps)  # stream frames a model frame
        if self._ratio0 != 1.0:  # everything below runs at the models' rate; updates are mapped back (_to_stream)
            fps = cfg.model_fps
            cfg = dataclasses.replace(cfg, fps=fps, baseline=dataclasses.replace(cfg.baseline, fps=fps))
        self.gim_fn, self.fedn_fn, self.cfg = gim_fn, fedn_fn, cfg
        self.low = min(cfg.proposals.thresholds)
        # without GIM's proposals FEDN intervals need not wait for GIM pieces that could claim them
        self.gim_proposes = gim_proposes(cfg)
        self.fedn_onsets = fedn_announces(cfg, fedn_fn is not None)
        self.max_segment = max(1, int(round(cfg.max_segment_seconds * cfg.fps)))
        self._next_track = 0
        self.reset()

    def reset(self) -> None:
        """Start a new stream (flush() does this at its end), at the configured rate."""
        cfg = self.cfg
        self.stream_fps, self.ratio = self._fps0, self._ratio0
        self.resampler = Resampler(self.ratio) if self.ratio != 1.0 else None
        self.meter = RateMeter()                 # the rate the frames' timestamps show (`follow_rate`)
        self._stream_last: int | None = None     # last stream frame index pushed
        self._last: int | None = None            # last (model) frame index pushed
        # GIM input: flow of the current face track
        self._track_start: int | None = None     # first frame of the current face track (None: no face)
        self._track_starts: deque[int] = deque(maxlen=16)  # and of the last ones (`warmup_confirm`)
        self._flow: deque[np.ndarray] = deque()  # at most 2 * radius + gim_batch frames (trimmed in _run_gim)
        self._flow_first = 0                     # frame index of self._flow[0]
        self._next_gim = 0                       # next frame whose intensity is due
        # the intensity curve and its state machine
        history = int(1.5 * self.max_segment) + 4 * cfg.gim_radius + 8
        self._curve: deque[tuple[int, float, float, float]] = deque(maxlen=history)  # frame, I, A_macro, A_micro
        self._state = "idle"
        self._seg_start = self._seg_end = self._wait_until = 0
        self._track_id = -1                      # id of the piece's OnsetUpdate, -1 while not announced
        # FEDN
        self.baseline = NeutralBaseline(cfg.baseline)
        self._fedn_x: deque[np.ndarray] = deque(maxlen=cfg.fedn_window)
        self._fedn_face: deque[bool] = deque(maxlen=cfg.fedn_window)
        self._fedn_origin = 0                    # frame index where the current run of FEDN windows started
        self._fedn_done = -1                     # last frame covered by a FEDN window
        self._fedn_end_open = False              # that window's end was taken for an inner edge (not a tail)
        self._pool: list[Proposal] = []          # FEDN intervals still open to later windows
        self._unsure: list[Proposal] = []        # those of the last window ending near its end (edge_confirm)
        self._resolved: deque[Proposal] = deque(maxlen=64)   # settled FEDN intervals
        self._emitted: deque[Proposal] = deque(maxlen=64)    # recent proposals sent out
        self._adopted: deque[int] = deque(maxlen=64)          # onset tracks a FEDN interval finalised
        self._pending: list[_Pending] = []
        self._long: Proposal | None = None       # an expression running past the windows' ends (fedn_long)
        self._long_views: list[Proposal] = []    # each window's best interval of it
        self._long_rest = False                  # it is the rest of one cut at max_segment_seconds
        self._long_ended: Proposal | None = None  # what the chain reported as ended in the last window
        self._long_held = False                  # the last window kept it going by its action units (`chain_hold`)
        self._for_chain: list[Proposal] = []      # intervals of it that wait for its piece (`_wait_for_chain`)
        self._cuts: deque[int] = deque(maxlen=16)  # last frames of the pieces cut there (`_grow` keeps to them)
        self._announced: list[list[int]] = []    # FEDN onsets not yet final: [track, onset, last offset seen,
                                                  # emotion]
        self._au_open: dict[int, list[int]] = {}  # emotion -> its action-unit onset in _announced while they are up
        # (frame, raw blendshapes, deltas from the baseline) of recent face frames: emotion evidence, talking
        self._k = cfg.baseline.blendshape_dim
        self._shapes: deque[tuple[int, np.ndarray, np.ndarray]] = deque(maxlen=self.max_segment + cfg.fedn_window)
        # (frame, expression level) of the same frames: each frame's `expression_level`, averaged with the two before
        # it in its face track (MediaPipe's frame-to-frame jitter); `_level_run` holds the track's last three
        self._levels: deque[tuple[int, float]] = deque(maxlen=self.max_segment + cfg.fedn_window)
        self._level_run: deque[float] = deque(maxlen=3)

    # ------------------------------------------------------------------------------------------------ input

    def push(self, frame_index: int, face_present: bool, geometry: np.ndarray, roi_flow: np.ndarray,
             new_face: bool = False, pts_s: float | None = None) -> list[Update]:
        """Feed one frame (stream.features.FrameFeatures fields); returns the updates it made known. `new_face`:
        the face is not the previous frame's (a shot cut, another person): its track and baseline start here.
        `pts_s`, its timestamp, lets the spotter follow the rate the frames come at (`follow_rate`)."""
        return self.run(self.steps(frame_index, face_present, geometry, roi_flow, new_face, pts_s))

    def run(self, steps: Steps) -> list[Update]:
        """Drive a `steps()` / `flush_steps()` generator to its end with this spotter's own model callables."""
        try:
            request = next(steps)
            while True:
                kind, x = request
                request = steps.send(self.gim_fn(x) if kind == "gim" else self.fedn_fn(x))
        except StopIteration as done:
            return done.value

    def steps(self, frame_index: int, face_present: bool, geometry: np.ndarray, roi_flow: np.ndarray,
              new_face: bool = False, pts_s: float | None = None) -> Steps:
        """`push` as a generator of model requests (see the module docstring)."""
        cfg = self.cfg
        t = int(frame_index)
        if self._stream_last is not None and t <= self._stream_last:
            raise ValueError(f"frame indices must increase: got {t} after {self._stream_last}")
        geometry = np.asarray(geometry, dtype=np.float32).reshape(-1)
        roi_flow = np.asarray(roi_flow, dtype=np.float32)
        if geometry.shape != (cfg.geometry_dim,) or roi_flow.shape != (cfg.n_rois, 2):
            raise ValueError(f"frame {t}: expected geometry ({cfg.geometry_dim},) and roi_flow ({cfg.n_rois}, 2), "
                             f"got {geometry.shape} and {roi_flow.shape}")
        if not (np.isfinite(geometry).all() and np.isfinite(roi_flow).all()):
            raise ValueError(f"frame {t}: geometry or roi_flow holds NaN/inf")  # would poison the baseline
        if pts_s is not None and cfg.follow_rate > 0:
            self._follow_rate(t, float(pts_s))
        self._stream_last = t
        face_present = bool(face_present)
        new_face = bool(new_face) and face_present
        if not self.resampler:
            return (yield from self._model_steps(t, face_present, geometry, roi_flow, new_face))
        return (yield from self._resampled(self.resampler.push(t, face_present, geometry, roi_flow, new_face)))

    def _resampled(self, frames: list[tuple]) -> Steps:
        """Model frames of the resampler through the models; their updates in stream frames, one intensity value a
        stream frame."""
        out: list[Update] = []
        for j, face_present, geometry, roi_flow, new_face in frames:
            out += yield from self._model_steps(j, face_present, geometry, roi_flow, new_face)
        return self._map(out)

    def _map(self, updates: list[Update], rs: Resampler | None = None) -> list[Update]:
        """Model-rate updates in stream frames (`_to_stream`, by `rs`, default the stream's resampler); a slower
        stream keeps one intensity a stream frame."""
        rs = rs or self.resampler
        keep = rs.last_of_its_stream_frame
        return [self._to_stream(x, rs) for x in updates if not isinstance(x, IntensityUpdate) or keep(x.frame_index)]

    def _to_stream(self, u: Update, rs: Resampler) -> Update:
        """A model-rate update in stream frames: an event from the first stream frame its onset's model frame reaches
        to the last its offset's reaches (models.frame_rate)."""
        if isinstance(u, ExpressionUpdate):
            p = u.proposal
            onset, offset = rs.first_stream_frame(p.onset), rs.last_stream_frame(p.offset)
            if self.cfg.no_overlap:  # model frames of two events may reach one stream frame: it goes to the first
                same = [e for e in self._emitted if e is not p and e.emotion == p.emotion]
                if onset < offset and any(e.offset < p.onset and rs.last_stream_frame(e.offset) >= onset
                                          for e in same):
                    onset += 1
                if onset < offset and any(e.onset > p.offset and rs.first_stream_frame(e.onset) <= offset
                                          for e in same):
                    offset -= 1
            apex = min(max(rs.middle_stream_frame(p.apex), onset), offset)
            return dataclasses.replace(u, proposal=dataclasses.replace(p, onset=onset, apex=apex, offset=offset))
        return dataclasses.replace(u, frame_index=rs.first_stream_frame(u.frame_index))

    def _model_steps(self, t: int, face_present: bool, geometry: np.ndarray, roi_flow: np.ndarray,
                     new_face: bool = False) -> Steps:
        """One frame at the models' rate."""
        cfg = self.cfg
        out: list[Update] = []
        gap = self._last is not None and t != self._last + 1
        if self._track_start is not None and (gap or not face_present or new_face):
            out += yield from self._end_track()
        if gap:  # dropped frames or a reconnect: windows must not span it (the person's baseline stays)
            out += yield from self._fedn_tail()
            self._fedn_x.clear()
            self._long = self._long_ended = None
            self._long_held, self._for_chain = False, []
            self._fedn_face.clear()
        if not self._fedn_x:
            self._fedn_origin = t
        self._last = t

        # GIM
        if face_present:
            if self._track_start is None:
                self._track_start = self._next_gim = self._flow_first = t
                self._track_starts.append(t)
                self._flow.clear()
                self._level_run.clear()
            self._flow.append(roi_flow)  # _run_gim trims it to the frames future windows need
            ready = t - cfg.gim_radius - self._next_gim + 1
            if ready >= cfg.gim_batch:
                out += yield from self._run_gim(t - cfg.gim_radius)
        else:
            out += self._curve_point(t, 0.0, (0.0, 0.0))

        # FEDN
        delta = self.baseline.update(geometry, face_present, new_face)
        self._fedn_x.append(delta)
        if not face_present or new_face:  # a rise of the face that went is not this face's
            self._au_open.clear()
        if face_present:
            self._shapes.append((t, geometry[:self._k], delta[:self._k]))
            self._level_run.append(float(expression_level(delta[:self._k])[0]))
            self._levels.append((t, sum(self._level_run) / len(self._level_run)))
            if self.fedn_onsets and cfg.au_onset > 0:
                out += self._au_announce(t)
        self._fedn_face.append(face_present)
        # The window grid is on frame numbers, not on the run's first frame: a detector that takes over a stream
        # mid-way (a restart, a reconnect) looks at the same windows as one that saw the stream from frame 0.
        n = t - self._fedn_origin + 1
        if self.fedn_fn is not None and n >= cfg.fedn_window and (t + 1 - cfg.fedn_window) % cfg.fedn_stride == 0:
            out += yield from self._run_fedn(t - cfg.fedn_window + 1, cfg.fedn_window, tail=False)
        elif self.fedn_fn is not None and n < cfg.fedn_window and (t + 1) % cfg.fedn_stride == 0:
            # a stream's first W frames: zero-padded windows every stride (as training pads a video's last
            # window), so an expression in its first seconds is not held back until W frames have arrived
            out += yield from self._run_fedn(self._fedn_origin, n, tail=False)
        elif self.fedn_onsets and cfg.onset_stride > 0 and (t + 1) % cfg.onset_stride == 0:
            out += yield from self._announce_window(t, min(n, cfg.fedn_window))
        elif self.fedn_fn is None:
            self._fedn_done = t
        out += self._settle()
        return out

    def push_features(self, features: Any) -> list[Update]:
        """`push` for a `stream.features.FrameFeatures` (or anything with those fields; `new_face` optional)."""
        return self.push(features.frame_index, features.face_present, features.geometry, features.roi_flow,
                         getattr(features, "new_face", False), getattr(features, "pts_s", None))

    def _follow_rate(self, t: int, pts_s: float) -> None:
        """Frame t and those after it at the rate the timestamps show, once it is `follow_rate` off the stream's."""
        self.meter.add(t, pts_s)
        measured = self.meter.fps()
        if measured is not None and abs(measured / self.stream_fps - 1.0) > self.cfg.follow_rate:
            self.set_stream_fps(measured)
            self.meter.clear()  # the new rate is judged on frames that come after it

    def set_stream_fps(self, fps: float) -> None:
        """The stream's frames come at `fps` from the next one on (a camera that slowed down in the dark, a source
        that announced a rate its frames do not come at): they are resampled from there, model time running on,
        until the stream's end (`reset` goes back to the configured rate)."""
        if not (math.isfinite(fps) and fps > 0):
            raise ValueError(f"frame rate must be > 0, got {fps}")
        ratio = resampling_ratio(fps, self.cfg.model_fps)
        self.stream_fps = float(fps)
        if ratio == self.ratio:
            return
        self.ratio = ratio
        if self.resampler is None:  # until now stream frames were model frames: they map back one to one
            self.resampler = Resampler(1.0)
        self.resampler.retime(ratio, 0 if self._stream_last is None else self._stream_last + 1)

    def carry_state(self) -> dict:
        """What a restarted detector needs to continue this stream the same way (JSON-able, small): the person's
        neutral baseline, the next onset track id and the last frame pushed."""
        return {"baseline": self.baseline.state(), "next_track": self._next_track, "last_frame": self._stream_last}

    def resume(self, state: dict, baseline: bool = True) -> None:
        """Continue from `carry_state()`: track ids go on after its own; with `baseline`, its neutral face too."""
        self._next_track = max(self._next_track, int(state.get("next_track", 0)))
        if baseline and state.get("baseline") is not None:
            self.baseline = NeutralBaseline.from_state(state["baseline"], self.cfg.baseline)

    def flush(self) -> list[Update]:
        """End of stream: compute what is still pending, close every open piece, emit the rest; then reset."""
        return self.run(self.flush_steps())

    def flush_steps(self) -> Steps:
        """`flush` as a generator of model requests."""
        out: list[Update] = []
        if self.resampler:
            out += yield from self._resampled(self.resampler.flush())
        model: list[Update] = []
        if self._track_start is not None:
            model += yield from self._end_track()
        model += yield from self._fedn_tail()
        model += self._settle(final=True)
        resampler = self.resampler
        self.reset()
        return out + (self._map(model, resampler) if resampler else model)

    # ------------------------------------------------------------------------------------------------ GIM

    def _run_gim(self, last: int) -> Steps:
        """Intensity of frames self._next_gim .. last (inclusive) of the current track."""
        cfg = self.cfg
        r = cfg.gim_radius
        frames = list(range(self._next_gim, last + 1))
        if not frames:
            return []
        flow = np.stack(self._flow)                              # frames self._flow_first ..
        first, end = self._flow_first, self._flow_first + len(flow)  # end exclusive
        windows = np.zeros((len(frames), 2 * r + 1, cfg.n_rois, 2), dtype=np.float32)
        for b, c in enumerate(frames):
            lo, hi = max(c - r, first), min(c + r + 1, end)
            windows[b, lo - (c - r):hi - (c - r)] = flow[lo - first:hi - first]
        intensity, apex = yield "gim", windows
        intensity = np.asarray(intensity, dtype=np.float64).reshape(-1)
        apex = np.asarray(apex, dtype=np.float64)
        if intensity.shape != (len(frames),) or apex.shape != (len(frames), 2):
            raise ValueError(f"gim_fn returned intensity {intensity.shape} and apex_probs {apex.shape} for "
                             f"{len(frames)} windows; expected ({len(frames)},) and ({len(frames)}, 2)")
        self._next_gim = last + 1
        # drop flow no future window needs (frames before next_gim - r); the deque's maxlen bounds it anyway
        while self._flow and self._flow_first < self._next_gim - r:
            self._flow.popleft()
            self._flow_first += 1
        out: list[Update] = []
        for b, c in enumerate(frames):
            out += self._curve_point(c, float(intensity[b]), (float(apex[b, 0]), float(apex[b, 1])))
        return out

    def _end_track(self) -> Steps:
        """Face lost or frame gap: finish the track's pending frames (zero-padded windows) and its open piece."""
        out = (yield from self._run_gim(self._last)) if self._last is not None else []
        if self._state != "idle":
            end = self._seg_end if self._state == "closing" else self._curve[-1][0]
            out += self._finish_piece(end)
        self._track_start = None
        self._flow.clear()
        return out

    def _level_at(self, frame: int) -> float:
        """The expression level of `frame`, 0 when it had no face (a recent frame: searched from the newest)."""
        for t, value in reversed(self._levels):
            if t <= frame:
                return value if t == frame else 0.0
        return 0.0

    def _curve_point(self, frame: int, value: float, apex: tuple[float, float]) -> list[Update]:
        """Append I(frame) to the curve and step the piece state machine."""
        self._curve.append((frame, value, apex[0], apex[1]))
        out: list[Update] = [IntensityUpdate(frame, value, apex, self._level_at(frame))]
        if value > self.low:
            if self._state == "idle":
                self._state, self._seg_start, self._track_id = "open", frame, -1
            self._state = "open"
            if self._track_id < 0 and value >= self.cfg.onset_threshold and not self.fedn_onsets:
                self._track_id = self._next_track
                self._next_track += 1
                out.append(OnsetUpdate(self._seg_start, value, self._track_id))
            if frame - self._seg_start + 1 >= self.max_segment:
                out += self._finish_piece(frame)
        elif self._state == "open":
            self._seg_end = frame - 1
            n = self._seg_end - self._seg_start + 1
            self._wait_until = self._seg_end + max(1, int(round(self.cfg.proposals.outer_ratio * n)))
            self._state = "closing"
        if self._state == "closing" and frame >= self._wait_until:
            out += self._finish_piece(self._seg_end)
        return out

    def _finish_piece(self, end: int) -> list[Update]:
        """Proposals on the curve piece [seg_start, end] plus its outer margins; queue them for FEDN's emotion."""
        cfg = self.cfg
        n = end - self._seg_start + 1
        m = max(1, int(round(cfg.proposals.outer_ratio * n)))
        rows = [row for row in self._curve if self._seg_start - m <= row[0] <= end + m]
        # the left margin stops at a frame gap (a reconnect); the piece and its right margin never span one
        first = next(i for i, row in enumerate(rows) if row[0] == self._seg_start)
        while first > 0 and rows[first - 1][0] == rows[first][0] - 1:
            first -= 1
        curve = np.array(rows[first:], dtype=np.float64).reshape(-1, 4)
        props = gim_proposals(curve[:, 1], curve[:, 2:4], cfg.fps, cfg.proposals, first_frame=int(curve[0, 0]))
        self._pending.append(_Pending(self._seg_start, end, self._track_id, props))
        self._state, self._track_id = "idle", -1
        return []

    # ------------------------------------------------------------------------------------------------ FEDN

    def _run_fedn(self, start: int, valid: int, tail: bool) -> Steps:
        """Run FEDN on the last `valid` frames of the ring, starting at frame `start` (zero-padded to W).

        `tail` marks the last window of a run (end of stream, reconnect): its end edge is a real end.
        """
        cfg = self.cfg
        self._fedn_done = start + valid - 1
        self._fedn_end_open = not tail
        dets = yield from self._window(start, valid)
        if dets is None:
            return []
        lo = start + cfg.fedn_edge if start > self._fedn_origin else start
        hi = start + valid - 1 - (0 if tail else cfg.fedn_edge)
        settled = self._settled()
        out = self._announce(dets, lo, settled, start + valid - 1) if self.fedn_onsets else []
        long = self._chain(dets, lo, start + valid - 1, tail) if cfg.fedn_long else []
        if long:  # the parts of it that waited for the chain leave the pool to it
            self._pool = [p for p in self._pool if not any(p is u for u in self._for_chain)]
        whole = [d for d in dets if d.onset >= lo and d.offset <= hi]
        self._confirm(dets, lo)
        # across windows: an interval settled earlier suppresses new ones on it; NMS among the open ones
        for d, chained in [(d, False) for d in whole] + [(d, True) for d in long]:
            if len(settled) and iou_1d([(d.onset, d.offset)], settled).max() > cfg.fedn_decode.nms_iou:
                continue
            # too late to be news, unless a chain followed it while it went on (its end can be seen a stride late)
            if not chained and cfg.fedn_max_lag > 0 and self._fedn_done - d.offset > cfg.fedn_max_lag:
                self._resolved.append(d)
            else:
                self._pool.append(d)
                if cfg.edge_confirm and not chained and not tail and d.offset > hi - cfg.fedn_edge \
                        and self._still_up(d):
                    self._unsure.append(d)
        if self._pool:
            iv = np.array([(p.onset, p.offset) for p in self._pool], dtype=np.float64)
            keep = nms_1d(iv, np.array([p.score for p in self._pool]), cfg.fedn_decode.nms_iou)
            self._pool = [self._pool[i] for i in sorted(keep)]
        self._wait_for_chain()
        return out

    def _wait_for_chain(self) -> None:
        """While the chain goes on by its action units alone (`chain_hold`: FEDN ended it early), the intervals of it
        in the pool wait for the chain, which reports the whole; once it has ended or been dropped they settle as
        any other (or have left the pool to its piece). A window that held a held smile's first part whole and ended
        it early had that part reported, and the chain's piece then counted as that expression found again (FGNet's
        talking face: 2529-2642 reported, the smile held on to 2880 unreported)."""
        run = self._long
        if run is None:
            self._for_chain = []
        elif self._long_held:
            self._for_chain += [p for p in self._pool if shares((p.onset, p.offset), (run.onset, run.offset), 0.5)
                                and not any(p is u for u in self._for_chain)]

    def _still_up(self, d: Proposal) -> bool:
        """Whether the face, at the newest frame, is still as far from its neutral as half the top of the expression
        level over `d`: the expression may go on past the end FEDN placed."""
        top = max((value for t, value in self._levels if d.onset <= t <= d.offset), default=0.0)
        return top > 0 and self._levels[-1][0] == self._last and self._levels[-1][1] >= top / 2

    def _confirm(self, dets: list[Proposal], lo: int) -> None:
        """The last window's intervals that ended near its end (`edge_confirm`) against this window's: a confident
        one of the same expression that runs at least an edge further, which this window holds from its start (`lo`)
        or which a chain follows with it, has seen more of the expression: the first leaves the pool to it (whole) or
        to the chain (still going on). The others may now settle."""
        cfg = self.cfg
        sure = [d for d in dets if d.score >= cfg.fedn_only_threshold]
        chain = (self._long.onset, self._long.offset) if self._long is not None else None
        for u in self._unsure:
            followed = chain is not None and shares((u.onset, u.offset), chain, 0.5)
            if any((d.onset >= lo or followed) and d.offset >= u.offset + cfg.fedn_edge
                   and shares((u.onset, u.offset), (d.onset, d.offset), 0.5) for d in sure):
                self._pool = [p for p in self._pool if p is not u]
        self._unsure = []

    def _settled(self) -> np.ndarray:
        """The settled intervals that suppress later windows' intervals on them: those that scored the threshold.
        One under it was never news, and FEDN often scores an expression low in the first window that holds it
        whole and high in the next (real_dev edtalk 147-169: 0.67, then 0.95)."""
        sure = [(p.onset, p.offset) for p in self._resolved if p.score >= self.cfg.fedn_only_threshold]
        return np.array(sure, dtype=np.float64).reshape(-1, 2)

    def _window(self, start: int, valid: int) -> Steps:
        """FEDN's intervals in the last `valid` frames of the ring, starting at frame `start` (zero-padded to W);
        None for a window with too few face frames."""
        cfg = self.cfg
        W = cfg.fedn_window
        x = np.zeros((1, W, cfg.geometry_dim), dtype=np.float32)
        x[0, :valid] = np.stack(list(self._fedn_x)[-valid:])
        face = np.array(list(self._fedn_face)[-valid:], dtype=bool)
        if face.mean() < cfg.fedn_min_face:
            return None
        raw = yield "fedn", x
        cls_logits, intervals = np.asarray(raw[0]), np.asarray(raw[1])
        if cls_logits.ndim != 3 or intervals.shape != (1, cls_logits.shape[1], 2):
            raise ValueError(f"fedn_fn returned cls_logits {cls_logits.shape} and intervals {intervals.shape}; "
                             f"expected (1, N, C) and (1, N, 2)")
        return fedn_proposals(cls_logits[0], intervals[0], start, W, cfg.fps, cfg.fedn_decode, valid_frames=valid)

    def _announce_window(self, end: int, valid: int) -> Steps:
        """A window between the grid's (`onset_stride`) that only announces onsets: sooner news of a start, the
        events unchanged."""
        start = end - valid + 1
        dets = yield from self._window(start, valid)
        if dets is None:
            return []
        lo = start + self.cfg.fedn_edge if start > self._fedn_origin else start
        settled = self._settled()
        return self._announce(dets, lo, settled, end)

    def _announce(self, dets: list[Proposal], lo: int, settled: np.ndarray, end: int) -> list[Update]:
        """FEDN onsets: an interval as confident as a final one whose start this window (ending at `end`) holds,
        whole or still going on at its end, is announced once; later windows' intervals about it
        (`_announcement`) extend it."""
        cfg = self.cfg
        out: list[Update] = []
        for d in sorted(dets, key=lambda d: d.onset):
            if d.score < cfg.fedn_only_threshold or d.onset < lo:
                continue
            if cfg.fedn_max_lag > 0 and end - d.offset > cfg.fedn_max_lag:
                continue  # too late to be news (it will not become an event either)
            if len(settled) and iou_1d([(d.onset, d.offset)], settled).max() > cfg.fedn_decode.nms_iou:
                continue  # an expression already settled
            same = self._announcement(d)
            if same is not None:
                same[2] = max(same[2], d.offset)
                continue
            if self._reported(d):
                continue  # an expression already reported: it would be suppressed as claimed (_settle_fedn)
            self._announced.append([self._next_track, d.onset, d.offset, d.emotion])
            out.append(OnsetUpdate(d.onset, d.score, self._next_track))
            self._next_track += 1
        return out

    def _au_announce(self, t: int) -> list[Update]:
        """Onsets from the action units (`au_onset`): a happiness or surprise announced when its units have been up
        for `au_onset_frames`, from the first frame of their rise; kept open while they stay up, so that FEDN's
        interval about it, found later, takes its track (`_announcement`), or it is cancelled once FEDN has seen
        them down and found nothing (`_expire_onsets`)."""
        cfg = self.cfg
        reach = int(round(cfg.grow_seconds * cfg.fps)) + cfg.au_onset_frames
        rows = []
        for row in reversed(self._shapes):  # this face's newest run of consecutive frames, at most `reach`
            if len(rows) == reach or (rows and row[0] != rows[-1][0] - 1) or row[0] < self._track_start:
                break
            rows.append(row)
        rows.reverse()
        raw = np.array([r for _, r, _ in rows])
        delta = np.array([d for _, _, d in rows])
        out: list[Update] = []
        for name in READ_WELL:
            if name not in cfg.emotions:
                continue
            emotion = cfg.emotions.index(name)
            strength = au_strength(delta, name)
            up = strength >= cfg.au_onset
            if name == "happiness":  # a face already smiling when it appears: the baseline starts on the smile
                up |= smooth3(raw[:, SMILE].mean(axis=1)) >= cfg.emotion_evidence.smile_raw
            held = len(up) >= cfg.au_onset_frames and bool(up[-cfg.au_onset_frames:].all())
            live = self._au_open.get(emotion)
            if live is not None:  # announced on this rise: one onset until the units come down again
                if not up[-1]:
                    del self._au_open[emotion]
                elif any(a is live for a in self._announced):  # not yet taken by an event or cancelled
                    live[2] = t
                continue
            if not held or not supported(raw, delta, name, cfg.emotion_evidence):
                continue
            if any(a[1] >= self._track_start for a in self._announced):
                continue  # an onset of this face is open already (its span so far can end before t; a laugh
                          # raises the brows); one of a face gone before a cut does not hold this face's back
            if any(p.emotion == emotion and p.onset <= t <= p.offset for p in self._emitted):
                continue
            rising = up | (strength >= max(cfg.grow_below * strength[-1], cfg.emotion_evidence.min_rise))
            first = len(rising) - 1
            while first > 0 and rising[first - 1]:
                first -= 1
            a = [self._next_track, int(rows[first][0]), t, emotion]
            self._announced.append(a)
            self._au_open[emotion] = a
            out.append(OnsetUpdate(a[1], float(np.clip(strength[-1], 0.0, 1.0)), self._next_track))
            self._next_track += 1
        return out

    def _chain(self, dets: list[Proposal], lo: int, end: int, tail: bool) -> list[Proposal]:
        """An expression longer than what a window holds whole (W - 2 edges): FEDN reports it cut at the window's
        end while its onset is in view, then cut at both edges. It starts with a confident interval whose onset is
        in the window and which runs into the window's last 2 edges, goes on while each window has one overlapping
        it, whatever emotion that says, and ends in the first window whose interval of it ends before them: onset
        where the last window that held it placed it, offset of the last (so it goes out within a stride or two of
        its offset; `fedn_max_lag` does not apply to it), the emotion most of its windows gave. One held longer than
        `max_segment_seconds` goes out then, cut there, and its rest is followed from the next frame on as a piece of
        its own, as GIM cuts its pieces (a rest under a second is not reported)."""
        cfg = self.cfg
        margin = 2 * cfg.fedn_edge
        sure = [d for d in dets if d.score >= cfg.fedn_only_threshold]
        run = self._long
        if run is None:
            ended, self._long_ended = self._long_ended, None
            starts = [d for d in sure if d.onset >= lo and d.offset > end - margin and not tail]
            self._long = max(starts, key=lambda d: d.score, default=None)
            self._long_views = [self._long] if self._long is not None else []
            self._long_rest = self._long_held = False
            # an expression the last window saw end just before its last edges, which this one holds going on from
            # before its start into them: its rest is followed as a piece of its own, as after a cut at the cap
            # (lab 0.4.2's FEDN on WolfgangLanger_Pexels.mp4 ended her laugh at 342 in the window ending at 351;
            # every later window held it from edge to edge, and the 4 s to the end of the clip went unreported)
            if self._long is None and ended is not None and not tail:
                # from the end of its event, which `_grow` may have taken further
                cut = max([ended.offset] + [e.offset for e in self._emitted if e.onset <= ended.offset <= e.offset])
                on = [d for d in sure if d.onset < lo and d.onset <= ended.offset and d.offset > max(end - margin, cut)]
                if on:
                    self._cuts.append(cut)
                    self._long = dataclasses.replace(max(on, key=lambda d: d.score), onset=cut + 1)
                    self._long_rest = True
            return []
        # the same expression: sharing half of the shorter with the span followed so far (an earlier expression cut
        # at this window's start ended before it began and is not it), whatever emotion this window calls it
        span = (run.onset, run.offset)
        same = [d for d in sure if shares((d.onset, d.offset), span, 0.5)]
        held, self._long_held = self._long_held, False
        if not same:
            self._long = None
            # kept going by its action units alone, and no window sees it now: it ended where FEDN last placed it
            return self._chain_piece(run, [run], False, end) if held else []
        # a window that has seen more of it places its start better, while the start is in view: not when one of its
        # intervals of it runs from before its start (a weaker one inside the expression would move the start into
        # it; WolfgangLanger's laugh with lab 0.4.2's FEDN went from 191 to 278, then ended as too short for a chain)
        seen = [d for d in same if d.onset >= lo] if all(d.onset >= lo for d in same) else []
        onset = max(seen, key=lambda d: d.score).onset if seen else run.onset
        run = dataclasses.replace(run, onset=onset, offset=max(d.offset for d in same))
        # going on while an interval of it runs into the window's last 2 edges (an earlier one of this window that
        # overlaps it may end before them), or while its action units are still up there (`chain_hold`)
        self._long_views.append(max(same, key=lambda d: d.score))
        going = not tail and any(d.offset > end - margin for d in same)
        if not going and not tail and self._held(run, end):
            going = self._long_held = True
        if going and end - run.onset < self.max_segment:
            self._long = run
            return []
        # ended, or held longer than `max_segment_seconds`: then reported as it stands, as GIM cuts its pieces there
        return self._chain_piece(run, same, going, end)

    def _emotion_name(self, emotion: int) -> str | None:
        """The engine's name of emotion index `emotion`; None for none (-1) or with no label map."""
        names = self.cfg.emotions
        return names[emotion] if 0 <= emotion < len(names) else None

    def _chain_view(self) -> Proposal:
        """The chain's emotion: the one most of its windows gave (one may call a laugh's raised upper lip disgust),
        its most confident view of that."""
        said = Counter(v.emotion for v in self._long_views)
        return max(self._long_views, key=lambda v: (said[v.emotion], v.score))

    def _held(self, run: Proposal, end: int) -> bool:
        """Whether the chain's expression still shows plainly on every frame of the window's last 2 edges (ending at
        `end`): the blendshapes there name its emotion (`evidence_emotion`: a broad smile, raised brows with the eyes
        or jaw open), and its action units stay at `chain_hold` of their top over the chain, a face on each frame. A
        resting face MediaPipe reads as smiling a little (a synthetic video's, mouthSmile 0.41 throughout) is not
        held, however flat its action units."""
        cfg = self.cfg
        name = self._emotion_name(self._chain_view().emotion)
        if cfg.chain_hold <= 0 or name not in READ_WELL:
            return False
        rows = [(t, raw, delta) for t, raw, delta in self._shapes if run.onset <= t <= end]
        frames = np.array([t for t, _, _ in rows], dtype=np.int64)
        last = frames > end - 2 * cfg.fedn_edge
        if last.sum() < 2 * cfg.fedn_edge:
            return False
        raw, delta = np.array([r for _, r, _ in rows]), np.array([d for _, _, d in rows])
        if evidence_emotion(raw[last], delta[last], cfg.emotion_evidence) != name:
            return False
        strength = au_strength(delta, name)
        return bool((strength[last] >= cfg.chain_hold * strength.max()).all())

    def _chain_piece(self, run: Proposal, same: list[Proposal], going: bool, end: int) -> list[Proposal]:
        """The chain `run` reported: ended (its last interval `same` says where), or cut at the cap while `going`."""
        cfg = self.cfg
        margin = 2 * cfg.fedn_edge
        self._long = None
        last = max(same, key=lambda d: (going and d.offset > end - margin, d.score))
        length = last.offset - run.onset + 1
        if self._long_rest:  # no window holds a rest's start: only the chain can report it, if it lasts a second
            if length < cfg.fps:
                return []
        elif length <= cfg.fedn_window - 2 * cfg.fedn_edge - cfg.fedn_stride:
            return []  # some window of the grid holds it whole: the ordinary path has it
        best = self._chain_view()
        piece = dataclasses.replace(run, offset=last.offset, apex=(run.onset + last.offset) // 2, kind=MACRO,
                                    score=min(run.score, last.score), emotion=best.emotion,
                                    emotion_probs=best.emotion_probs)
        if going:  # cut at the cap: the rest is followed as a piece of its own from the next frame on
            self._cuts.append(piece.offset)
            self._long = dataclasses.replace(run, onset=piece.offset + 1, offset=piece.offset + 1)
            self._long_views, self._long_rest = [], True
        else:
            self._long_ended = piece
        return [piece]

    def _fedn_tail(self) -> Steps:
        """Frames after the last FEDN window (end of stream, reconnect): one last, end-aligned window. Also when
        the grid's last window ended on the last frame: it took its end for an inner edge, and an expression still
        going on there would be lost (its onset cancelled)."""
        if self.fedn_fn is None or not self._fedn_x or self._last is None:
            return []
        if self._fedn_done >= self._last and not self._fedn_end_open:
            return []
        valid = min(len(self._fedn_x), self.cfg.fedn_window)
        return (yield from self._run_fedn(self._last - valid + 1, valid, tail=True))

    # ------------------------------------------------------------------------------------------------ merge

    def _settle(self, final: bool = False) -> list[Update]:
        """Emit GIM proposals FEDN has covered, FEDN intervals no later window or GIM piece can claim, and the
        cancellations of announced pieces that neither model turned into an expression."""
        cfg = self.cfg
        out: list[Update] = []
        still: list[_Pending] = []
        for pend in self._pending:
            last = max((p.offset for p in pend.proposals), default=-1)
            if pend.proposals and (final or self.fedn_fn is None or self._fedn_done >= last + cfg.fedn_wait):
                out += self._emit(pend)
            else:
                still.append(pend)
        self._pending = still
        if self.fedn_fn is not None:
            out += self._settle_fedn(final)
        # An announced piece GIM found nothing in keeps its onset's track while FEDN, which sees whole windows,
        # may still spot the expression it started (a long smile whose flow is still but whose shape is not);
        # once a window past the onset has been seen, it is cancelled.
        still = []
        for pend in self._pending:
            expired = final or self.fedn_fn is None or self._fedn_done >= pend.start + cfg.fedn_window
            if not pend.proposals and expired:
                out += self._emit(pend)
            else:
                still.append(pend)
        self._pending = still
        if self.fedn_onsets:
            out += self._expire_onsets(final)
        return out

    def _announcement(self, d: Proposal) -> list[int] | None:
        """The announced onset FEDN interval `d` is about: one starting within 2 edges of it, or whose span so far
        `d` covers at IoU >= 0.5 (a later window, seeing more of it, may move the start by more), or, of its
        emotion, sharing `repeat_cover` of the shorter of the two (as `_reported` judges a re-found expression);
        overlapping expressions that start apart stay apart."""
        cover = self.cfg.repeat_cover

        def close(a: list[int]) -> bool:
            near = abs(a[1] - d.onset) <= 2 * self.cfg.fedn_edge
            same = cover > 0 and a[3] == d.emotion and shares((d.onset, d.offset), (a[1], a[2]), cover)
            return near or same or iou_1d([(d.onset, d.offset)], [(a[1], a[2])])[0, 0] >= 0.5
        return min((a for a in self._announced if close(a)), key=lambda a: abs(a[1] - d.onset), default=None)

    def _expire_onsets(self, final: bool) -> list[Update]:
        """Cancel FEDN onsets no event took: their interval has been seen ended (plus `fedn_settle` and a stride for
        a final version to settle) and is neither in the pool nor the expression a chain is following."""
        if not self._announced:  # runs every frame: nothing to build while no onset is open
            return []
        cfg = self.cfg
        out: list[Update] = []
        alive = [(p.onset, p.offset) for p in self._pool] + ([(self._long.onset, self._long.offset)]
                                                               if self._long is not None else [])
        for a in list(self._announced):
            busy = any(on <= a[2] and a[1] <= off for on, off in alive)
            if final or (not busy and self._fedn_done >= a[2] + cfg.fedn_settle + cfg.fedn_stride):
                self._announced.remove(a)
                out.append(CancelUpdate(a[1], a[0]))
        return out

    def _settle_fedn(self, final: bool) -> list[Update]:
        cfg = self.cfg
        out: list[Update] = []
        open_from = [p.start for p in self._pending if p.proposals] + ([self._seg_start] if self._state != "idle" else [])
        if not self.gim_proposes:
            open_from = []
        curve_last = self._curve[-1][0] if self._curve else -1
        keep: list[Proposal] = []
        for d in self._pool:
            settled = final or (self._fedn_done >= d.offset + cfg.fedn_settle and curve_last >= d.offset
                                and all(s > d.offset for s in open_from) and not any(d is u for u in self._unsure)
                                and not any(d is u for u in self._for_chain))
            if not settled:
                keep.append(d)
                continue
            # only an interval that can become an event waits for its action units to come down (`_grow`)
            wanted = d.score >= cfg.fedn_only_threshold and not self._reported(d)
            grown = self._grow(d, final) if wanted else d
            if grown is None:
                keep.append(d)
                continue
            self._resolved.append(d)
            judged = self._evidence(grown, {"fedn_score": d.score}) if wanted else None
            if judged is not None and judged[0].emotion != d.emotion \
                    and self._reported(dataclasses.replace(d, emotion=judged[0].emotion)):
                judged = None  # the blendshapes name it as an expression already reported (FEDN named it otherwise)
            p = self._clear_of_emitted(judged[0]) if judged is not None else None
            if p is not None and self._continues(p):
                p = None
            if p is not None:  # (an onset it would have adopted is cancelled in due course instead)
                p = self._leveled(self._peak(p))
                out.append(ExpressionUpdate(p, self._adopt_track(d), judged[1]))
                self._emitted.append(p)
        self._pool = keep
        return out

    def _grow(self, d: Proposal, final: bool) -> Proposal | None:
        """FEDN interval `d` grown to the span of its emotion's action-unit movement around its peak (`grow_below`);
        None while they are still up at the newest frame and may still grow it: the interval waits."""
        cfg = self.cfg
        name = self._emotion_name(d.emotion)
        if cfg.grow_below <= 0 or d.kind == MICRO or name not in READ_WELL:
            return d
        reach = int(round(cfg.grow_seconds * cfg.fps))
        rows = [(t, delta) for t, _, delta in self._shapes if d.onset - reach <= t <= d.offset + reach]
        frames = np.array([t for t, _ in rows], dtype=np.int64)
        inside = np.flatnonzero((frames >= d.onset) & (frames <= d.offset))
        if len(inside) == 0:
            return d
        strength = au_strength(np.array([x for _, x in rows]), name)
        apex = int(inside[np.argmax(strength[inside])])
        up = strength >= max(cfg.grow_below * strength[apex], cfg.emotion_evidence.min_rise)
        if strength[apex] <= 0 or not up[apex]:
            return d
        first = last = apex  # the run of frames around the apex, no face frame missing, where they are still up
        while first > 0 and up[first - 1] and frames[first - 1] == frames[first] - 1:
            first -= 1
        while last < len(frames) - 1 and up[last + 1] and frames[last + 1] == frames[last] + 1:
            last += 1
        if not final and last == len(frames) - 1 and frames[last] == self._last and frames[last] < d.offset + reach:
            return None
        # not across a cut at `max_segment_seconds`: the piece on the other side has those frames
        onset = max([min(d.onset, int(frames[first]))] + [c + 1 for c in self._cuts if c < d.onset])
        offset = min([max(d.offset, int(frames[last]))] + [c for c in self._cuts if c >= d.offset])
        return dataclasses.replace(d, onset=onset, offset=offset)

    def _reported(self, d: Proposal) -> bool:
        """Whether FEDN interval `d` is an expression already emitted (`repeat_cover`)."""
        cfg = self.cfg
        for p in self._emitted:
            if iou_1d([(d.onset, d.offset)], [(p.onset, p.offset)])[0, 0] >= cfg.match_iou:
                return True
            if cfg.repeat_cover > 0 and p.emotion == d.emotion and shares((d.onset, d.offset), (p.onset, p.offset),
                                                                            cfg.repeat_cover):
                return True
        return False

    def _in_warmup(self, p: Proposal) -> bool:
        """Whether most frames of `p` are among the first `baseline.warmup_frames` of a face track (a track that
        ends sooner has its warm-up cut by the next one's start, so no frame counts twice)."""
        w = self.cfg.baseline.warmup_frames
        starts = list(self._track_starts)
        inside = sum(max(0, min(p.offset + 1, s + w, nxt) - max(p.onset, s))
                     for s, nxt in zip(starts, starts[1:] + [p.offset + 1]))
        return 2 * inside > p.offset - p.onset + 1

    def _clear_of_emitted(self, p: Proposal) -> Proposal | None:
        """`p` off the frames of the events of its emotion already sent out (`no_overlap`): a live subscriber has
        been told about those frames, so a later find of the same emotion cannot claim them again. None when nothing
        is left."""
        if not self.cfg.no_overlap:
            return p
        same = [e for e in self._emitted if e.emotion == p.emotion]
        onset = max([p.onset] + [e.offset + 1 for e in same if e.onset <= p.onset <= e.offset])
        offset = min([p.offset] + [e.onset - 1 for e in same if p.onset < e.onset <= p.offset])
        if onset > offset:
            return None
        return dataclasses.replace(p, onset=onset, offset=offset, apex=min(max(p.apex, onset), offset))

    def _continues(self, p: Proposal) -> bool:
        """Whether FEDN interval `p` is the rest of an emitted expression of its emotion (`rest_seconds`): no longer
        than that one, it starts within an edge of where that one ended (not at a cut of a held expression into
        pieces), and between the two tops of their emotion's action units the face never rested, under half the
        lower top, for `rest_seconds` (a frame with no face rests)."""
        cfg = self.cfg
        if cfg.rest_seconds <= 0:
            return False
        before = [e for e in self._emitted if e.emotion == p.emotion and 0 <= p.onset - e.offset - 1 <= cfg.fedn_edge
                  and p.offset - p.onset <= e.offset - e.onset and e.offset not in self._cuts]
        if not before:
            return False
        e = max(before, key=lambda x: x.offset)
        rows = [(t, delta) for t, _, delta in self._shapes if e.onset <= t <= p.offset]
        frames = np.array([t for t, _ in rows], dtype=np.int64)
        if not np.any(frames <= e.offset) or not np.any(frames >= p.onset):
            return False
        deltas = np.array([x for _, x in rows])
        name = self._emotion_name(p.emotion)
        strength = au_strength(deltas, name)
        if strength is None:
            strength = smooth3(expression_level(deltas))
        first, second = frames <= e.offset, frames >= p.onset
        a, b = np.flatnonzero(first)[np.argmax(strength[first])], np.flatnonzero(second)[np.argmax(strength[second])]
        resting = np.ones(frames[b] - frames[a] + 1, dtype=bool)  # a frame with no face rests
        resting[frames[a:b + 1] - frames[a]] = strength[a:b + 1] < min(strength[a], strength[b]) / 2
        edges = np.diff(np.r_[0, resting.astype(np.int8), 0])  # +1 where a rest starts, -1 after it ends
        longest = (np.flatnonzero(edges == -1) - np.flatnonzero(edges == 1)).max(initial=0)
        return longest < cfg.rest_seconds * cfg.fps

    def _peak(self, d: Proposal) -> Proposal:
        """A FEDN interval with its apex and peak intensity: FEDN regresses only the boundaries, so its own apex is
        the midpoint and it has no intensity. The apex is where the blendshapes of its emotion deviate most from
        the person's neutral (`apex_from`), the peak intensity the top of GIM's curve over it."""
        rows = [(frame, value) for frame, value, _, _ in self._curve if d.onset <= frame <= d.offset]
        if rows:
            frame, value = max(rows, key=lambda r: r[1])
            d = dataclasses.replace(d, apex=frame, peak_intensity=value)
        shapes = [(t, delta) for t, _, delta in self._shapes if d.onset <= t <= d.offset] \
            if self.cfg.apex_from == "blendshapes" else []
        if shapes:
            name = self._emotion_name(d.emotion)
            d = dataclasses.replace(d, apex=shapes[apex_index(np.array([x for _, x in shapes]), name)][0])
        return d

    def _leveled(self, p: Proposal) -> Proposal:
        """`p` with the top of the expression level over its frames (`peak_level`)."""
        peak = max((value for t, value in self._levels if p.onset <= t <= p.offset), default=0.0)
        return dataclasses.replace(p, peak_level=peak)

    def _adopt_track(self, d: Proposal) -> int:
        """The onset track of an announced GIM piece inside FEDN interval `d` (which then becomes that onset's final
        event instead of a cancel), or -1: a piece GIM found nothing in, or, with GIM's proposals off, the open one.
        With FEDN onsets: the announcement `d` is about (`_announcement`)."""
        if self.fedn_onsets:
            same = self._announcement(d)
            if same is None:
                return -1
            self._announced.remove(same)
            return same[0]
        orphan = next((p for p in self._pending if not p.proposals and p.track >= 0
                       and p.start <= d.offset and p.end >= d.onset), None)
        if orphan is not None:
            self._pending.remove(orphan)
            return orphan.track
        if (not self.gim_proposes and self._state != "idle" and self._track_id >= 0
                and self._seg_start <= d.offset and self._track_id not in self._adopted):
            self._adopted.append(self._track_id)
            return self._track_id
        return -1

    def _emit(self, pend: _Pending) -> list[Update]:
        if pend.track in self._adopted:  # its onset already became a FEDN expression
            return []
        if not pend.proposals:
            return [CancelUpdate(pend.start, pend.track)] if pend.track >= 0 else []
        cfg = self.cfg
        fedn = list(self._pool) + list(self._resolved)
        out: list[Update] = []
        track = pend.track
        for p in pend.proposals:
            extras: dict = {}
            if fedn:
                iou = iou_1d([(p.onset, p.offset)], [(d.onset, d.offset) for d in fedn])[0]
                j = int(np.argmax(iou))
                if iou[j] >= cfg.match_iou:
                    d = fedn[j]
                    p = dataclasses.replace(p, emotion=d.emotion, emotion_probs=d.emotion_probs, source="gim+fedn")
                    extras = {"fedn_score": d.score, "fedn_iou": float(iou[j])}
            judged = self._evidence(p, extras)
            if judged is None:
                continue
            p, extras = judged
            p = self._clear_of_emitted(p)
            if p is None:
                continue
            p = self._leveled(p)
            self._emitted.append(p)
            out.append(ExpressionUpdate(p, track, extras))
            track = -1
        if track >= 0:  # every proposal of the announced piece was dropped (speech, no action units)
            out.append(CancelUpdate(pend.start, track))
        return out

    def _evidence(self, p: Proposal, extras: dict) -> tuple[Proposal, dict] | None:
        """What the blendshapes over the interval say: None when it is speech with no clear expression in it, when
        its emotion's action units do not move at all (`models.emotion.supported`), or when it is a blink taken for
        an emotion MediaPipe cannot read (`eyes_close`): drop the event; else the proposal, with the emotion a clear
        pattern shows where it disagrees with the model's."""
        rows = [(raw, delta) for t, raw, delta in self._shapes if p.onset <= t <= p.offset]
        if not rows:
            return p, extras
        raw, delta = np.array([r for r, _ in rows]), np.array([d for _, d in rows])
        emotions, evidence = self.cfg.emotions, self.cfg.emotion_evidence
        name = evidence_emotion(raw, delta, evidence)
        if name is None and is_talking(raw, self.cfg.fps, self.cfg.talking):
            return None
        if name is not None and name in emotions and emotions.index(name) != p.emotion:
            extras = {**extras, "emotion_from": "blendshapes", "model_emotion": p.emotion}
            p = dataclasses.replace(p, emotion=emotions.index(name))
        said = self._emotion_name(p.emotion)
        if said not in READ_WELL and eyes_close(delta, evidence) and not shows_smile(raw, evidence):
            return None  # a blink, not an expression MediaPipe cannot see (eyes closing on a smile: a laugh)
        if said == "happiness" and not shows_smile(raw, evidence, outright=True) and self._in_speech(p):
            return None  # lips spread by speech, not a smile said with it (`speech_smile`)
        confirmable = said == "happiness" or (said == "surprise" and p.kind == MACRO)
        if self.cfg.warmup_confirm and not confirmable and self._in_warmup(p):
            return None
        # a micro-expression is too brief and faint for its action units to be read: a happiness is asked only
        # whether the mouth smiles at all (`micro_smile`)
        if p.kind == MICRO:
            asked = evidence.enabled and evidence.micro_smile and said == "happiness"
            smiling = not asked or shows_smile(raw, evidence)
            return (p, extras) if smiling else None
        return (p, extras) if supported(raw, delta, said, evidence) else None

    def _in_speech(self, p: Proposal) -> bool:
        """Whether the jaw moves like speech over `speech_smile` seconds before `p` and its own frames (never when
        that is off): the second before gives an event shorter than `talking.min_seconds` enough frames to judge.
        Where fewer face frames lie before it (a stream's first second, or the face just back), the frames after it
        that are already in make up the rest. Only `p`'s own face track counts: after a shot cut, the jaw of the face
        before it says nothing about this one. Asked only of a happiness that does not read as a smile outright."""
        if self.cfg.speech_smile <= 0:
            return False
        starts = list(self._track_starts)
        own = max([s for s in starts if s <= p.onset], default=p.onset)
        after = min([s for s in starts if s > p.onset], default=float("inf"))
        lo = max(own, p.onset - int(round(self.cfg.speech_smile * self.cfg.fps)))
        seen = [(t, r) for t, r, _ in self._shapes if lo <= t < after]
        if not seen:
            return False
        hi = max(p.offset, seen[0][0] + int(np.ceil(self.cfg.talking.min_seconds * self.cfg.fps)) - 1)
        return moves_like_speech(np.array([r for t, r in seen if t <= hi]), self.cfg.fps, self.cfg.talking)


def shares(a: tuple[int, int], b: tuple[int, int], share: float) -> bool:
    """Whether inclusive frame intervals `a` and `b` have `share` of the shorter of the two in common."""
    common = min(a[1], b[1]) - max(a[0], b[0]) + 1
    return common > 0 and common >= share * min(a[1] - a[0] + 1, b[1] - b[0] + 1)


def spot_video(spotter: OnlineSpotter, features: dict) -> list[Proposal]:
    """Run a whole video (the features dict of `fes-live extract` / load_features) through `spotter`, frame by
    frame exactly as live, and return its proposals by onset. The spotter is reset first and after."""
    found = [u.proposal for u in stream_updates(spotter, features) if isinstance(u, ExpressionUpdate)]
    return sorted(found, key=lambda p: (p.onset, p.offset))


def stream_updates(spotter: OnlineSpotter, features: dict) -> list[Update]:
    """Every update (intensity, onsets, cancels, expressions) of a whole video pushed frame by frame, then flushed."""
    return [u for _, u in timed_updates(spotter, features)]


def timed_updates(spotter: OnlineSpotter, features: dict) -> list[tuple[int, Update]]:
    """`stream_updates` with the frame whose push made each update known (the last frame for the flush's): how
    long after the fact a live stream would have heard it."""
    need = ("geometry", "roi_flow", "face_present", "frame_index")
    missing = [k for k in need if k not in features]
    if missing:
        raise ValueError(f"features lack {missing}; expected the arrays of `fes-live extract`")
    fps = float(features.get("fps", spotter.stream_fps))
    if abs(fps - spotter.stream_fps) > 0.5:
        raise ValueError(f"video is {fps:g} fps but the spotter is configured for {spotter.stream_fps:g}; build it "
                         f"with SpotterConfig(fps={fps:g}, ...)")
    geometry, flow = features["geometry"], features["roi_flow"]
    face, index = np.asarray(features["face_present"], dtype=bool), np.asarray(features["frame_index"])
    new_face = np.asarray(features.get("new_face", np.zeros(len(index), bool)), dtype=bool)
    pts = features.get("pts_s")  # the rate is followed where the frames' timestamps are known
    spotter.reset()
    updates: list[tuple[int, Update]] = []
    for t in range(len(index)):
        updates += [(int(index[t]), u) for u in spotter.push(int(index[t]), bool(face[t]), geometry[t], flow[t],
                                                            bool(new_face[t]), None if pts is None else pts[t])]
    end = int(index[-1]) if len(index) else -1
    return updates + [(end, u) for u in spotter.flush()]


def eager_gim_fn(model) -> GimFn:
    """Wrap an eager `models.gim.GIM` as a numpy gim_fn (eval mode, no grad)."""
    import torch

    model.eval()

    def fn(windows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        with torch.no_grad():
            out = model(torch.from_numpy(np.ascontiguousarray(windows, dtype=np.float32)))
        return out.intensity.numpy(), torch.sigmoid(out.apex_logits).numpy()
    return fn


def eager_fedn_fn(model) -> FednFn:
    """Wrap an eager `models.fedn.FEDN` as a numpy fedn_fn (eval mode, no grad)."""
    import torch

    model.eval()

    def fn(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        with torch.no_grad():
            out = model(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)))
        return out.cls_logits.numpy(), out.intervals.numpy()
    return fn
