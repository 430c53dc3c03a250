#!/usr/bin/env bash
# The device check: one call on a lent GPU machine (the device tool's `run`), under 8 minutes.
#
# Prepare on the dev machine (wheels for what the device image lacks, and this package as a wheel):
#   echo /.whl/ >> .git/info/exclude; bash benchmarks/gpu_check.sh --prepare
# Then, in one device call (carry [".whl"]):
#   bash benchmarks/gpu_check.sh
# It installs the carried wheels, builds the AOTInductor CUDA packages of the bundled engine from its exported
# programs (never from programs compiled here), runs the GPU-marked tests, runs `fes-bench scale` up to the largest
# N and writes $OUT/gpu_check.json (+ logs). TensorRT is used only where torch_tensorrt imports (not installable
# here). On a machine without CUDA (DEVICE=cpu) the same steps run on the CPU with small N: that is how the script
# itself is tested before a device is spent on it.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/gpu_check}
STREAMS=${STREAMS:-64,128,256,512,768,1000,1250}
SECONDS_PER_N=${SECONDS_PER_N:-12}
FEEDERS=${FEEDERS:-8}
mkdir -p "$OUT"

if [ "${1:-}" = "--prepare" ]; then
  set -e
  rm -rf .whl && mkdir -p .whl
  plat="--only-binary=:all: --python-version 3.12 --implementation cp --platform manylinux_2_28_x86_64
        --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64"
  # what the device image lacks (its package list: the device tool's KINDS.md); versions as pyproject.toml pins
  python3 -m pip download -q --no-deps $plat -d .whl pyzmq==27.3.0 'jsonschema>=4.20,<5' \
    jsonschema-specifications referencing rpds-py
  .venv/bin/pip wheel -q --no-deps -w .whl .
  # recorded features of the smile clip for the feeders (numbers, no frames; ../shared does not travel)
  .venv/bin/fes-live extract ../shared/data/video/pyfeat_single_face.mp4 -o .whl/features_smile.npz --no-progress
  ls -la .whl
  exit 0
fi

PY=${PY:-python3}
if ls .whl/*.whl >/dev/null 2>&1; then
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH=/tmp/site || exit 1
fi
export PYTHONUNBUFFERED=1 FES_AOTI_BUILD=0
export FES_FACE_MODEL=${FES_FACE_MODEL:-../shared/models/face_landmarker_v2_with_blendshapes.task}
DEVICE=${DEVICE:-$($PY -c 'import torch; print("cuda" if torch.cuda.is_available() else "cpu")')}
ENGINE=$($PY -c 'from fes_live.stream.engine import DEFAULT_ENGINE; print(DEFAULT_ENGINE)')
echo "gpu_check: device $DEVICE, engine $ENGINE, torch $($PY -c 'import torch; print(torch.__version__)')"
[ "$DEVICE" = cpu ] && STREAMS=${CPU_STREAMS:-4,8} && SECONDS_PER_N=${CPU_SECONDS:-6} && FEEDERS=1
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > "$OUT/gpu.txt"

# 1. engines for this device: AOTInductor packages from the exported programs (cached beside the engine)
t0=$(date +%s)
$PY -m fes_live.stream.engine_build "$ENGINE" --device "$DEVICE" > "$OUT/engine_build.log" 2>&1
build_rc=$?
build_s=$(( $(date +%s) - t0 ))
trt=$($PY -c 'import torch_tensorrt' 2>/dev/null && echo importable || echo "not installable here")

# 2. the GPU-marked tests (on a CPU machine they skip)
$PY -m pytest -q -m gpu tests > "$OUT/pytest_gpu.log" 2>&1
tests_rc=$?

# 3. scale: the real detector through real tcp sockets, feeders replaying recorded features at 30 fps
FEAT=${FEAT:-.whl/features_smile.npz}
[ -f "$FEAT" ] || { FEAT=$OUT/features_smile.npz; $PY -m fes_live.stream.cli extract \
  ../shared/data/video/pyfeat_single_face.mp4 -o "$FEAT" --no-progress > "$OUT/extract.log" 2>&1; }
$PY -m fes_live.benchmarks.run scale --streams "$STREAMS" --seconds "$SECONDS_PER_N" --feeders "$FEEDERS" \
  --backend auto --features "$FEAT" --json "$OUT/scale.json" > "$OUT/scale.log" 2>&1
scale_rc=$?
tail -n 8 "$OUT/scale.log"

$PY - "$OUT" "$DEVICE" "$build_rc" "$build_s" "$tests_rc" "$scale_rc" "$trt" <<'EOF'
import datetime, json, pathlib, sys
out, device, build_rc, build_s, tests_rc, scale_rc, trt = sys.argv[1:]
out = pathlib.Path(out)
scale = json.loads((out / "scale.json").read_text()) if (out / "scale.json").is_file() else None
gpu = (out / "gpu.txt").read_text().strip().splitlines()[-1] if (out / "gpu.txt").is_file() else None
tests = (out / "pytest_gpu.log").read_text().strip().splitlines()[-1:] if (out / "pytest_gpu.log").is_file() else []
report = {"date": datetime.date.today().isoformat(), "device": device, "gpu": gpu,
          "engine_build": {"rc": int(build_rc), "seconds": int(build_s)}, "tensorrt": trt,
          "gpu_tests": {"rc": int(tests_rc), "summary": tests}, "scale_rc": int(scale_rc),
          "largest_n_30fps": scale and scale["largest_n_30fps"], "ratio_to_ceiling": scale and scale["ratio_to_ceiling"],
          "model_ceiling": scale and scale["model_ceiling"], "stages": scale and scale["stages"],
          "results": scale and [{k: v for k, v in r.items() if k != "per_stream"} for r in scale["results"]]}
(out / "gpu_check.json").write_text(json.dumps(report, indent=2))
print(json.dumps({k: report[k] for k in ("device", "gpu", "engine_build", "tensorrt", "gpu_tests",
                                          "largest_n_30fps", "ratio_to_ceiling")}, indent=2))
EOF
