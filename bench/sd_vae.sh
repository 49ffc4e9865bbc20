#!/usr/bin/env bash
# The SD-VAE benchmark harness: for each image size, compiles the SD-size random VAE with mlhost,
# times encode and decode in process (`mlhost bench`: load once, warm-up, median of RUNS), checks
# the outputs against diffusers, measures the peak RSS of a process that loads the compiled
# model and decodes once, and runs the peers (diffusers/PyTorch, ONNX Runtime, candle) on the
# same weights and inputs in the same session (OpenVINO in f32 and in its default precision, which
# is bfloat16 on CPUs with AVX512_BF16 or AMX). Prints one summary table with ratios at the end
# and writes every raw result to bench/out/results/.
#
#   bash bench/sd_vae.sh                    # SIZES="256 512" RUNS=5 PEERS="pytorch ort candle"
#   PEERS="pytorch ort openvino" bash bench/sd_vae.sh
#   SIZES=256 RUNS=5 PEERS=pytorch bash bench/sd_vae.sh
#
# Needs python3 with tests/fixtures/requirements.txt (torch, diffusers) for the model, the
# inputs, the check and the PyTorch peer; `pip install -r bench/peers/requirements-ort.txt` for
# ORT, `pip install -r bench/peers/requirements-openvino.txt` for OpenVINO; crates.io for the
# candle peer's first build. Check that nothing else runs first (cat /proc/loadavg): the
# machines are shared and noisy. CANDLE_RUNS (default: RUNS at 256, 1 at larger sizes, where
# one candle decode takes over a minute) sets candle's runs.
set -euo pipefail
cd "$(dirname "$0")/.."
SIZES=${SIZES:-256 512}
RUNS=${RUNS:-5}
THREADS=${THREADS:-2}
PEERS=${PEERS:-pytorch ort candle}
BASE=bench/out/sd-vae-random
RES=bench/out/results
mkdir -p "$RES" bench/out/run
[ -f "$BASE/diffusion_pytorch_model.safetensors" ] || python3 bench/make_sd_vae.py "$BASE"
cargo build --release --locked -p mlhost -p rbln-npu -p rbln-vae >/dev/null 2>&1
MLHOST="target/release/mlhost --plugin-dir target/release"
commit=$(git rev-parse --short HEAD)
echo "commit $commit, $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), load $(cut -d' ' -f1-3 /proc/loadavg)"
target/release/examples/fma_peak "$THREADS" 2>/dev/null | tail -1 |
  tee "$RES/fma_peak.txt" || cargo run --release -q -p rbln-npu --example fma_peak -- "$THREADS" | tail -1 | tee "$RES/fma_peak.txt"

wall_rss() { # out_file, command...: wall seconds and peak RSS (KiB) of one process
  local out=$1; shift
  /usr/bin/time -v "$@" >/dev/null 2>"$out.time" || { cat "$out.time"; exit 1; }
  awk -F': ' '/Elapsed \(wall clock\)/ {n=split($2,a,":"); s=0; for(j=1;j<=n;j++) s=s*60+a[j]; w=s}
              /Maximum resident set size/ {r=$2} END {printf "{\"wall_s\": %s, \"rss_kib\": %s}\n", w, r}' \
    "$out.time" >"$out"
}

for S in $SIZES; do
  dir=$BASE
  if [ "$S" != 256 ]; then
    dir=$BASE-$S
    python3 bench/make_inputs.py "$BASE" "$dir" "$S"
  fi
  out=bench/out/run/compiled-$S
  echo "== $S x $S"
  start=$(date +%s.%N)
  $MLHOST compile "$dir" -o "$out" --uses-encoder --sample-size "$S" >/dev/null 2>&1
  # awk's printf keeps the leading zero that bc drops (`.81` is not JSON).
  echo "{\"compile_s\": $(awk -v a="$start" -v b="$(date +%s.%N)" 'BEGIN {printf "%.3f", b - a}')}" >"$RES/ours-$S-compile.json"
  for m in encode decode; do
    $MLHOST bench "$out" --method $m --runs "$RUNS" --warmup 1 --threads "$THREADS" --json \
      >"$RES/ours-$S-$m.json"
  done
  $MLHOST run "$out" --method encode --input "$dir/encode_in.safetensors" --output "$RES/ours-$S-enc.safetensors" >/dev/null
  wall_rss "$RES/ours-$S-decode-process.json" \
    $MLHOST run "$out" --method decode --input "$dir/decode_in.safetensors" --output "$RES/ours-$S-dec.safetensors"
  python3 bench/peers/check_outputs.py "$dir" "$RES/ours-$S-enc.safetensors" "$RES/ours-$S-dec.safetensors" 2e-3 \
    >"$RES/ours-$S-check.json"
  for peer in $PEERS; do
    case $peer in
      pytorch)
        python3 bench/peers/pytorch_vae.py "$dir" --runs "$RUNS" --threads "$THREADS" >"$RES/pytorch-$S.json"
        wall_rss "$RES/pytorch-$S-decode-process.json" \
          python3 bench/peers/pytorch_vae.py "$dir" --runs 1 --threads "$THREADS" --only decode ;;
      ort)
        python3 bench/peers/onnxruntime_vae.py "$dir" --runs "$RUNS" --threads "$THREADS" --size "$S" \
          | tail -1 >"$RES/ort-$S.json" ;;
      openvino)
        python3 bench/peers/openvino_vae.py "$dir" --runs "$RUNS" --threads "$THREADS" --size "$S" \
          --precision both >"$RES/openvino-both-$S.jsonl"
        grep '"peer": "openvino"' "$RES/openvino-both-$S.jsonl" >"$RES/openvino-$S.json"
        grep '"peer": "openvino-default"' "$RES/openvino-both-$S.jsonl" >"$RES/openvino-default-$S.json" ;;
      candle)
        cr=${CANDLE_RUNS:-$([ "$S" = 256 ] && echo "$RUNS" || echo 1)}
        bash bench/peers/candle_vae.sh "$dir" --runs "$cr" --threads "$THREADS" | tail -1 >"$RES/candle-$S.json" ;;
      *) echo "unknown peer $peer" >&2; exit 2 ;;
    esac
  done
done
python3 bench/summarize.py "$RES" $SIZES
