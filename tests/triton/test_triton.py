"""tritonclient[http] against a real tritonserver running the rbln backend (tests/triton/run.sh).

Environment (set by run.sh): TRITON_HTTP and TRITON_METRICS (host:port), TRITON_LOG (the server
log), MLHOST (the mlhost binary), MLHOST_PLUGIN_DIR, COMPILED (the compiled sd_like model that the
repository serves). Outputs are compared bit for bit with `mlhost run` on the same compiled model,
and with tests/fixtures/sd_like/io.safetensors (diffusers) at 1e-4 * max(1, max|ref|).
"""

import json
import os
import re
import struct
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

ROOT = Path(__file__).resolve().parents[2]
HTTP = os.environ.get("TRITON_HTTP", "127.0.0.1:8000")
METRICS = os.environ.get("TRITON_METRICS", "127.0.0.1:8002")
SERVED = ["vae_encode", "vae_decode", "vae_decode_batched", "vae_decode_diffusers", "vae_decode_explicit"]


def read_safetensors(path):
    raw = Path(path).read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + n])
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        assert info["dtype"] == "F32", (name, info["dtype"])
        start, end = info["data_offsets"]
        data = np.frombuffer(raw[8 + n + start : 8 + n + end], dtype="<f4")
        out[name] = data.reshape(info["shape"]).astype(np.float32)
    return out


def write_safetensors(path, tensors):
    header, blobs, at = {}, [], 0
    for name, a in tensors.items():
        b = np.ascontiguousarray(a, dtype="<f4").tobytes()
        header[name] = {"dtype": "F32", "shape": list(a.shape), "data_offsets": [at, at + len(b)]}
        blobs.append(b)
        at += len(b)
    h = json.dumps(header).encode()
    h += b" " * (-len(h) % 8)
    Path(path).write_bytes(struct.pack("<Q", len(h)) + h + b"".join(blobs))


REF = read_safetensors(ROOT / "tests" / "fixtures" / "sd_like" / "io.safetensors")


def four(a):
    """Four different items from the fixture's one: a full compiled batch."""
    return np.concatenate([a, 0.5 * a, -a, a[..., ::-1]]).astype(np.float32)


X4 = four(REF["x"])
Z4 = four(REF["z"])


def assert_close(what, got, want):
    assert got.shape == want.shape, (what, got.shape, want.shape)
    tol = 1e-4 * max(1.0, float(np.abs(want).max()))
    worst = float(np.abs(got - want).max())
    assert worst <= tol, f"{what}: max abs diff {worst} > {tol}"


def assert_identical(what, got, want):
    assert got.dtype == np.float32 and got.shape == want.shape, (what, got.dtype, got.shape, want.shape)
    assert got.tobytes() == want.tobytes(), f"{what}: not bit-identical (max abs diff {np.abs(got - want).max()})"


def mlhost_run(method, array, tmp_path):
    src, dst = tmp_path / f"{method}-in.safetensors", tmp_path / f"{method}-out.safetensors"
    write_safetensors(src, {"x" if method == "encode" else "z": array})
    subprocess.run(
        [os.environ["MLHOST"], "run", os.environ["COMPILED"], "--method", method,
         "--input", str(src), "--output", str(dst)],
        check=True, capture_output=True,
    )
    return read_safetensors(dst)


def index(c):
    try:
        return c.get_model_repository_index()
    except Exception:  # not listening yet
        return []


@pytest.fixture(scope="module")
def client():
    c = httpclient.InferenceServerClient(url=HTTP, concurrency=8)
    deadline = time.time() + 600
    while True:
        try:
            if c.is_server_live() and all(c.is_model_ready(m) for m in SERVED):
                break
        except Exception:  # not listening yet
            pass
        assert time.time() < deadline, f"tritonserver at {HTTP} did not load {SERVED}"
        if any(m["name"] in SERVED and m.get("state") == "UNAVAILABLE" for m in index(c)):
            pytest.fail(f"a model failed to load: {index(c)}")
        time.sleep(0.5)
    return c


