//! Fault tests of `mlhost serve`: a panic while a batch runs fails only that batch, a worker that
//! dies makes its model not ready instead of a queue no one drains, oversized bodies get 413
//! before they are read, and overload of methods and pipelines gets 200 or 503, never a lost or
//! hanging request.

mod serve_support;

use serde_json::json;
use serve_support::*;

fn decode_request() -> serde_json::Value {
    let (zs, z) = fixture("z");
    json!({"inputs": [json_input("z", &zs, &z)]})
}

/// Asserts a 200 whose `sample` is diffusers' decode of the fixture latent.
fn assert_good_decode(s: &Server) {
    let r = s.infer_json("vae.decode", &decode_request());
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let (_, want) = fixture("sample");
    assert_close("sample", &outputs(&r)["sample"].1, &want);
}

fn start_fixture_env(serving: &str, env: &[(&str, &str)]) -> Server {
    let dir = TempDir::new("faults");
    let manifest = fixture_manifest(dir.path(), serving);
    start_with_env(&[manifest.to_str().unwrap()], vec![dir], env)
}

#[test]
fn a_panic_in_a_batch_fails_that_batch_and_the_worker_serves_the_next() {
    let s = start_fixture_env("{}", &[("MLHOST_INJECT_PANIC", "vae.decode")]);
    let r = s.infer_json("vae.decode", &decode_request());
    assert_eq!(r.status, 500, "{}", String::from_utf8_lossy(&r.body));
    let message = r.json()["error"].as_str().unwrap().to_string();
    assert!(
        !message.contains("panic"),
        "a 500 says nothing internal: {message}"
    );
    assert_good_decode(&s);
    assert_eq!(s.get("/v2/health/ready").status, 200);
    assert_eq!(s.get("/v2/models/vae.decode/ready").status, 200);
    assert_eq!(
        s.metric(
            "inference_request_failure",
            "vae.decode",
            ",reason=\"BACKEND\""
        ),
        Some(1.0)
    );
    let lines = s.lines_so_far();
    assert!(
        lines.iter().any(|l| l.contains("a batch panicked")),
        "the detail is logged: {lines:?}"
    );
}

