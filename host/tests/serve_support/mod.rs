//! Helpers for the `mlhost serve` tests: start a server on a free loopback port with a manifest
//! serving the sd_like fixture, and talk to it over HTTP.
#![allow(dead_code)]

#[path = "../support/mod.rs"]
mod support;

pub use support::*;

use serde_json::{json, Value};
use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// The sd_like fixture directory (diffusers checkpoint + io.safetensors).
pub fn fixture_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/sd_like")
}

/// A tensor of the fixture's io.safetensors: (shape, data).
pub fn fixture(name: &str) -> (Vec<usize>, Vec<f32>) {
    let t = mlhost::io::read_safetensors(&fixture_dir().join("io.safetensors"), name)
        .expect("read the fixture");
    t.into_parts()
}

/// Asserts `got` matches `want` within the tolerance 1e-4 * max(1, max|want|).
pub fn assert_close(what: &str, got: &[f32], want: &[f32]) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let scale = want.iter().fold(1.0f32, |m, v| m.max(v.abs()));
    let worst = got
        .iter()
        .zip(want)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    assert!(worst <= 1e-4 * scale, "{what}: max abs diff {worst}");
}

/// A running `mlhost serve`, killed on drop.
pub struct Server {
    /// The process.
    pub child: Child,
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    /// Standard error lines after start-up.
    pub lines: std::sync::Mutex<mpsc::Receiver<String>>,
    /// Standard error lines up to and including the ready line.
    pub startup: Vec<String>,
    /// Keeps the manifest and plugin copies alive.
    pub _dirs: Vec<TempDir>,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Writes a manifest serving the sd_like fixture as `vae` with `serving` options.
pub fn fixture_manifest(dir: &Path, serving: &str) -> PathBuf {
    let text = format!(
        "plugins: [rbln_npu, rbln_vae]\nmodels:\n  - name: vae\n    class: RBLNAutoencoderKL\n    \
         model_id: {}\n    export: true\n    rbln_config: {{batch_size: 4, uses_encoder: true, \
         sample_size: 32}}\n    serving: {serving}\n",
        fixture_dir().display()
    );
    let file = dir.join("serve.yaml");
    std::fs::write(&file, text).expect("write the manifest");
    file
}

/// Starts `mlhost serve` with `args` (plugins from a temporary copy) and waits until ready.
pub fn start(args: &[&str], dirs: Vec<TempDir>) -> Server {
    start_with_env(args, dirs, &[])
}

/// Like [`start`], with extra environment variables for the server.
pub fn start_with_env(args: &[&str], dirs: Vec<TempDir>, env: &[(&str, &str)]) -> Server {
    let plugins = plugin_dir(&[RBLN_NPU, RBLN_VAE]);
    let mut child = mlhost()
        .arg("serve")
        .args(args)
        .envs(env.iter().copied())
        .args(["--http-port", "0", "--plugin-dir"])
        .arg(plugins.path())
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("spawn mlhost serve");
    let stderr = child.stderr.take().expect("piped stderr");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            eprintln!("[server] {line}");
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut base = None;
    let mut startup = Vec::new();
    loop {
        let line = rx
            .recv_timeout(Duration::from_secs(120))
            .expect("mlhost serve printed nothing for 120 s or exited");
        if let Some(addr) = line.strip_prefix("mlhost serve: listening on ") {
            base = Some(addr.to_string());
        }
        let ready = line.starts_with("mlhost serve: ready");
        startup.push(line);
        if ready {
            break;
        }
    }
    let mut dirs = dirs;
    dirs.push(plugins);
    Server {
        child,
        base: base.expect("the listening line comes before ready"),
        lines: std::sync::Mutex::new(rx),
        startup,
        _dirs: dirs,
    }
}

/// Starts a server for the sd_like fixture with `serving` options (YAML flow mapping).
pub fn start_fixture(serving: &str) -> Server {
    let dir = TempDir::new("serve");
    let manifest = fixture_manifest(dir.path(), serving);
    start(&[manifest.to_str().expect("utf-8 path")], vec![dir])
}

/// An HTTP response.
#[derive(Debug)]
pub struct Reply {
    /// Status code.
    pub status: u16,
    /// Headers, lower-case names.
    pub headers: HashMap<String, String>,
    /// Body.
    pub body: Vec<u8>,
}

impl Reply {
    /// The body as JSON.
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "body is not JSON ({e}): {}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }
}

fn finish(r: Result<ureq::Response, ureq::Error>) -> Reply {
    let resp = match r {
        Ok(resp) => resp,
        Err(ureq::Error::Status(_, resp)) => resp,
        Err(e) => panic!("HTTP transport error: {e}"),
    };
    let status = resp.status();
    let headers = resp
        .headers_names()
        .into_iter()
        .filter_map(|n| resp.header(&n).map(|v| (n.to_lowercase(), v.to_string())))
        .collect();
    let mut body = Vec::new();
    std::io::Read::read_to_end(&mut resp.into_reader(), &mut body).expect("read the body");
    Reply {
        status,
        headers,
        body,
    }
}

fn agent() -> ureq::Agent {
    ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(120))
        .build()
}