@pytest.fixture(scope="module")
def run_ref(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("mlhost")
    return {"encode": mlhost_run("encode", X4, tmp), "decode": mlhost_run("decode", Z4, tmp)}


def infer(client, model, name, array, outputs, binary=True):
    inp = httpclient.InferInput(name, list(array.shape), "FP32")
    inp.set_data_from_numpy(array, binary_data=binary)
    outs = [httpclient.InferRequestedOutput(o, binary_data=binary) for o in outputs]
    result = client.infer(model, [inp], outputs=outs)
    return {o: result.as_numpy(o) for o in outputs}


def test_config_is_completed_from_the_compiled_model(client):
    cfg = client.get_model_config("vae_decode")
    assert cfg["backend"] == "rbln"
    assert cfg["max_batch_size"] == 4
    assert [(i["name"], i["data_type"], [int(d) for d in i["dims"]]) for i in cfg["input"]] == [
        ("z", "TYPE_FP32", [4, 8, 8])
    ]
    assert [(o["name"], [int(d) for d in o["dims"]]) for o in cfg["output"]] == [("sample", [3, 32, 32])]
    meta = client.get_model_metadata("vae_encode")
    assert meta["inputs"] == [{"name": "x", "datatype": "FP32", "shape": [-1, 3, 32, 32]}]
    assert [(o["name"], o["shape"]) for o in meta["outputs"]] == [
        ("mean", [-1, 4, 8, 8]),
        ("logvar", [-1, 4, 8, 8]),
    ]


@pytest.mark.parametrize("binary", [True, False])
def test_encode_and_decode_equal_mlhost_run_and_diffusers(client, run_ref, binary):
    enc = infer(client, "vae_encode", "x", X4, ["mean", "logvar"], binary)
    for name in ("mean", "logvar"):
        assert_identical(f"encode {name}", enc[name], run_ref["encode"][name])
        assert_close(f"encode {name} vs diffusers", enc[name][:1], REF[name])
    dec = infer(client, "vae_decode", "z", Z4, ["sample"], binary)
    assert_identical("decode sample", dec["sample"], run_ref["decode"]["sample"])
    assert_close("decode sample vs diffusers", dec["sample"][:1], REF["sample"])


@pytest.mark.parametrize("items", [1, 3])
def test_a_partial_batch_gets_only_its_own_rows(client, run_ref, items):
    dec = infer(client, "vae_decode", "z", Z4[:items], ["sample"])
    assert dec["sample"].shape == (items, 3, 32, 32)
    assert_identical(f"decode of {items}", dec["sample"], run_ref["decode"]["sample"][:items])
    enc = infer(client, "vae_encode", "x", X4[1 : 1 + items], ["logvar"])
    assert_identical(f"encode of {items}", enc["logvar"], run_ref["encode"]["logvar"][1 : 1 + items])


def test_a_diffusers_directory_compiled_at_load(client, run_ref):
    dec = infer(client, "vae_decode_diffusers", "z", Z4, ["sample"])
    assert_identical("decode (compiled at load)", dec["sample"], run_ref["decode"]["sample"])


def test_an_explicit_configuration_is_served_as_written(client, run_ref):
    cfg = client.get_model_config("vae_decode_explicit")
    assert cfg["max_batch_size"] == 2
    dec = infer(client, "vae_decode_explicit", "z", Z4[2:], ["sample"])
    assert_identical("explicit config", dec["sample"], run_ref["decode"]["sample"][2:])
    with pytest.raises(InferenceServerException) as e:
        infer(client, "vae_decode_explicit", "z", Z4[:3], ["sample"])
    assert e.value.status() == "400", e.value


def batch_stats(client, model):
    stats = client.get_inference_statistics(model)["model_stats"]
    (s,) = [s for s in stats if s["name"] == model]
    return s, {int(b["batch_size"]): int(b["compute_infer"]["count"]) for b in s.get("batch_stats", [])}


def test_dynamic_batching_merges_concurrent_requests(client):
    items = [(REF["z"] * (0.25 * k - 1.0)).astype(np.float32) for k in range(8)]
    alone = [infer(client, "vae_decode", "z", z, ["sample"])["sample"] for z in items]
    before, _ = batch_stats(client, "vae_decode_batched")
    pending = []
    for z in items:
        inp = httpclient.InferInput("z", list(z.shape), "FP32")
        inp.set_data_from_numpy(z)
        pending.append(client.async_infer("vae_decode_batched", [inp]))
    got = [p.get_result().as_numpy("sample") for p in pending]
    for k, (g, a) in enumerate(zip(got, alone)):
        assert_identical(f"batched request {k}", g, a)
    s, sizes = batch_stats(client, "vae_decode_batched")
    assert int(s["inference_count"]) - int(before["inference_count"]) == 8
    assert sum(size * count for size, count in sizes.items()) == int(s["inference_count"])
    assert any(size > 1 and count > 0 for size, count in sizes.items()), sizes
    assert int(s["execution_count"]) - int(before["execution_count"]) < 8, s


def metric(text, name, model):
    m = re.search(rf'^{name}{{[^}}]*model="{model}"[^}}]*}} (\S+)$', text, re.M)
    return float(m.group(1)) if m else 0.0


def scrape():
    with urllib.request.urlopen(f"http://{METRICS}/metrics", timeout=10) as r:
        return r.read().decode()


def test_metrics_count_our_requests(client):
    names = ("nv_inference_request_success", "nv_inference_exec_count", "nv_inference_count")
    before = scrape()
    for k in range(3):
        infer(client, "vae_encode", "x", X4[k : k + 1], ["mean"])
    want = {n: metric(before, n, "vae_encode") + 3 for n in names}
    deadline = time.time() + 10
    while True:
        after = scrape()
        got = {n: metric(after, n, "vae_encode") for n in names}
        if got == want or time.time() > deadline:
            break
        time.sleep(0.5)
    assert got == want


def test_broken_models_fail_to_load_with_our_error_and_the_rest_serve(client):
    index = {m["name"]: m for m in client.get_model_repository_index()}
    expect = {
        "broken_artifact": 'rbln backend: model "broken_artifact"',
        "bad_method": 'rbln backend: model "bad_method": parameter "method" is "roundtrip"; '
        'it must be "encode" or "decode"',
        "batch_too_big": 'rbln backend: model "batch_too_big": config.pbtxt: max_batch_size is 8; '
        "it must be between 1 and the compiled batch_size 4",
    }
    log = Path(os.environ["TRITON_LOG"]).read_text(errors="replace")
    for name, text in expect.items():
        assert index[name].get("state") == "UNAVAILABLE", index[name]
        assert text in index[name].get("reason", ""), index[name]
        assert text in log, f"{text!r} not in the server log"
        assert not client.is_model_ready(name)
    # The damaged artifact is named by what the plugin found wrong with it.
    assert "decoder.rbln" in index["broken_artifact"]["reason"], index["broken_artifact"]
    for name in SERVED:
        assert client.is_model_ready(name)


def post(model, body):
    req = urllib.request.Request(
        f"http://{HTTP}/v2/models/{model}/infer", data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"{}")


@pytest.mark.parametrize(
    "shape,datatype",
    [([1, 4, 8, 9], "FP32"), ([1, 4, 8], "FP32"), ([5, 4, 8, 8], "FP32"), ([1, 4, 8, 8], "FP64")],
)
def test_a_wrong_request_is_http_400(client, shape, datatype):
    n = int(np.prod(shape))
    body = {"inputs": [{"name": "z", "shape": shape, "datatype": datatype, "data": [0.0] * n}]}
    status, reply = post("vae_decode", body)
    assert status == 400, (status, reply)
    assert reply.get("error"), reply
    inp = httpclient.InferInput("z", shape, datatype)
    inp.set_data_from_numpy(np.zeros(shape, np.float64 if datatype == "FP64" else np.float32))
    with pytest.raises(InferenceServerException) as e:
        client.infer("vae_decode", [inp])
    assert e.value.status() == "400", e.value
