"""tritonclient[http], unmodified, against `mlhost serve tests/python/serve-fixture.yaml`.

MLHOST_URL (host:port) names the server. Outputs are compared to tests/fixtures/sd_like/io.safetensors
(produced by diffusers) at the tolerance the Rust tests use: 1e-4 * max(1, max|ref|).
"""

import json
import os
import struct
import time
from pathlib import Path

import numpy as np
import pytest
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "sd_like" / "io.safetensors"


def read_safetensors(path):
    raw = path.read_bytes()
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


REF = read_safetensors(FIXTURE)


def assert_close(what, got, want):
    assert got.shape == want.shape, (what, got.shape, want.shape)
    tol = 1e-4 * max(1.0, float(np.abs(want).max()))
    worst = float(np.abs(got - want).max())
    assert worst <= tol, f"{what}: max abs diff {worst} > {tol}"


@pytest.fixture(scope="module")
def client():
    url = os.environ.get("MLHOST_URL", "127.0.0.1:8080")
    c = httpclient.InferenceServerClient(url=url)
    deadline = time.time() + 300
    while True:
        try:
            if c.is_server_ready():
                break
        except Exception:  # not listening yet
            pass
        assert time.time() < deadline, f"mlhost serve at {url} did not become ready"
        time.sleep(0.5)
    return c


def test_health_and_metadata(client):
    assert client.is_server_live()
    assert client.is_server_ready()
    meta = client.get_server_metadata()
    assert "binary_tensor_data" in meta["extensions"]
    assert client.is_model_ready("vae.decode")
    assert client.is_model_ready("vae.encode")
    assert not client.is_model_ready("vae.nope")
    m = client.get_model_metadata("vae.decode")
    assert m["inputs"] == [{"name": "z", "datatype": "FP32", "shape": [-1, 4, 8, 8]}]
    assert m["outputs"][0]["name"] == "sample"
    assert m["outputs"][0]["shape"] == [-1, 3, 32, 32]
    m = client.get_model_metadata("vae.encode", model_version="1")
    assert [o["name"] for o in m["outputs"]] == ["mean", "logvar"]


@pytest.mark.parametrize("binary", [True, False])
def test_decode(client, binary):
    z = REF["z"]
    inp = httpclient.InferInput("z", list(z.shape), "FP32")
    inp.set_data_from_numpy(z, binary_data=binary)
    out = httpclient.InferRequestedOutput("sample", binary_data=binary)
    result = client.infer("vae.decode", [inp], outputs=[out])
    assert_close("sample", result.as_numpy("sample"), REF["sample"])


@pytest.mark.parametrize("binary", [True, False])
def test_encode(client, binary):
    x = REF["x"]
    inp = httpclient.InferInput("x", list(x.shape), "FP32")
    inp.set_data_from_numpy(x, binary_data=binary)
    outs = [httpclient.InferRequestedOutput(n, binary_data=binary) for n in ("mean", "logvar")]
    result = client.infer("vae.encode", [inp], outputs=outs)
    assert_close("mean", result.as_numpy("mean"), REF["mean"])
    assert_close("logvar", result.as_numpy("logvar"), REF["logvar"])


def test_default_outputs_and_batch_larger_than_compiled(client):
    z = np.concatenate([REF["z"]] * 5)
    inp = httpclient.InferInput("z", list(z.shape), "FP32")
    inp.set_data_from_numpy(z)
    result = client.infer("vae.decode", [inp])
    sample = result.as_numpy("sample")
    assert sample.shape == (5, 3, 32, 32)
    for item in sample:
        assert_close("sample item", item[None], REF["sample"])


def test_errors_surface_as_exceptions(client):
    inp = httpclient.InferInput("x", [1, 4, 8, 8], "FP32")
    inp.set_data_from_numpy(REF["z"])
    with pytest.raises(InferenceServerException, match="no input `x`"):
        client.infer("vae.decode", [inp])
    with pytest.raises(InferenceServerException, match="unknown model"):
        client.infer("nope.decode", [inp])


def test_pipeline_png_in_png_out(client):
    png = (Path(__file__).resolve().parents[1] / "fixtures" / "pipelines" / "photo32.png").read_bytes()
    m = client.get_model_metadata("img2img")
    assert m["inputs"] == [{"name": "image", "datatype": "BYTES", "shape": [1]}]
    inp = httpclient.InferInput("image", [1], "BYTES")
    inp.set_data_from_numpy(np.array([png], dtype=np.object_), binary_data=True)
    outs = [
        httpclient.InferRequestedOutput("reconstruction", binary_data=True),
        httpclient.InferRequestedOutput("latents", binary_data=False),
    ]
    result = client.infer("img2img", [inp], outputs=outs)
    image = result.as_numpy("reconstruction")
    assert image.shape == (1,)
    assert bytes(image[0])[:8] == b"\x89PNG\r\n\x1a\n"
    assert result.as_numpy("latents").shape == (1, 4, 8, 8)
    bad = httpclient.InferInput("image", [1], "BYTES")
    bad.set_data_from_numpy(np.array([b"not an image"], dtype=np.object_), binary_data=True)
    with pytest.raises(InferenceServerException, match="not a PNG or JPEG"):
        client.infer("img2img", [bad])