impl Server {
    /// The standard error lines printed so far (after start-up).
    pub fn lines_so_far(&self) -> Vec<String> {
        let rx = self.lines.lock().unwrap_or_else(|p| p.into_inner());
        rx.try_iter().collect()
    }

    /// GET `path`.
    pub fn get(&self, path: &str) -> Reply {
        finish(agent().get(&format!("{}{path}", self.base)).call())
    }

    /// POST `body` to `path` with extra headers.
    pub fn post(&self, path: &str, headers: &[(&str, String)], body: &[u8]) -> Reply {
        let mut req = agent().post(&format!("{}{path}", self.base));
        for (k, v) in headers {
            req = req.set(k, v);
        }
        finish(req.send_bytes(body))
    }

    /// POST a JSON inference request to `model`.
    pub fn infer_json(&self, model: &str, request: &Value) -> Reply {
        self.post(
            &format!("/v2/models/{model}/infer"),
            &[("Content-Type", "application/json".into())],
            request.to_string().as_bytes(),
        )
    }

    /// The value of one metric line `mlhost_<name>{model="<model>",...<extra>} V`.
    pub fn metric(&self, name: &str, model: &str, extra: &str) -> Option<f64> {
        let text = String::from_utf8(self.get("/metrics").body).expect("utf-8 metrics");
        let prefix = format!("mlhost_{name}{{model=\"{model}\",version=\"1\"{extra}}} ");
        text.lines()
            .find_map(|l| l.strip_prefix(&prefix))
            .map(|v| v.parse().expect("a number"))
    }
}

/// A JSON input tensor.
pub fn json_input(name: &str, shape: &[usize], data: &[f32]) -> Value {
    json!({"name": name, "shape": shape, "datatype": "FP32", "data": data})
}

