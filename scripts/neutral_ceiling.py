"""The neutral ceiling of `models.baseline.BaselineConfig`: per blendshape, the most a near-neutral face reads.

Read from the near-neutral face photos of `../shared/data/faces` whose people are in no real dev clip (the
README's person ids; realdev_* images and P07, fomm_10's actor, are left out), with MediaPipe's Face Landmarker
in IMAGE mode, the same `.task` the ingest uses. The ceiling is each channel's maximum over those photos: the
highest a resting face of someone never scored reads. Writes configs/neutral_ceiling.json (numbers only; the photos
stay in ../shared).

    .venv/bin/python scripts/neutral_ceiling.py [--faces ../shared/data/faces] [--out configs/neutral_ceiling.json]
"""
import argparse
import json
import re
from pathlib import Path

import numpy as np

from fes_live.models.emotion import MEDIAPIPE_BLENDSHAPES
from fes_live.stream.face_model import find_face_model

DEV_ACTORS = {"P07"}  # in a real dev clip without a realdev_* photo (faces/README.md: fomm_10's actor)


def people(readme: str) -> dict[str, str]:
    """{photo file: person id} of the README's table."""
    return dict(re.findall(r"^\| `faces/([^`]+)` \|[^|]*\|[^|]*\| (P\d+) \|", readme, flags=re.M))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--faces", default="../shared/data/faces")
    p.add_argument("--out", default="configs/neutral_ceiling.json")
    args = p.parse_args()
    import mediapipe as mp
    from mediapipe.tasks.python import BaseOptions, vision
    faces = Path(args.faces)
    who = people((faces / "README.md").read_text())
    dev = {pid for f, pid in who.items() if f.startswith("realdev_")} | DEV_ACTORS
    used = sorted(f for f, pid in who.items() if pid not in dev)
    opts = vision.FaceLandmarkerOptions(base_options=BaseOptions(model_asset_path=str(find_face_model())),
                                        running_mode=vision.RunningMode.IMAGE, num_faces=1,
                                        output_face_blendshapes=True)
    rows = []
    with vision.FaceLandmarker.create_from_options(opts) as landmarker:
        for f in used:
            result = landmarker.detect(mp.Image.create_from_file(str(faces / f)))
            if not result.face_blendshapes:
                raise SystemExit(f"{f}: no face found")
            scores = {c.category_name: c.score for c in result.face_blendshapes[0]}
            rows.append([scores[n] for n in MEDIAPIPE_BLENDSHAPES])
    ceiling = np.max(np.array(rows), axis=0)
    out = {"_doc": __doc__.splitlines()[0] + " (scripts/neutral_ceiling.py)",
           "photos": used, "people": sorted({who[f] for f in used}),
           "ceiling": {n: round(float(v), 3) for n, v in zip(MEDIAPIPE_BLENDSHAPES, ceiling)}}
    Path(args.out).write_text(json.dumps(out, indent=1) + "\n")
    print(f"{len(used)} photos of {len(out['people'])} people -> {args.out}")
    for n, v in out["ceiling"].items():
        if v >= 0.2:
            print(f"  {n} {v}")


if __name__ == "__main__":
    main()
