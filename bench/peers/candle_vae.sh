#!/usr/bin/env bash
# Peer benchmark: candle's Stable Diffusion VAE (candle-transformers) on the CPU.
#
# Usage (after `python3 bench/make_sd_vae.py`):
#
#     bash bench/peers/candle_vae.sh [DIR] [--runs N] [--threads T] [--no-check]
#
# Builds the standalone crate bench/peers/candle (release, `nice -n 15`, --locked, target dir
# $CARGO_TARGET_DIR, default bench/out/candle-target; the first build fetches the pinned crates
# from crates.io), then runs it on DIR (default bench/out/sd-vae-random) with
# RAYON_NUM_THREADS=CANDLE_NUM_THREADS=T (default 2). N defaults to 5.
# Unless --no-check, the binary writes DIR/candle_out/{enc,dec}.safetensors and
# bench/peers/check_outputs.py compares them with diffusers (PyTorch, 2 threads) on the same
# weights and inputs; the max |candle - PyTorch| of mean, logvar and sample is added to the JSON.
# Prints one JSON line on stdout:
# {"peer": "candle", "encode_s": ..., "decode_s": ..., "runs": N, "threads": T, "candle": "...",
#  "max_abs_diff": {"mean": ..., "logvar": ..., "sample": ...}, "ok": true}
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
dir="$root/bench/out/sd-vae-random"
runs=5
threads=2
check=1
while [ $# -gt 0 ]; do
  case "$1" in
    --runs) runs="$2"; shift 2 ;;
    --threads) threads="$2"; shift 2 ;;
    --no-check) check=0; shift ;;
    -h|--help) sed -n '2,17p' "$0"; exit 0 ;;
    -*) echo "unknown option $1" >&2; exit 2 ;;
    *) dir="$1"; shift ;;
  esac
done
[ -f "$dir/diffusion_pytorch_model.safetensors" ] || {
  echo "$dir has no diffusion_pytorch_model.safetensors: run bench/make_sd_vae.py first" >&2; exit 1; }

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$root/bench/out/candle-target}"
nice -n 15 cargo build --release --locked --quiet --manifest-path "$here/candle/Cargo.toml" >&2

export RAYON_NUM_THREADS="$threads" CANDLE_NUM_THREADS="$threads"
args=("$dir" --runs "$runs" --threads "$threads")
[ "$check" = 1 ] || args+=(--no-check)
line=$("$CARGO_TARGET_DIR/release/candle-vae-peer" "${args[@]}")
if [ "$check" = 0 ]; then
  echo "$line"
  exit 0
fi

report=$(python3 "$here/check_outputs.py" "$dir" "$dir/candle_out/enc.safetensors" \
  "$dir/candle_out/dec.safetensors")
echo "check vs diffusers: $report" >&2
python3 - "$line" "$report" <<'PY'
import json, sys
line, report = json.loads(sys.argv[1]), json.loads(sys.argv[2])
order = ["peer", "encode_s", "decode_s", "runs", "threads", "candle"]
line = {**{k: line[k] for k in order if k in line}, **line}
line["max_abs_diff"] = {name: r["max_abs_diff"] for name, r in report.items()}
line["ok"] = all(r["ok"] for r in report.values())
print(json.dumps(line))
PY