/// A binary inference request: (headers, body) with every output binary.
pub fn binary_request(
    name: &str,
    shape: &[usize],
    data: &[f32],
) -> (Vec<(&'static str, String)>, Vec<u8>) {
    let header = json!({
        "inputs": [{"name": name, "shape": shape, "datatype": "FP32",
                    "parameters": {"binary_data_size": data.len() * 4}}],
        "parameters": {"binary_data_output": true},
    })
    .to_string();
    let mut body = header.clone().into_bytes();
    for v in data {
        body.extend_from_slice(&v.to_le_bytes());
    }
    (
        vec![("Inference-Header-Content-Length", header.len().to_string())],
        body,
    )
}

/// The outputs of a response (JSON or binary) by name: (shape, data).
pub fn outputs(reply: &Reply) -> HashMap<String, (Vec<usize>, Vec<f32>)> {
    assert_eq!(
        reply.status,
        200,
        "{}",
        String::from_utf8_lossy(&reply.body)
    );
    let (json_len, binary) = match reply.headers.get("inference-header-content-length") {
        Some(n) => {
            let n: usize = n.parse().expect("a length");
            (n, &reply.body[n..])
        }
        None => (reply.body.len(), &reply.body[..0]),
    };
    let header: Value = serde_json::from_slice(&reply.body[..json_len]).expect("JSON header");
    let mut offset = 0;
    let mut out = HashMap::new();
    for o in header["outputs"].as_array().expect("outputs") {
        let shape: Vec<usize> = serde_json::from_value(o["shape"].clone()).expect("shape");
        assert_eq!(o["datatype"], "FP32");
        let data: Vec<f32> = match o["parameters"]["binary_data_size"].as_u64() {
            Some(size) => {
                let bytes = &binary[offset..offset + size as usize];
                offset += size as usize;
                bytes
                    .chunks_exact(4)
                    .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                    .collect()
            }
            None => serde_json::from_value(o["data"].clone()).expect("data"),
        };
        out.insert(o["name"].as_str().expect("name").to_string(), (shape, data));
    }
    assert_eq!(
        offset,
        binary.len(),
        "every binary byte belongs to an output"
    );
    out
}

/// Starts a server of the `HoldModel` test plugin as `hold` (method `hold.echo`: `x` [B, 2] ->
/// `y = 2 x`, compiled batch 4) with `serving` options; returns it and the plugin's gate
/// directory (see host/tests/hold-plugin).
pub fn start_hold(serving: &str) -> (Server, PathBuf) {
    let dir = TempDir::new("hold");
    let lib = copy_library("hold_plugin", dir.path());
    let gate = dir.path().join("gate");
    std::fs::create_dir(&gate).expect("create the gate directory");
    let text = format!(
        "plugins: [rbln_npu, {}]\nmodels:\n  - name: hold\n    class: HoldModel\n    \
         model_id: {}\n    rbln_config: {{batch_size: 4, gate: {}}}\n    serving: {serving}\n",
        lib.display(),
        dir.path().display(),
        gate.display()
    );
    let manifest = dir.path().join("hold.yaml");
    std::fs::write(&manifest, text).expect("write the manifest");
    let server = start(&[manifest.to_str().expect("utf-8 path")], vec![dir]);
    (server, gate)
}

/// Waits until `cond` holds (something the server does, observed; never a guess of how long it
/// takes). Panics naming `what` after 120 s.
pub fn wait_until(what: &str, cond: impl Fn() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    while !cond() {
        assert!(
            std::time::Instant::now() < deadline,
            "waited 120 s for {what}"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
}

impl Server {
    /// Waits for a standard error line containing `needle`; returns the lines read until then.
    pub fn wait_line(&self, needle: &str) -> Vec<String> {
        let rx = self.lines.lock().unwrap_or_else(|p| p.into_inner());
        let mut seen = Vec::new();
        loop {
            let line = rx
                .recv_timeout(Duration::from_secs(120))
                .unwrap_or_else(|_| panic!("no line with {needle:?} in 120 s: {seen:?}"));
            let found = line.contains(needle);
            seen.push(line);
            if found {
                return seen;
            }
        }
    }
}

/// `clients` threads that start together and each send `each` requests with `send`; every
/// request's status, in no particular order.
pub fn statuses_of_concurrent(
    clients: usize,
    each: usize,
    send: impl Fn() -> u16 + Sync,
) -> Vec<u16> {
    let barrier = std::sync::Barrier::new(clients);
    std::thread::scope(|sc| {
        let handles: Vec<_> = (0..clients)
            .map(|_| {
                let (send, barrier) = (&send, &barrier);
                sc.spawn(move || {
                    barrier.wait();
                    (0..each).map(|_| send()).collect::<Vec<u16>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect()
    })
}

/// Sends `head` and `body` as raw bytes on a new connection and reads one response: its status
/// and body. For requests an HTTP client will not send (a `Content-Length` larger than the body).
/// A read that times out is a hang, not a timing assertion.
pub fn raw_exchange(s: &Server, head: &str, body: &[u8]) -> (u16, Vec<u8>) {
    use std::io::{Read, Write};
    let addr = s.base.trim_start_matches("http://");
    let mut conn = std::net::TcpStream::connect(addr).expect("connect");
    conn.set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    conn.write_all(head.as_bytes()).unwrap();
    conn.write_all(body).unwrap();
    let mut reply = Vec::new();
    let mut buf = [0u8; 4096];
    let header_end = loop {
        if let Some(at) = reply.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
        let n = conn
            .read(&mut buf)
            .expect("the server answered instead of waiting for the announced body");
        assert!(n > 0, "the connection closed without a response");
        reply.extend_from_slice(&buf[..n]);
    };
    let head_text = String::from_utf8_lossy(&reply[..header_end]).to_lowercase();
    let status = head_text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .expect("a status line");
    let length: usize = head_text
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    while reply.len() < header_end + length {
        let n = conn.read(&mut buf).expect("read the response body");
        if n == 0 {
            break;
        }
        reply.extend_from_slice(&buf[..n]);
    }
    (status, reply[header_end..].to_vec())
}
