#!/usr/bin/env bash
# The rbln Triton backend in a real NVIDIA Triton Inference Server (CPU only): fetches Triton from
# the nvidia-pytriton wheel (cached under target/), builds the backend and the plugins, compiles
# the sd_like fixture, writes a model repository, starts tritonserver on loopback, runs
# tests/triton/test_triton.py with tritonclient[http], and stops the server.
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$PWD

cache=target/triton
work=target/triton/run
wheel_ver=0.7.0
mkdir -p "$cache"

echo "== triton: tritonclient[http] venv"
venv=target/tritonclient-venv
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
"$venv/bin/pip" install -q --disable-pip-version-check "tritonclient[http]==2.73.0" "numpy<3" "pytest==8.3.5"

echo "== triton: wheel nvidia-pytriton==$wheel_ver"
if ! ls "$cache"/nvidia_pytriton-"$wheel_ver"-*.whl >/dev/null 2>&1; then
  "$venv/bin/pip" download -q --disable-pip-version-check --no-deps -d "$cache" "nvidia-pytriton==$wheel_ver"
fi
server="$cache/wheel/pytriton/tritonserver/bin/tritonserver"
if [ ! -x "$server" ]; then
  rm -rf "$cache/wheel"
  # Keep pytriton/tritonserver/ and nvidia_pytriton.libs/ at their relative places: the server
  # finds its bundled libraries through them.
  python3 -m zipfile -e "$cache"/nvidia_pytriton-"$wheel_ver"-*.whl "$cache/wheel"
  chmod +x "$cache/wheel/pytriton/tritonserver/bin/"*
fi

echo "== triton: build the backend, the plugins and mlhost"
cargo build --workspace --locked  # as .ci/run does, so this is a no-op there
mlhost=target/debug/mlhost

rm -rf "$work"
mkdir -p "$work/backends/rbln" "$work/repo"
cp target/debug/libtriton_rbln.so target/debug/librbln_npu.so target/debug/librbln_vae.so "$work/backends/rbln/"

echo "== triton: compile tests/fixtures/sd_like (batch 4, 32x32, with encoder)"
# The plugin files, not target/debug: it also holds a test plugin built for another plugin-api.
"$mlhost" --plugin-dir target/debug/librbln_npu.so --plugin-dir target/debug/librbln_vae.so compile tests/fixtures/sd_like -o "$work/compiled" \
  --uses-encoder --batch-size 4 --sample-size 32

repo="$root/$work/repo"
model() { # name, config.pbtxt body, [version dir source]
  mkdir -p "$repo/$1"
  printf '%s\n' "$2" >"$repo/$1/config.pbtxt"
  if [ -n "${3:-}" ]; then cp -r "$3" "$repo/$1/1"; fi
}
param() { printf 'parameters { key: "%s" value { string_value: "%s" } }' "$1" "$2"; }

# Only backend and parameters: inputs, outputs and max_batch_size come from the compiled model.
model vae_encode "backend: \"rbln\"
$(param method encode)" "$work/compiled"
model vae_decode "backend: \"rbln\"
$(param method decode)" "$work/compiled"
model vae_decode_batched "backend: \"rbln\"
$(param method decode)
dynamic_batching { max_queue_delay_microseconds: 300000 }
instance_group [{ kind: KIND_CPU, count: 1 }]" "$work/compiled"
# Written out in full (no auto-completion needed), with a smaller max_batch_size.
model vae_decode_explicit "backend: \"rbln\"
max_batch_size: 2
input [{ name: \"z\", data_type: TYPE_FP32, dims: [4, 8, 8] }]
output [{ name: \"sample\", data_type: TYPE_FP32, dims: [3, 32, 32] }]
$(param method decode)" "$work/compiled"
# A diffusers directory compiled at load.
model vae_decode_diffusers "backend: \"rbln\"
$(param method decode)
$(param model_dir "$root/tests/fixtures/sd_like")
$(param rbln_config '{\"batch_size\": 4, \"sample_size\": 32}')"
mkdir -p "$repo/vae_decode_diffusers/1"  # Triton wants a version directory; the model is elsewhere
# Broken: a damaged decoder artifact, and a bad method parameter.
model broken_artifact "backend: \"rbln\"
$(param method decode)" "$work/compiled"
python3 - "$repo/broken_artifact/1/decoder.rbln" <<'PY'
import sys
p = sys.argv[1]
data = bytearray(open(p, "rb").read())
data[len(data) // 2] ^= 0xFF
open(p, "wb").write(bytes(data))
PY
model batch_too_big "backend: \"rbln\"
max_batch_size: 8
$(param method decode)" "$work/compiled"
model bad_method "backend: \"rbln\"
$(param method roundtrip)" "$work/compiled"


free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
http_port=$(free_port)
metrics_port=$(free_port)
while [ "$metrics_port" = "$http_port" ]; do metrics_port=$(free_port); done
log="$work/tritonserver.log"

echo "== triton: tritonserver on 127.0.0.1:$http_port (metrics $metrics_port)"
"$server" --model-repository "$repo" --backend-directory "$root/$work/backends" \
  --http-address 127.0.0.1 --http-port "$http_port" \
  --metrics-address 127.0.0.1 --metrics-port "$metrics_port" \
  --allow-grpc false --exit-on-error false --strict-readiness false \
  >"$log" 2>&1 &
server_pid=$!
trap 'kill "$server_pid" 2>/dev/null || true' EXIT

status=0
TRITON_HTTP="127.0.0.1:$http_port" TRITON_METRICS="127.0.0.1:$metrics_port" TRITON_LOG="$log" \
  MLHOST="$root/$mlhost" MLHOST_PLUGIN_DIR="$root/target/debug/librbln_npu.so:$root/target/debug/librbln_vae.so" COMPILED="$root/$work/compiled" \
  "$venv/bin/python" -m pytest -q tests/triton/test_triton.py || status=$?

kill -TERM "$server_pid"
wait "$server_pid" || { echo "tritonserver exited non-zero on SIGTERM"; status=1; }
trap - EXIT
if [ "$status" != 0 ]; then
  echo "Triton test failed; server log ($log):"
  cat "$log"
  exit "$status"
fi
