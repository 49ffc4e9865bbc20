"""What the loopback serving scripts in tests/deploy share: fixture reading, ports, plain HTTP
requests, polling, and copying the two plugins aside. Standard library only."""

import http.client as httplib
import json
import os
import shutil
import socket
import struct
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FIXTURE = os.path.join(ROOT, "tests", "fixtures", "sd_like")


def read_safetensors(path):
    """{name: (shape, [floats])} of an f32 safetensors file."""
    with open(path, "rb") as f:
        data = f.read()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + n])
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        assert info["dtype"] == "F32", (name, info["dtype"])
        start, end = info["data_offsets"]
        raw = data[8 + n + start : 8 + n + end]
        out[name] = (info["shape"], list(struct.unpack("<%df" % (len(raw) // 4), raw)))
    return out


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def http(port, method, path, body=None, timeout=60, headers=None):
    """(status, body bytes) of one request on a fresh connection."""
    conn = httplib.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        if headers is None:
            headers = {"Content-Type": "application/json"} if body is not None else {}
        conn.request(method, path, body=body, headers=headers)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def wait_until(what, check, limit_s=120):
    """Polls `check` until it is true; fails after `limit_s` (a hang, not a timing assertion)."""
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except OSError:
            pass
        time.sleep(0.05)
    sys.exit("gave up waiting for " + what)


def copy_plugins(plugin_dir, work):
    """A directory in `work` holding only librbln_npu.so and librbln_vae.so from `plugin_dir`
    (a build directory also holds test plugins that a plugin scan refuses)."""
    plugins = os.path.join(work, "plugins")
    os.makedirs(plugins)
    for lib in ("librbln_npu.so", "librbln_vae.so"):
        shutil.copy(os.path.join(plugin_dir, lib), plugins)
    return plugins


def close_to(got, want, bound):
    return len(got) == len(want) and all(abs(a - b) <= bound for a, b in zip(got, want))
