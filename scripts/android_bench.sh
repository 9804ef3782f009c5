#!/usr/bin/env bash
# Benchmark an edgesdk Android bundle on a phone with TFLite's benchmark_model, over adb.
#
#   scripts/android_bench.sh BUNDLE [--delegate nnapi|gpu|xnnpack] [--threads N] [--runs N] [--seq L]
#
# Pushes BUNDLE/model.tflite to /data/local/tmp/edgesdk/ and runs benchmark_model with the delegate's flags on the
# signature seq_L (one static [1, L] int32 signature per bucket, see manifest target.settings.buckets; default the
# largest), so benchmark_model takes the shapes from the model and fills the ids with small random ints.
# Without --delegate, the first delegate of the manifest's preference (target.delegates) is used.
# Needs: adb with one device attached, and benchmark_model for the phone's ABI pushed to
# /data/local/tmp/benchmark_model (prebuilt android_aarch64_benchmark_model from the LiteRT/TFLite
# releases, or bazel build -c opt --config=android_arm64 //tensorflow/lite/tools/benchmark:benchmark_model),
# or BENCHMARK_MODEL=/path/on/device. It cannot run on the export workstation or in CI (no phone, no adb there);
# `edgesdk bench BUNDLE` measures the same bundle on the host CPU (XNNPACK).
set -euo pipefail

usage() { sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'; exit 2; }
[ $# -ge 1 ] || usage
BUNDLE=$1; shift
DELEGATE="" THREADS=4 RUNS=100 SEQ=""
while [ $# -gt 0 ]; do
  case "$1" in
    --delegate) DELEGATE=$2; shift 2 ;;
    --threads) THREADS=$2; shift 2 ;;
    --runs) RUNS=$2; shift 2 ;;
    --seq) SEQ=$2; shift 2 ;;
    -h|--help) usage ;;
    *) echo "unknown argument: $1" >&2; usage ;;
  esac
done
[ -f "$BUNDLE/manifest.json" ] || { echo "$BUNDLE is not an edgesdk bundle (no manifest.json)" >&2; exit 2; }
command -v adb >/dev/null || { echo "adb not found: install Android platform-tools and attach a phone" >&2; exit 2; }
command -v python3 >/dev/null || { echo "python3 is needed to read the manifest" >&2; exit 2; }

# One line from the manifest: backend, preferred delegate, model shape and the --input_layer* flags.
read -r BACKEND PREFERRED LAYERS BUCKETS < <(python3 - "$BUNDLE/manifest.json" <<'EOF'
import json, sys
m = json.load(open(sys.argv[1]))
t = m["target"]
s = t.get("settings", {})
names = [i["name"] for i in m["inputs"]]
print(t["backend"], (s.get("delegates") or ["xnnpack"])[0], ",".join(names),
      ",".join(str(b) for b in s.get("buckets") or [128]))
EOF
)
SEQ=${SEQ:-${BUCKETS##*,}}
case ",$BUCKETS," in *",$SEQ,"*) ;; *) echo "--seq $SEQ is not a bucket of this bundle ($BUCKETS)" >&2; exit 2 ;; esac
[ "$BACKEND" = "tflite" ] || { echo "$BUNDLE is a $BACKEND bundle, not tflite (Android)" >&2; exit 2; }
DELEGATE=${DELEGATE:-$PREFERRED}
case "$DELEGATE" in
  nnapi)   FLAGS="--use_nnapi=true --nnapi_allow_fp16=false" ;;
  gpu)     FLAGS="--use_gpu=true --gpu_precision_loss_allowed=true" ;;
  xnnpack) FLAGS="--use_xnnpack=true" ;;
  *) echo "unknown delegate '$DELEGATE'; use nnapi, gpu or xnnpack" >&2; exit 2 ;;
esac

DEVICE_DIR=/data/local/tmp/edgesdk
BENCH=${BENCHMARK_MODEL:-/data/local/tmp/benchmark_model}
adb shell "test -x $BENCH" || { echo "no benchmark_model at $BENCH on the device (see the header)" >&2; exit 2; }
adb shell mkdir -p "$DEVICE_DIR"
adb push "$BUNDLE/model.tflite" "$DEVICE_DIR/model.tflite" >/dev/null
MODEL=$(adb shell getprop ro.product.model | tr -d '\r')
echo "device: $MODEL  android $(adb shell getprop ro.build.version.release | tr -d '\r')"
echo "bundle: $BUNDLE  delegate: $DELEGATE  threads: $THREADS  inputs: $LAYERS [1, $SEQ] (signature seq_$SEQ)"
# shellcheck disable=SC2086
adb shell "$BENCH" --graph="$DEVICE_DIR/model.tflite" --num_threads="$THREADS" --num_runs="$RUNS" \
  --warmup_runs=10 --enable_op_profiling=false --signature_to_run_for_benchmark="seq_$SEQ" $FLAGS