#[test]
fn a_dead_worker_makes_its_model_not_ready_and_refuses_requests() {
    let s = start_fixture_env("{}", &[("MLHOST_INJECT_PANIC", "vae.decode@worker")]);
    let r = s.infer_json("vae.decode", &decode_request());
    assert_eq!(r.status, 500, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(s.get("/v2/models/vae.decode/ready").status, 503);
    assert_eq!(s.get("/v2/health/ready").status, 503);
    let r = s.infer_json("vae.decode", &decode_request());
    assert_eq!(r.status, 503, "{}", String::from_utf8_lossy(&r.body));
    assert!(
        r.json()["error"]
            .as_str()
            .unwrap()
            .contains("no running worker"),
        "{}",
        String::from_utf8_lossy(&r.body)
    );
    // The other method keeps its own workers.
    assert_eq!(s.get("/v2/models/vae.encode/ready").status, 200);
    assert_eq!(s.get("/v2/health/live").status, 200);
}

#[test]
fn bodies_over_the_limit_get_413_before_they_are_read() {
    let s = start_fixture("{max_request_bytes: 8192}");
    let head = "POST /v2/models/vae.decode/infer HTTP/1.1\r\nHost: x\r\nContent-Type: \
                application/json\r\nContent-Length: 1000000000000\r\n\r\n";
    assert_eq!(raw_exchange(&s, head, &[b'{'; 16]).0, 413);
    let big = vec![b' '; 9000];
    let r = s.post("/v2/models/vae.decode/infer", &[], &big);
    assert_eq!(r.status, 413);
    assert!(
        r.json()["error"]
            .as_str()
            .unwrap()
            .contains("max_request_bytes"),
        "{}",
        String::from_utf8_lossy(&r.body)
    );
    // A chunked body (no Content-Length) that grows past the limit.
    let head = "POST /v2/models/vae.decode/infer HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: \
                chunked\r\n\r\n";
    let mut chunked = Vec::new();
    for _ in 0..3 {
        chunked.extend_from_slice(format!("{:x}\r\n", 4096).as_bytes());
        chunked.extend_from_slice(&[b' '; 4096]);
        chunked.extend_from_slice(b"\r\n");
    }
    chunked.extend_from_slice(b"0\r\n\r\n");
    assert_eq!(raw_exchange(&s, head, &chunked).0, 413);
    assert_good_decode(&s);
}

#[test]
fn a_client_that_writes_a_refused_body_in_full_reads_the_413() {
    // 24 MiB is more than loopback's socket buffers hold: the client's write completes only if
    // the server goes on reading the refused body after its 413 (a lingering close) instead of
    // closing the connection under the writer.
    let s = start_fixture("{max_request_bytes: 8192}");
    let body = vec![b' '; 24 << 20];
    let head = format!(
        "POST /v2/models/vae.decode/infer HTTP/1.1\r\nHost: x\r\nContent-Type: \
         application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    let (status, reply) = raw_exchange(&s, &head, &body);
    assert_eq!(status, 413, "{}", String::from_utf8_lossy(&reply));
    assert!(String::from_utf8_lossy(&reply).contains("max_request_bytes"));
    // The same without a Content-Length: refused when it grows past the limit.
    let head = "POST /v2/models/vae.decode/infer HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: \
                chunked\r\n\r\n";
    let mut chunked = Vec::new();
    for _ in 0..(24 << 20) / 65536 {
        chunked.extend_from_slice(format!("{:x}\r\n", 65536).as_bytes());
        chunked.extend_from_slice(&[b' '; 65536]);
        chunked.extend_from_slice(b"\r\n");
    }
    chunked.extend_from_slice(b"0\r\n\r\n");
    assert_eq!(raw_exchange(&s, head, &chunked).0, 413);
    assert_good_decode(&s);
}

#[test]
fn pipeline_overload_gets_200_or_503_and_nothing_is_lost() {
    let dir = TempDir::new("faults");
    let manifest = dir.path().join("p.yaml");
    let photo = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures/pipelines/photo32.png");
    std::fs::write(
        &manifest,
        format!(
            "plugins: [rbln_npu, rbln_vae]\nmodels:\n  - name: vae\n    model_id: {}\n    \
             export: true\n    rbln_config: {{batch_size: 1, sample_size: 32}}\n    serving: \
             {{max_queue_size: 1, max_queue_delay_us: 0}}\npipelines:\n  - name: img2img\n    \
             kind: StableDiffusionImg2ImgPipeline\n    model: vae\n    image_size: 32\n",
            fixture_dir().display()
        ),
    )
    .unwrap();
    let s = start(&[manifest.to_str().unwrap()], vec![dir]);
    let png = std::fs::read(photo).unwrap();
    let header = json!({"inputs": [{"name": "image", "shape": [1], "datatype": "BYTES",
        "parameters": {"binary_data_size": 4 + png.len()}}]})
    .to_string();
    let mut body = header.clone().into_bytes();
    body.extend_from_slice(&(png.len() as u32).to_le_bytes());
    body.extend_from_slice(&png);
    let headers = [("Inference-Header-Content-Length", header.len().to_string())];
    let codes = statuses_of_concurrent(8, 2, || {
        s.post("/v2/models/img2img/infer", &headers, &body).status
    });
    assert_eq!(codes.len(), 16, "no request lost");
    assert!(codes.iter().all(|c| *c == 200 || *c == 503), "{codes:?}");
    assert!(codes.contains(&200), "{codes:?}");
    assert_eq!(s.get("/v2/health/ready").status, 200);
    let r = s.post("/v2/models/img2img/infer", &headers, &body);
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
}
