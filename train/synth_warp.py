"""Facial actions as landmark displacements, and the one dense warp per frame that renders them.

Each action unit (and the unlabelled blink and lip pucker of talking) is a displacement of the 468 mesh points at
full amplitude, written in face units (u right, v down, 1 = distance between the eye centres) so one definition
fits every face. The mesh, points inside the eyes, and two zero-displacement rings around the face oval are
triangulated once; each pixel's barycentric weights turn a basis into a dense displacement field (a
piecewise-affine warp). A frame is then a linear blend of the precomputed fields, inverted by fixed-point steps,
composed with a head-motion similarity, and one `cv2.remap` over the box where the active bases move anything.
The blink alone is stored as a backward field: a lid travelling the whole eye height would fold a forward warp.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from fes_live.train import synth_face as sf

BASES = ("AU1", "AU2", "AU4", "AU5", "AU6", "AU7", "AU9", "AU10", "AU12", "AU15", "AU24", "AU26", "blink", "pucker")
BASIS_INDEX = {name: i for i, name in enumerate(BASES)}


@dataclass(frozen=True)
class FaceAxes:
    """Face coordinates: origin between the eye centres, ex to the image-right eye, ey down, unit = eye distance."""
    origin: np.ndarray  # (2,)
    ex: np.ndarray      # (2,)
    ey: np.ndarray      # (2,)
    iod: float          # pixels

    def to_uv(self, pts: np.ndarray) -> np.ndarray:
        rel = pts - self.origin
        return np.stack([rel @ self.ex, rel @ self.ey], -1) / self.iod

    def to_px(self, duv: np.ndarray) -> np.ndarray:
        return (duv[:, :1] * self.ex + duv[:, 1:] * self.ey) * self.iod


def face_axes(landmarks: np.ndarray) -> FaceAxes:
    eyes = [landmarks[list(sf.RIGHT_EYE_UPPER + sf.RIGHT_EYE_LOWER)].mean(0),
            landmarks[list(sf.LEFT_EYE_UPPER + sf.LEFT_EYE_LOWER)].mean(0)]
    left, right = sorted(eyes, key=lambda e: e[0])
    iod = float(np.linalg.norm(right - left))
    ex = (right - left) / iod
    ey = np.array([-ex[1], ex[0]], np.float32)
    return FaceAxes(((left + right) / 2).astype(np.float32), ex.astype(np.float32), ey, iod)


def _smoothstep(e0: float, e1: float, x: np.ndarray) -> np.ndarray:
    t = np.clip((x - e0) / (e1 - e0), 0.0, 1.0)
    return t * t * (3 - 2 * t)


def _bump(uv: np.ndarray, anchors, sigma: float) -> np.ndarray:
    """Weight of every point: Gaussian of its distance to the nearest anchor (1 on the anchors)."""
    d2 = ((uv[:, None, :] - uv[list(anchors)][None]) ** 2).sum(-1).min(1)
    return np.exp(-d2 / (2 * sigma ** 2))


def _mid(seq) -> tuple[int, ...]:
    """A lid or lip line without its two corner points."""
    return tuple(seq[1:-1])


def basis_displacements(landmarks: np.ndarray, axes: FaceAxes) -> np.ndarray:
    """(len(BASES), 468, 2) pixel displacements of the mesh points at full amplitude."""
    uv = axes.to_uv(landmarks)
    u, v = uv[:, 0], uv[:, 1]
    side = np.sign(u)
    n = len(uv)
    brows = sf.RIGHT_BROW + sf.LEFT_BROW
    upper_lids = _mid(sf.RIGHT_EYE_UPPER) + _mid(sf.LEFT_EYE_UPPER)
    lower_lids = _mid(sf.RIGHT_EYE_LOWER) + _mid(sf.LEFT_EYE_LOWER)
    eyes = sf.RIGHT_EYE_UPPER + sf.RIGHT_EYE_LOWER + sf.LEFT_EYE_UPPER + sf.LEFT_EYE_LOWER
    upper_lip = _mid(sf.LIPS_UPPER_OUTER) + _mid(sf.LIPS_UPPER_INNER)
    lower_lip = _mid(sf.LIPS_LOWER_OUTER) + _mid(sf.LIPS_LOWER_INNER)
    mouth_v = float(v[[13, 14]].mean())
    above_eyes = _smoothstep(-0.10, -0.22, v)   # forehead and brows, not the lids
    brow_zone = _smoothstep(-0.04, -0.18, v)

    def vec(w, du, dv):
        return np.stack([w * du, w * dv], -1)

    out = {name: np.zeros((n, 2), np.float32) for name in BASES}
    out["AU1"] = vec(_bump(uv, sf.INNER_BROWS, 0.16) * above_eyes, 0.0, -0.11)
    out["AU2"] = vec(_bump(uv, sf.OUTER_BROWS, 0.16) * above_eyes, 0.0, -0.11)
    out["AU4"] = (vec(_bump(uv, sf.INNER_BROWS, 0.14) * brow_zone, -side * 0.08, 0.09)
                  + vec(_bump(uv, brows, 0.14) * brow_zone, 0.0, 0.04))
    for name in ("AU1", "AU2", "AU4"):
        out[name][list(eyes)] = 0.0
    out["AU5"] = vec(_bump(uv, upper_lids, 0.045) * _smoothstep(0.02, -0.04, v), 0.0, -0.05)
    out["AU7"] = (vec(_bump(uv, lower_lids, 0.04) * _smoothstep(-0.02, 0.04, v), 0.0, -0.035)
                  + vec(_bump(uv, upper_lids, 0.035) * _smoothstep(0.02, -0.04, v), 0.0, 0.02))
    out["AU6"] = (vec(_bump(uv, sf.CHEEKS, 0.22) * _smoothstep(0.05, 0.2, v), 0.0, -0.06)
                  + vec(_bump(uv, lower_lids, 0.04) * _smoothstep(-0.02, 0.04, v), 0.0, -0.03))
    out["AU6"][list(upper_lids)] = 0.0
    out["AU9"] = (vec(_bump(uv, sf.NOSE_WINGS, 0.10), -side * 0.012, -0.06)
                  + vec(_bump(uv, sf.INNER_BROWS, 0.12) * brow_zone, 0.0, 0.03))
    out["AU9"][list(eyes)] = 0.0
    above_mouth = _smoothstep(mouth_v - 0.01, mouth_v - 0.05, v)
    w10 = np.maximum(np.isin(np.arange(n), upper_lip), _bump(uv, upper_lip, 0.08) * above_mouth)
    out["AU10"] = vec(w10, 0.0, -0.09)
    out["AU10"][list(lower_lip)] = 0.0
    out["AU12"] = vec(_bump(uv, sf.LIP_CORNERS, 0.15), side * 0.14, -0.16)
    out["AU15"] = vec(_bump(uv, sf.LIP_CORNERS, 0.12), side * 0.02, 0.11)
    out["AU24"] = (vec(_bump(uv, _mid(sf.LIPS_UPPER_OUTER), 0.05) * above_mouth, 0.0, 0.015)
                   + vec(_bump(uv, sf.LIP_CORNERS, 0.08), -side * 0.03, 0.0))
    out["AU24"][list(_mid(sf.LIPS_LOWER_OUTER))] += np.array([0.0, -0.02], np.float32)
    below_mouth = _smoothstep(mouth_v - 0.01, mouth_v + 0.08, v)
    w26 = np.maximum(np.isin(np.arange(n), lower_lip),
                     _bump(uv, lower_lip + sf.CHIN, 0.40) * below_mouth)
    w26[list(upper_lip)] = 0.0
    w26[list(sf.LIP_CORNERS)] = 0.4
    out["AU26"] = vec(w26, 0.0, 0.28)
    out["blink"] = _blink(uv)
    out["pucker"] = vec(_bump(uv, sf.LIP_CORNERS, 0.12), -side * 0.05, 0.0)
    return np.stack([axes.to_px(out[name].astype(np.float32)) for name in BASES]).astype(np.float32)


def _blink(uv: np.ndarray) -> np.ndarray:
    """BACKWARD offsets (where each point samples from) of a closed eye: the lid skin is pulled down over the eye.

    A forward warp would fold (the lid travels as far as the eye is tall), so this basis alone says where the
    pixel comes from: at the upper lid 0.6 of the eye opening above itself, fading out over the skin above;
    `FaceWarper` adds points inside the eye that carry the lash line down to the lower lid.
    """
    d = np.zeros_like(uv)
    for upper, lower in ((sf.RIGHT_EYE_UPPER, sf.RIGHT_EYE_LOWER), (sf.LEFT_EYE_UPPER, sf.LEFT_EYE_LOWER)):
        opening = uv[list(_mid(upper))] - uv[list(_mid(lower))]   # (7, 2), points up
        d[list(_mid(upper))] = 0.6 * opening
        skin = _bump(uv, _mid(upper), 0.07) * (uv[:, 1] < uv[list(upper), 1].min())
        skin[list(upper) + list(lower)] = 0.0
        d += 0.6 * skin[:, None] * opening.mean(0)
    return d


def eye_interior(landmarks: np.ndarray, disp: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Extra points inside each eye (half way, and just above the lower lid) with their displacements.

    For every basis but the blink they move with the lids (interpolated); for the blink they sample the skin above
    the lid (half way) and the lash line (near the lower lid), so a closed eye shows lid, not a squeezed eyeball.
    """
    pts, d = [], []
    blink = BASIS_INDEX["blink"]
    for upper, lower in ((sf.RIGHT_EYE_UPPER, sf.RIGHT_EYE_LOWER), (sf.LEFT_EYE_UPPER, sf.LEFT_EYE_LOWER)):
        up, lo = list(_mid(upper)), list(_mid(lower))
        for a, sample in ((0.5, 0.8), (0.12, 0.88)):
            pts.append(landmarks[lo] + a * (landmarks[up] - landmarks[lo]))
            dd = (1 - a) * disp[:, lo] + a * disp[:, up]
            dd[blink] = sample * (landmarks[up] - landmarks[lo])
            d.append(dd)
    return np.concatenate(pts).astype(np.float32), np.concatenate(d, axis=1).astype(np.float32)


