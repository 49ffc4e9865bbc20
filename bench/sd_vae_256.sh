#!/usr/bin/env bash
# SD-size VAE (block_out_channels [128,256,512,512], random weights) at 256x256 through `mlhost`:
# compile once, then encode and decode RUNS times each under /usr/bin/time -v; prints the median
# wall time and the largest peak RSS of each command. Optionally (PEER=1) runs diffusers on the
# same weights and inputs in the same session and checks our outputs against it.
#
#   bash bench/sd_vae_256.sh            # RUNS=3 by default
#   RUNS=5 PEER=1 bash bench/sd_vae_256.sh
#
# Needs: python3 with tests/fixtures/requirements.txt (only to create the random model once and
# for PEER=1). Check that nothing else is running first (cat /proc/loadavg); the machines are
# shared and noisy.
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-3}
MODEL=bench/out/sd-vae-random
OUT=bench/out/run
mkdir -p "$OUT"
[ -f "$MODEL/diffusion_pytorch_model.safetensors" ] || python3 bench/make_sd_vae.py "$MODEL"
cargo build --release -p mlhost -p rbln-npu -p rbln-vae >/dev/null 2>&1
MLHOST=target/release/mlhost

measure() { # label, command...
  local label=$1; shift
  local times=() rss=0
  for i in $(seq "$RUNS"); do
    /usr/bin/time -v "$@" >/dev/null 2>"$OUT/time.txt" || { cat "$OUT/time.txt"; exit 1; }
    local wall kb
    wall=$(awk -F': ' '/Elapsed \(wall clock\)/ {n=split($2,a,":"); s=0; for(j=1;j<=n;j++) s=s*60+a[j]; print s}' "$OUT/time.txt")
    kb=$(awk -F': ' '/Maximum resident set size/ {print $2}' "$OUT/time.txt")
    times+=("$wall"); [ "$kb" -gt "$rss" ] && rss=$kb
  done
  local median
  median=$(printf '%s\n' "${times[@]}" | sort -g | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}')
  printf '%-8s median %6.2f s over %d runs (%s), peak RSS %d MiB\n' "$label" "$median" "$RUNS" "${times[*]}" $((rss / 1024))
}

echo "commit $(git rev-parse --short HEAD), $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), load $(cut -d' ' -f1-3 /proc/loadavg)"
RUNS_SAVED=$RUNS; RUNS=1
measure compile $MLHOST compile "$MODEL" -o "$OUT/compiled" --uses-encoder --sample-size 256
RUNS=$RUNS_SAVED
measure encode $MLHOST run "$OUT/compiled" --method encode --input "$MODEL/encode_in.safetensors" --output "$OUT/enc.safetensors"
measure decode $MLHOST run "$OUT/compiled" --method decode --input "$MODEL/decode_in.safetensors" --output "$OUT/dec.safetensors"

if [ "${PEER:-0}" = 1 ]; then
  python3 bench/peers/pytorch_vae.py "$MODEL" --runs "$RUNS" --threads 2
  python3 bench/peers/check_outputs.py "$MODEL" "$OUT/enc.safetensors" "$OUT/dec.safetensors"
fi
