#!/usr/bin/env bash
# The GPU checks of issue #19, in one go, on a machine with CUDA and torch (and no registry):
# the gpu/tensorrt-marked tests, benchmarks.gpu_engines, and `perception bench` with torch on
# CUDA on KITTI and on the synthetic drive. Results go to $OUT (default: gpu-out/).
#
#   WHEELS=.whl DATA=../shared/data bash benchmarks/gpu_run.sh
#
# WHEELS: a folder of wheels the machine lacks (pyzmq, pymap3d, mcap, ... and onnx2torch, which
# converts the camera detector to torch), installed into /tmp/site; DATA: the shared data folder.
set -u
OUT=${OUT:-gpu-out}
DATA=${DATA:-../shared/data}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
if [ -n "${WHEELS:-}" ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site "$WHEELS"/*.whl || exit 1
  export PYTHONPATH="$PWD:/tmp/site"
else
  export PYTHONPATH="$PWD"
fi
export PERCEPTION_DATA="$DATA"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
python3 -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda)'

echo "== gpu and tensorrt tests"
timeout 150 python3 -m pytest -q -p no:cacheprovider -m "gpu or tensorrt" tests/engines \
  2>&1 | tee "$OUT/tests.log" | tail -15

echo "== engines and whole frame"
timeout 240 python3 -W ignore -m benchmarks.gpu_engines --data "$DATA" --out "$OUT" 2>&1 \
  | grep -v '^[a-z_]* {' | tail -60

model="$DATA/camera_detector/yolox_nano_coco_416.onnx"
for drive in kitti synth; do
  echo "== perception bench ($drive), torch on cuda"
  args=()
  [ "$drive" = kitti ] && args=("$DATA/kitti_object" --model "$model")
  timeout 180 python3 -W ignore -m app.cli bench "${args[@]}" --backend torch --device cuda \
    --duration "${BENCH_S:-20}" --out "/tmp/bench-$drive" --quiet 2>&1 | tail -40
  cp "/tmp/bench-$drive/bench.json" "$OUT/bench-$drive.json"
  cp "/tmp/bench-$drive/bench.md" "$OUT/bench-$drive.md"
done