def _triangulate(points: np.ndarray, rect: tuple[int, int, int, int]) -> np.ndarray:
    """Delaunay triangles (M, 3) of point indices; points closer than 0.3 px to an earlier one are left out."""
    x0, y0, x1, y1 = rect
    subdiv = cv2.Subdiv2D((x0 - 2, y0 - 2, x1 - x0 + 4, y1 - y0 + 4))
    index: dict[tuple[float, float], int] = {}
    kept: list[np.ndarray] = []
    for i, p in enumerate(points.astype(np.float32)):
        if kept and np.min(np.abs(np.array(kept) - p).sum(1)) < 0.3:
            continue
        kept.append(p)
        subdiv.insert((float(p[0]), float(p[1])))
        index[(round(float(p[0]), 2), round(float(p[1]), 2))] = i
    tris = []
    for t in subdiv.getTriangleList():
        ids = [index.get((round(float(t[k]), 2), round(float(t[k + 1]), 2))) for k in (0, 2, 4)]
        if None not in ids:
            tris.append(ids)
    return np.array(tris, np.int32)


class FaceWarper:
    """Renders one source face under blended action-unit weights and a head-motion similarity."""

    def __init__(self, face: sf.SourceFace):
        self.face = face
        self.base = face.image
        h, w = self.base.shape[:2]
        self.axes = face_axes(face.landmarks)
        self.disp = basis_displacements(face.landmarks, self.axes)  # (K, 468, 2) px
        oval = face.landmarks[list(sf.FACE_OVAL)]
        centre = oval.mean(0)
        rings = [centre + (oval - centre) * s for s in (1.45, 1.9)]
        eye_pts, eye_disp = eye_interior(face.landmarks, self.disp)
        pts = np.clip(np.concatenate([face.landmarks, eye_pts, *rings]), 0, [w - 1, h - 1])
        x0, y0 = np.floor(np.maximum(pts.min(0), 0)).astype(int)
        x1, y1 = np.ceil(np.minimum(pts.max(0), [w - 1, h - 1])).astype(int) + 1
        self.region = (int(x0), int(y0), int(x1), int(y1))
        corners = np.array([[x0, y0], [x1 - 1, y0], [x0, y1 - 1], [x1 - 1, y1 - 1]], np.float32)
        pts = np.concatenate([pts, corners]).astype(np.float32)
        tris = _triangulate(pts, self.region)
        disp = np.zeros((len(BASES), len(pts), 2), np.float32)
        disp[:, : len(face.landmarks) + len(eye_pts)] = np.concatenate([self.disp, eye_disp], axis=1)
        self.fields = self._fields(pts, tris, disp)  # (K, rh, rw, 2) float32, region-local
        self.support = [self._support(f) for f in self.fields]  # region-local (x0, y0, x1, y1) or None
        self.blink = BASIS_INDEX["blink"]

    @staticmethod
    def _support(field: np.ndarray, margin: int = 3) -> tuple[int, int, int, int] | None:
        """Bounding box where a basis moves pixels by more than 0.05 px, plus a margin."""
        ys, xs = np.nonzero(np.abs(field).max(-1) > 0.05)
        if len(xs) == 0:
            return None
        h, w = field.shape[:2]
        return (max(int(xs.min()) - margin, 0), max(int(ys.min()) - margin, 0),
                min(int(xs.max()) + margin + 1, w), min(int(ys.max()) + margin + 1, h))

    def _fields(self, pts: np.ndarray, tris: np.ndarray, disp: np.ndarray) -> np.ndarray:
        """Per-basis dense displacement (piecewise-affine interpolation of the point displacements)."""
        x0, y0, x1, y1 = self.region
        rw, rh = x1 - x0, y1 - y0
        owner = np.zeros((rh, rw), np.int32)
        local = pts - np.array([x0, y0], np.float32)
        for t, tri in enumerate(tris):
            cv2.fillConvexPoly(owner, np.round(local[tri]).astype(np.int32), t + 1)
        ys, xs = np.nonzero(owner)
        tri_of = tris[owner[ys, xs] - 1]                        # (P, 3)
        a, b, c = local[tri_of[:, 0]], local[tri_of[:, 1]], local[tri_of[:, 2]]
        p = np.stack([xs, ys], -1).astype(np.float32)
        v0, v1, v2 = b - a, c - a, p - a
        den = v0[:, 0] * v1[:, 1] - v1[:, 0] * v0[:, 1]
        den = np.where(np.abs(den) < 1e-6, 1e-6, den)
        l1 = (v2[:, 0] * v1[:, 1] - v1[:, 0] * v2[:, 1]) / den
        l2 = (v0[:, 0] * v2[:, 1] - v2[:, 0] * v0[:, 1]) / den
        bary = np.clip(np.stack([1 - l1 - l2, l1, l2], -1), 0.0, 1.0)
        bary /= bary.sum(1, keepdims=True)
        fields = np.zeros((len(BASES), rh, rw, 2), np.float32)
        for k in range(len(BASES)):
            fields[k, ys, xs] = np.einsum("pj,pjc->pc", bary, disp[k][tri_of])
        return fields

    def landmarks_at(self, weights: np.ndarray, head: np.ndarray) -> np.ndarray:
        """(468, 2) mesh points of the rendered frame (displaced, then moved by the head similarity; blink aside)."""
        weights = np.asarray(weights, np.float32).copy()
        weights[self.blink] = 0.0
        pts = self.face.landmarks + np.tensordot(weights, self.disp, axes=1)
        return pts @ head[:, :2].T + head[:, 2]

    def render(self, weights: np.ndarray, head: np.ndarray) -> np.ndarray:
        """Frame for basis `weights` (K,) and the forward similarity `head` (2, 3) source -> frame."""
        h, w = self.base.shape[:2]
        out = cv2.warpAffine(self.base, head, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT101)
        active = [k for k in np.flatnonzero(np.abs(weights) > 1e-4) if self.support[k] is not None]
        if not active:
            return out
        # Work only where the active bases move anything (a blink touches the eyes, not the jaw).
        sup = np.array([self.support[k] for k in active])
        ux0, uy0 = sup[:, :2].min(0)
        ux1, uy1 = sup[:, 2:].max(0)
        forward = [k for k in active if k != self.blink]
        x0, y0 = self.region[0] + ux0, self.region[1] + uy0
        x1, y1 = self.region[0] + ux1, self.region[1] + uy1
        box = np.array([[x0, y0], [x1, y0], [x0, y1], [x1, y1]], np.float32) @ head[:, :2].T + head[:, 2]
        bx0, by0 = np.maximum(np.floor(box.min(0)).astype(int), 0)
        bx1, by1 = np.minimum(np.ceil(box.max(0)).astype(int), [w, h])
        if bx1 <= bx0 or by1 <= by0:
            return out
        inv = cv2.invertAffineTransform(head)
        gx, gy = np.meshgrid(np.arange(bx0, bx1, dtype=np.float32), np.arange(by0, by1, dtype=np.float32))
        qx = inv[0, 0] * gx + inv[0, 1] * gy + inv[0, 2] - np.float32(x0)   # window coordinates from here on
        qy = inv[1, 0] * gx + inv[1, 1] * gy + inv[1, 2] - np.float32(y0)
        if weights[self.blink] > 1e-4 and self.support[self.blink] is not None:
            # Backward offsets: sample where the closed lid comes from.
            b = cv2.remap(self.fields[self.blink, uy0:uy1, ux0:ux1], qx, qy, cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=0)
            qx = qx + np.float32(weights[self.blink]) * b[..., 0]
            qy = qy + np.float32(weights[self.blink]) * b[..., 1]
        sx, sy = qx, qy
        if forward:
            field = np.tensordot(weights[forward].astype(np.float32), self.fields[forward, uy0:uy1, ux0:ux1],
                                 axes=1)  # (wh, ww, 2)
            for _ in range(2):  # invert the forward displacement by fixed-point steps: src + d(src) = q
                d = cv2.remap(field, sx, sy, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
                sx, sy = qx - d[..., 0], qy - d[..., 1]
        out[by0:by1, bx0:bx1] = cv2.remap(self.base, sx + np.float32(x0), sy + np.float32(y0), cv2.INTER_LINEAR,
                                          borderMode=cv2.BORDER_REFLECT101)
        if BASIS_INDEX["AU26"] in forward or BASIS_INDEX["AU10"] in forward:
            self._shade_mouth(out, weights, head)
        return out

    def _shade_mouth(self, out: np.ndarray, weights: np.ndarray, head: np.ndarray) -> None:
        """Darken the new gap between the inner lips when the jaw opens (a warp only stretches the lip line).

        What was already open in the source (teeth of an open smile) moves with the upper lip and stays as is.
        """
        pts = self.landmarks_at(weights, head)
        gap = float(np.linalg.norm(pts[14] - pts[13])) - float(np.linalg.norm(
            self.face.landmarks[14] - self.face.landmarks[13]))
        alpha = float(np.clip(gap / (0.10 * self.axes.iod), 0.0, 1.0)) * 0.75
        if alpha < 0.02:
            return
        ring = list(sf.LIPS_UPPER_INNER) + list(reversed(sf.LIPS_LOWER_INNER))
        poly = pts[ring]
        upper = list(sf.LIPS_UPPER_INNER)
        was_open = self.face.landmarks[ring] @ head[:, :2].T + head[:, 2] + (pts[upper] - (
            self.face.landmarks[upper] @ head[:, :2].T + head[:, 2])).mean(0)
        x0, y0 = np.maximum(np.floor(poly.min(0)).astype(int) - 2, 0)
        x1, y1 = np.minimum(np.ceil(poly.max(0)).astype(int) + 3, [out.shape[1], out.shape[0]])
        if x1 <= x0 or y1 <= y0:
            return
        mask = np.zeros((y1 - y0, x1 - x0), np.uint8)
        cv2.fillPoly(mask, [np.round((poly - [x0, y0]) * 4).astype(np.int32)], 255, cv2.LINE_AA, shift=2)
        cv2.fillPoly(mask, [np.round((was_open - [x0, y0]) * 4).astype(np.int32)], 0, cv2.LINE_AA, shift=2)
        m = cv2.GaussianBlur(mask, (5, 5), 0).astype(np.float32)[..., None] * (alpha / 255.0)
        patch = out[y0:y1, x0:x1].astype(np.float32)
        out[y0:y1, x0:x1] = (patch * (1 - m) + patch * 0.3 * m).astype(np.uint8)
