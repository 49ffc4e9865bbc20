//! `mlhost serve` over a real loopback socket: every endpoint, JSON and binary tensors against
//! the sd_like fixture, each error class, dynamic batching, timeouts, overload, model
//! repositories and graceful shutdown.

mod serve_support;

use serde_json::json;
use serve_support::*;
use std::time::{Duration, Instant};

#[test]
fn endpoints_and_fixture_outputs() {
    let s = start_fixture("{max_queue_delay_us: 0}");
    assert_eq!(s.get("/v2/health/live").status, 200);
    assert_eq!(s.get("/v2/health/ready").status, 200);
    let meta = s.get("/v2").json();
    assert_eq!(meta["name"], "mlhost");
    assert!(meta["extensions"]
        .as_array()
        .unwrap()
        .contains(&json!("binary_tensor_data")));

    let m = s.get("/v2/models/vae.decode").json();
    assert_eq!(
        m["inputs"][0],
        json!({"name": "z", "datatype": "FP32", "shape": [-1, 4, 8, 8]})
    );
    assert_eq!(m["outputs"][0]["shape"], json!([-1, 3, 32, 32]));
    let m = s.get("/v2/models/vae.encode/versions/1").json();
    assert_eq!(m["inputs"][0]["name"], "x");
    let names: Vec<&str> = m["outputs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["mean", "logvar"]);
    assert_eq!(s.get("/v2/models/vae.decode/ready").status, 200);
    assert_eq!(s.get("/v2/models/vae.decode/versions/1/ready").status, 200);

    let (zs, z) = fixture("z");
    let (_, sample) = fixture("sample");
    let (xs, x) = fixture("x");
    let (_, mean) = fixture("mean");
    let (_, logvar) = fixture("logvar");

    // Decode: flat JSON, nested JSON and binary agree with the fixture and with each other.
    let flat = outputs(&s.infer_json(
        "vae.decode",
        &json!({"id": "r1", "inputs": [json_input("z", &zs, &z)]}),
    ));
    assert_eq!(flat["sample"].0, [1, 3, 32, 32]);
    assert_close("decode JSON", &flat["sample"].1, &sample);
    let nested: Vec<Vec<f32>> = z.chunks(8).map(<[f32]>::to_vec).collect();
    let r = s.infer_json(
        "vae.decode",
        &json!({"inputs": [{"name": "z", "shape": zs, "datatype": "FP32", "data": nested}]}),
    );
    assert_eq!(outputs(&r)["sample"].1, flat["sample"].1);
    let (headers, body) = binary_request("z", &zs, &z);
    let bin = s.post("/v2/models/vae.decode/versions/1/infer", &headers, &body);
    assert!(bin.headers.contains_key("inference-header-content-length"));
    assert_eq!(
        outputs(&bin)["sample"].1,
        flat["sample"].1,
        "binary == JSON"
    );

    // Encode, and requested outputs are honoured (JSON for one, binary for another).
    let (headers, body) = binary_request("x", &xs, &x);
    let enc = outputs(&s.post("/v2/models/vae.encode/infer", &headers, &body));
    assert_close("mean", &enc["mean"].1, &mean);
    assert_close("logvar", &enc["logvar"].1, &logvar);
    let only = s.infer_json(
        "vae.encode",
        &json!({"inputs": [json_input("x", &xs, &x)], "outputs": [{"name": "logvar"}]}),
    );
    let only = outputs(&only);
    assert_eq!(only.keys().collect::<Vec<_>>(), ["logvar"]);
    assert_eq!(only["logvar"].1, enc["logvar"].1);

    // A request larger than the compiled batch (4) is split, and every item is right.
    let z6: Vec<f32> = z.iter().cycle().take(z.len() * 6).copied().collect();
    let six = outputs(&s.infer_json(
        "vae.decode",
        &json!({"inputs": [json_input("z", &[6, 4, 8, 8], &z6)]}),
    ));
    assert_eq!(six["sample"].0, [6, 3, 32, 32]);
    for item in six["sample"].1.chunks(sample.len()) {
        assert_eq!(item, &flat["sample"].1[..]);
    }

    let text = String::from_utf8(s.get("/metrics").body).unwrap();
    for family in [
        "inference_request_success",
        "inference_request_failure",
        "inference_count",
        "inference_exec_count",
        "inference_pending_request_count",
        "inference_queue_duration_us",
        "inference_compute_infer_duration_us",
        "inference_batch_executions",
    ] {
        assert!(
            text.contains(&format!("mlhost_{family}{{model=\"vae.decode\"")),
            "{family}: {text}"
        );
    }
    assert_eq!(s.metric("inference_count", "vae.decode", ""), Some(9.0));
}

#[test]
fn each_error_class_has_its_status_and_a_json_error() {
    let s = start_fixture("{max_queue_delay_us: 0}");
    let (zs, z) = fixture("z");
    let expect = |r: Reply, status: u16, needle: &str| {
        assert_eq!(r.status, status, "{}", String::from_utf8_lossy(&r.body));
        let msg = r.json()["error"]
            .as_str()
            .expect("an error string")
            .to_string();
        assert!(msg.contains(needle), "{msg:?} should mention {needle:?}");
    };
    let req = |input: serde_json::Value| json!({"inputs": [input]});
    expect(
        s.infer_json("vae.decode", &req(json_input("x", &zs, &z))),
        400,
        "`x`",
    );
    expect(
        s.infer_json(
            "vae.decode",
            &req(json_input("z", &[1, 4, 8, 4], &z[..128])),
        ),
        400,
        "shape",
    );
    expect(
        s.infer_json("vae.decode", &req(json_input("z", &zs, &z[1..]))),
        400,
        "elements",
    );
    let mut fp64 = json_input("z", &zs, &z);
    fp64["datatype"] = json!("FP64");
    expect(s.infer_json("vae.decode", &req(fp64)), 400, "FP64");
    expect(
        s.post("/v2/models/vae.decode/infer", &[], b"{not json"),
        400,
        "JSON",
    );
    let (headers, mut body) = binary_request("z", &zs, &z);
    body.truncate(body.len() - 4);
    expect(
        s.post("/v2/models/vae.decode/infer", &headers, &body),
        400,
        "binary",
    );
    expect(
        s.infer_json(
            "vae.decode",
            &json!({"inputs": [json_input("z", &zs, &z)], "outputs": [{"name": "mean"}]}),
        ),
        400,
        "`mean`",
    );
    expect(
        s.infer_json("vae.blur", &req(json_input("z", &zs, &z))),
        404,
        "vae.blur",
    );
    expect(s.get("/v2/models/nope"), 404, "nope");
    expect(s.get("/v2/models/vae.decode/versions/7"), 404, "version");
    expect(s.get("/v2/models/nope/ready"), 404, "nope");
    expect(s.get("/v2/no/such/route"), 404, "endpoint");
    assert_eq!(
        s.metric(
            "inference_request_failure",
            "vae.decode",
            ",reason=\"INVALID\""
        ),
        Some(7.0)
    );
}

#[test]
fn concurrent_requests_get_the_results_they_get_alone() {
    let s = start_fixture("{max_queue_delay_us: 300000, max_queue_size: 16}");
    let (zs, z) = fixture("z");
    let inputs: Vec<Vec<f32>> = (0..8)
        .map(|i| z.iter().map(|v| v * (1.0 + 0.1 * i as f32)).collect())
        .collect();
    let batched: Vec<Vec<f32>> = std::thread::scope(|sc| {
        let handles: Vec<_> = inputs
            .iter()
            .map(|input| {
                let s = &s;
                let zs = &zs;
                sc.spawn(move || {
                    outputs(&s.infer_json(
                        "vae.decode",
                        &json!({"inputs": [json_input("z", zs, input)]}),
                    ))["sample"]
                        .1
                        .clone()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for (input, got) in inputs.iter().zip(&batched) {
        let alone = outputs(&s.infer_json(
            "vae.decode",
            &json!({"inputs": [json_input("z", &zs, input)]}),
        ));
        assert_eq!(
            got, &alone["sample"].1,
            "a batched result equals the unbatched one"
        );
    }
}

#[test]
fn requests_queued_behind_a_held_batch_are_batched_and_timeouts_expire_in_the_queue() {
    let (s, gate) = start_hold("{instances: 1, max_queue_delay_us: 0, max_queue_size: 16}");
    let x = |i: usize| vec![i as f32, 0.5 - i as f32];
    let request = |i: usize| json!({"inputs": [json_input("x", &[1, 2], &x(i))]});
    std::fs::write(gate.join("hold"), b"").unwrap();
    let replies: Vec<Reply> = std::thread::scope(|sc| {
        let (s, request) = (&s, &request);
        let first = sc.spawn(move || s.infer_json("hold.echo", &request(0)));
        // The only worker is inside request 0's execution until the gate opens.
        wait_until("the first batch to start", || {
            gate.join("entered-0").exists()
        });
        let rest: Vec<_> = (1..8)
            .map(|i| sc.spawn(move || s.infer_json("hold.echo", &request(i))))
            .collect();
        wait_until("8 pending requests", || {
            s.metric("inference_pending_request_count", "hold.echo", "") == Some(8.0)
        });
        // A 1 ms timeout expires while the request waits behind the held batch.
        let r = s.infer_json(
            "hold.echo",
            &json!({"parameters": {"timeout": 1000}, "inputs": [json_input("x", &[1, 2], &x(9))]}),
        );
        assert_eq!(r.status, 503);
        assert!(r.json()["error"].as_str().unwrap().contains("timeout"));
        std::fs::write(gate.join("release"), b"").unwrap();
        std::iter::once(first)
            .chain(rest)
            .map(|h| h.join().unwrap())
            .collect()
    });
    for (i, r) in replies.iter().enumerate() {
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        let want: Vec<f32> = x(i).iter().map(|v| 2.0 * v).collect();
        assert_eq!(outputs(r)["y"].1, want, "request {i} got its own rows");
    }
    // Request 0 alone, then the 7 queued ones in batches of 4 and 3.
    let runs = |size: usize| {
        s.metric(
            "inference_batch_executions",
            "hold.echo",
            &format!(",batch_size=\"{size}\""),
        )
        .unwrap_or(0.0)
    };
    assert_eq!((runs(1), runs(3), runs(4)), (1.0, 1.0, 1.0));
    let bigger: f64 = (2..=4).map(runs).sum();
    assert!(bigger > 0.0, "some execution held more than one request");
    let execs = s.metric("inference_exec_count", "hold.echo", "").unwrap();
    assert!(execs < 8.0, "8 requests ran in {execs} executions");
    assert_eq!(
        s.metric(
            "inference_request_failure",
            "hold.echo",
            ",reason=\"TIMEOUT\""
        ),
        Some(1.0)
    );
}

fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

#[test]
fn overload_gets_503_at_once_and_the_server_stays_live() {
    let s = start_fixture("{max_queue_delay_us: 0, max_queue_size: 4}");
    let (xs, x) = fixture("x");
    let before = rss_kib(s.child.id());
    let codes = statuses_of_concurrent(16, 3, || {
        s.infer_json("vae.encode", &json!({"inputs": [json_input("x", &xs, &x)]}))
            .status
    });
    assert_eq!(codes.len(), 48, "no request lost");
    assert!(codes.iter().all(|c| *c == 200 || *c == 503), "{codes:?}");
    assert!(codes.contains(&200), "{codes:?}");
    assert!(
        codes.contains(&503),
        "16 clients overflow a queue of 4: {codes:?}"
    );
    let ok = codes.iter().filter(|c| **c == 200).count() as f64;
    assert_eq!(
        s.metric("inference_request_success", "vae.encode", ""),
        Some(ok)
    );
    assert_eq!(s.get("/v2/health/live").status, 200);
    assert_eq!(s.get("/v2/health/ready").status, 200);
    assert_eq!(
        s.metric("inference_pending_request_count", "vae.encode", ""),
        Some(0.0)
    );
    if let (Some(a), Some(b)) = (before, rss_kib(s.child.id())) {
        assert!(b < a + 256 * 1024, "RSS grew from {a} KiB to {b} KiB");
    }
}

#[test]
fn sigterm_lets_in_flight_requests_finish_and_exits_0() {
    let (mut s, gate) = start_hold("{instances: 1, max_queue_delay_us: 0}");
    std::fs::write(gate.join("hold"), b"").unwrap();
    let codes = std::thread::scope(|sc| {
        let handles: Vec<_> = (0..3)
            .map(|i| {
                let s = &s;
                sc.spawn(move || {
                    let x = [i as f32, 1.0];
                    s.infer_json(
                        "hold.echo",
                        &json!({"inputs": [json_input("x", &[1, 2], &x)]}),
                    )
                    .status
                })
            })
            .collect();
        // One request is executing (held), the others queued: all three are in flight.
        wait_until("the first batch to start", || {
            gate.join("entered-0").exists()
        });
        wait_until("3 pending requests", || {
            s.metric("inference_pending_request_count", "hold.echo", "") == Some(3.0)
        });
        let killed = std::process::Command::new("kill")
            .args(["-TERM", &s.child.id().to_string()])
            .status()
            .unwrap();
        assert!(killed.success());
        let lines = s.wait_line("shutting down");
        assert!(
            lines.iter().any(|l| l.contains("shutting down")),
            "{lines:?}"
        );
        std::fs::write(gate.join("release"), b"").unwrap();
        handles
            .into_iter()
            .map(|h| h.join().unwrap())
            .collect::<Vec<u16>>()
    });
    assert_eq!(codes, [200, 200, 200]);
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(st) = s.child.try_wait().unwrap() {
            break st;
        }
        assert!(Instant::now() < deadline, "the server did not exit");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(status.code(), Some(0));
}

#[test]
fn model_repository_serves_compiled_dirs_and_reports_broken_ones() {
    let repo = TempDir::new("repo");
    let plugins = plugin_dir(&[RBLN_NPU, RBLN_VAE]);
    let out = run(mlhost()
        .args(["compile"])
        .arg(fixture_dir())
        .arg("-o")
        .arg(repo.path().join("tiny"))
        .args(["--sample-size", "32", "--batch-size", "2", "--plugin-dir"])
        .arg(plugins.path()));
    assert_eq!(out.code, 0, "{}", out.stderr);
    std::fs::create_dir(repo.path().join("broken")).unwrap();
    let repo_path = repo.path().to_str().unwrap().to_string();
    let s = start(&["--model-repository", &repo_path], vec![repo, plugins]);
    let m = s.get("/v2/models/tiny.decode").json();
    assert_eq!(m["inputs"][0]["shape"], json!([-1, 4, 8, 8]));
    assert_eq!(
        s.get("/v2/models/tiny.encode").status,
        404,
        "compiled decoder-only"
    );
    let (zs, z) = fixture("z");
    let (_, sample) = fixture("sample");
    let got = outputs(&s.infer_json(
        "tiny.decode",
        &json!({"inputs": [json_input("z", &zs, &z)]}),
    ));
    assert_close("repository decode", &got["sample"].1, &sample);
    let text = s.startup.join("\n");
    assert!(
        text.contains("skipping") && text.contains("broken"),
        "{text}"
    );
}

#[test]
fn the_shipped_default_manifest_serves_the_embedded_model() {
    let manifest =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../manifests/vae-default.yaml");
    let s = start(&[manifest.to_str().unwrap()], Vec::new());
    let m = s.get("/v2/models/vae.decode").json();
    let shape: Vec<usize> = m["inputs"][0]["shape"].as_array().unwrap()[1..]
        .iter()
        .map(|d| d.as_u64().unwrap() as usize)
        .collect();
    let mut full = vec![2];
    full.extend(&shape);
    let z = vec![0.25f32; full.iter().product()];
    let (headers, body) = binary_request("z", &full, &z);
    let out = outputs(&s.post("/v2/models/vae.decode/infer", &headers, &body));
    assert_eq!(out["sample"].0[0], 2);
    assert!(out["sample"].1.iter().all(|v| v.is_finite()));
    assert_eq!(s.get("/v2/models/vae.encode/ready").status, 200);
}

/// A BYTES request carrying one image file, binary.
fn image_request(
    name: &str,
    file: &[u8],
    outputs: serde_json::Value,
) -> (Vec<(&'static str, String)>, Vec<u8>) {
    let header = json!({
        "id": "p1",
        "inputs": [{"name": name, "shape": [1], "datatype": "BYTES",
                    "parameters": {"binary_data_size": file.len() + 4}}],
        "outputs": outputs,
    })
    .to_string();
    let mut body = header.clone().into_bytes();
    body.extend_from_slice(&(file.len() as u32).to_le_bytes());
    body.extend_from_slice(file);
    (
        vec![("Inference-Header-Content-Length", header.len().to_string())],
        body,
    )
}

#[test]
fn manifest_pipelines_are_served_as_models_of_their_own_name() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let manifest = root.join("manifests/sd15-img2img.yaml");
    let photo_path = root.join("tests/fixtures/pipelines/photo64.png");
    let photo = std::fs::read(&photo_path).unwrap();
    let s = start(&[manifest.to_str().unwrap()], Vec::new());
    assert!(
        s.startup
            .iter()
            .any(|l| l.contains("ready") && l.contains("img2img")),
        "{:?}",
        s.startup
    );
    let m = s.get("/v2/models/img2img").json();
    assert_eq!(
        m["platform"],
        "mlhost_pipeline_StableDiffusionImg2ImgPipeline"
    );
    assert_eq!(
        m["inputs"],
        json!([{"name": "image", "datatype": "BYTES", "shape": [1]}])
    );
    assert_eq!(s.get("/v2/models/img2img/ready").status, 200);

    let (headers, body) = image_request(
        "image",
        &photo,
        json!([{"name": "reconstruction"}, {"name": "latents"}]),
    );
    let reply = s.post("/v2/models/img2img/infer", &headers, &body);
    assert_eq!(
        reply.status,
        200,
        "{}",
        String::from_utf8_lossy(&reply.body)
    );
    let n: usize = reply.headers["inference-header-content-length"]
        .parse()
        .unwrap();
    let head: serde_json::Value = serde_json::from_slice(&reply.body[..n]).unwrap();
    assert_eq!(head["id"], "p1");
    assert_eq!(head["outputs"][0]["datatype"], "BYTES");
    assert_eq!(head["outputs"][1]["shape"], json!([1, 4, 16, 16]));
    let size = head["outputs"][0]["parameters"]["binary_data_size"]
        .as_u64()
        .unwrap() as usize;
    let png = &reply.body[n + 4..n + size];

    // The same pipeline from the command line writes the same PNG.
    let dir = TempDir::new("pipeline-cli");
    let out = dir.path().join("out.png");
    let plugins = plugin_dir(&[RBLN_NPU, RBLN_VAE]);
    let status = mlhost()
        .args([
            "pipeline",
            manifest.to_str().unwrap(),
            "img2img",
            "--plugin-dir",
        ])
        .arg(plugins.path())
        .arg(format!("--input=image={}", photo_path.display()))
        .arg(format!("--output=reconstruction={}", out.display()))
        .status()
        .unwrap();
    assert!(status.success());
    assert_eq!(std::fs::read(&out).unwrap(), png);

    // An FP32 tensor where the pipeline takes an image, and bytes that are no image.
    let bad = s.infer_json(
        "img2img",
        &json!({"inputs": [json_input("image", &[1], &[0.0])]}),
    );
    assert_eq!(bad.status, 400);
    assert!(
        bad.json()["error"]
            .as_str()
            .unwrap()
            .contains("expected BYTES"),
        "{:?}",
        bad.json()
    );
    let (headers, body) = image_request("image", b"not an image", json!(null));
    let bad = s.post("/v2/models/img2img/infer", &headers, &body);
    assert_eq!(bad.status, 400);
    let e = bad.json()["error"].as_str().unwrap().to_string();
    assert!(
        e.contains("read_image") && e.contains("not a PNG or JPEG"),
        "{e}"
    );
    // The model's own methods stay served.
    assert_eq!(s.get("/v2/models/vae.encode/ready").status, 200);
}

/// Asserts a 400 whose error mentions every needle.
fn assert_400(r: &Reply, needles: &[&str]) {
    assert_eq!(r.status, 400, "{}", String::from_utf8_lossy(&r.body));
    let msg = r.json()["error"].as_str().unwrap_or_default().to_string();
    for n in needles {
        assert!(msg.contains(n), "{msg:?} should mention {n:?}");
    }
}

#[test]
fn hostile_requests_get_400_naming_the_problem_and_the_server_goes_on() {
    let s = start_fixture("{max_queue_delay_us: 0, max_queue_size: 4}");
    let (zs, z) = fixture("z");
    let (_, sample) = fixture("sample");
    let good = || {
        let r = s.infer_json("vae.decode", &json!({"inputs": [json_input("z", &zs, &z)]}));
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        assert_close(
            "decode after a bad request",
            &outputs(&r)["sample"].1,
            &sample,
        );
    };
    let mut dims = zs.clone();

    // Issue 12, 1: a huge batch with three numbers of JSON data: refused by the row limit
    // (batch 4 x max_queue_size 4), never allocated.
    dims[0] = 1_000_000_000_000;
    let r = s.infer_json(
        "vae.decode",
        &json!({"inputs": [{"name": "z", "datatype": "FP32", "shape": dims, "data": [1, 2, 3]}]}),
    );
    assert_400(&r, &["`z`", "limit of 16 rows"]);
    good();

    // Issue 12, 2: a shape whose product wraps to 0 with binary_data_size 0.
    dims[0] = 1_125_899_906_842_624;
    let header = json!({"inputs": [{"name": "z", "datatype": "FP32", "shape": dims,
                                    "parameters": {"binary_data_size": 0}}]})
    .to_string();
    let r = s.post(
        "/v2/models/vae.decode/infer",
        &[("Inference-Header-Content-Length", header.len().to_string())],
        header.as_bytes(),
    );
    assert_400(&r, &["`z`", "limit of 16 rows"]);
    good();

    // Ragged JSON data.
    let mut ragged: Vec<Vec<f32>> = z.chunks(8).map(<[f32]>::to_vec).collect();
    ragged[3].pop();
    ragged[4].push(0.0);
    let r = s.infer_json(
        "vae.decode",
        &json!({"inputs": [{"name": "z", "datatype": "FP32", "shape": zs, "data": ragged}]}),
    );
    assert_400(&r, &["`z`", "data[3]", "ragged"]);
    good();

    // A number that overflows FP32.
    let mut text = serde_json::to_string(&json!({"inputs": [json_input("z", &zs, &z)]})).unwrap();
    let at = text.find("\"data\":[").unwrap() + "\"data\":[".len();
    let end = at + text[at..].find(',').unwrap();
    text.replace_range(at..end, "1e39");
    let r = s.post("/v2/models/vae.decode/infer", &[], text.as_bytes());
    assert_400(&r, &["`z`", "data[0]", "not a finite FP32 value"]);
    good();

    // A queue timeout too large for a deadline is no deadline, not a crash.
    let r = s.infer_json(
        "vae.decode",
        &json!({"parameters": {"timeout": u64::MAX}, "inputs": [json_input("z", &zs, &z)]}),
    );
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    good();
    assert_eq!(s.get("/v2/health/ready").status, 200);
}

#[test]
fn pipeline_tensor_inputs_get_the_same_checks() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let s = start(
        &[root.join("manifests/sd15-text2img.yaml").to_str().unwrap()],
        Vec::new(),
    );
    let latents: Vec<f32> = (0..4 * 16 * 16).map(|i| (i % 7) as f32 * 0.1).collect();
    let request = |shape: serde_json::Value, data: serde_json::Value| {
        json!({"inputs": [{"name": "latents", "datatype": "FP32", "shape": shape, "data": data}],
               "outputs": [{"name": "image"}]})
    };
    let good = || {
        let r = s.infer_json("text2img", &request(json!([1, 4, 16, 16]), json!(latents)));
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        let n: usize = r.headers["inference-header-content-length"]
            .parse()
            .unwrap();
        let head: serde_json::Value = serde_json::from_slice(&r.body[..n]).unwrap();
        assert_eq!(head["outputs"][0]["datatype"], "BYTES");
        assert_eq!(&r.body[n + 5..n + 8], b"PNG");
    };
    good();
    let r = s.infer_json(
        "text2img",
        &request(json!([1125899906842624u64, 4, 64, 64]), json!([1, 2, 3])),
    );
    assert_400(&r, &["`latents`", "more elements than can be addressed"]);
    good();
    let r = s.infer_json(
        "text2img",
        &request(json!([1000000000000u64, 4, 64, 64]), json!([1, 2, 3])),
    );
    assert_400(
        &r,
        &["`latents`", "needs 16384000000000000 elements, data has 3"],
    );
    good();
    let r = s.infer_json(
        "text2img",
        &request(json!([1, 4, 16, 16]), json!([[1, 2], [3]])),
    );
    assert_400(&r, &["`latents`", "ragged"]);
    good();
    let mut big = latents.clone();
    big[5] = 0.0;
    let mut text = serde_json::to_string(&request(json!([1, 4, 16, 16]), json!(big))).unwrap();
    text = text.replacen(",0.0,", ",-1e39,", 1);
    let r = s.post("/v2/models/text2img/infer", &[], text.as_bytes());
    assert_400(&r, &["`latents`", "data[5]", "not a finite FP32 value"]);
    good();
}

#[test]
fn a_run_past_its_timeout_is_a_504_counted_as_timeout() {
    let (s, gate) = start_hold("{max_queue_delay_us: 0}");
    std::fs::write(gate.join("timeout"), b"").unwrap();
    let r = s.infer_json(
        "hold.echo",
        &json!({"inputs": [json_input("x", &[1, 2], &[1.0, 2.0])]}),
    );
    assert_eq!(r.status, 504, "{}", String::from_utf8_lossy(&r.body));
    let msg = r.json()["error"].as_str().unwrap().to_string();
    assert!(msg.contains("part echo, timeout 0.001 s"), "{msg}");
    assert_eq!(
        s.metric(
            "inference_request_failure",
            "hold.echo",
            ",reason=\"TIMEOUT\""
        ),
        Some(1.0)
    );
    // The model goes on serving.
    std::fs::remove_file(gate.join("timeout")).unwrap();
    let r = s.infer_json(
        "hold.echo",
        &json!({"inputs": [json_input("x", &[1, 2], &[1.0, 2.0])]}),
    );
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
}

#[test]
fn parts_on_their_own_devices_are_shown_and_profiled() {
    if std::thread::available_parallelism().map_or(1, |n| n.get()) < 2 {
        eprintln!("SKIPPED: fewer than two cores");
        return;
    }
    let dir = TempDir::new("devices");
    let text = format!(
        "plugins: [rbln_npu, rbln_vae]\ndevices:\n  - name: npu\n    plugin: rbln-npu\n    \
         ids: [0, 1]\nmodels:\n  - name: vae\n    model_id: {}\n    export: true\n    \
         device: npu\n    rbln_config: {{uses_encoder: true, sample_size: 32, activate_profiler: \
         true, device_map: {{encoder: 0, decoder: 1}}}}\n  - name: plain\n    model_id: {}\n    \
         export: true\n    rbln_config: {{sample_size: 32}}\n",
        fixture_dir().display(),
        fixture_dir().display()
    );
    let manifest = dir.path().join("m.yaml");
    std::fs::write(&manifest, text).unwrap();
    let s = start(&[manifest.to_str().unwrap()], vec![dir]);
    let meta = s.get("/v2/models/vae.decode").json();
    let rt = &meta["parameters"]["runtime"];
    let cores = |part: &str| rt["parts"][part]["replicas"][0]["cores"].clone();
    for (part, device) in [("encoder", 0), ("decoder", 1)] {
        let r = &rt["parts"][part]["replicas"][0];
        assert_eq!(r["device"], device, "{meta}");
        let pinned: Vec<serde_json::Value> = r["cores"]
            .as_array()
            .unwrap()
            .iter()
            .map(|_| r["cores"].clone())
            .collect();
        assert_eq!(r["thread_affinities"], json!(pinned), "{meta}");
        assert!(
            r.get("profile").is_none(),
            "profiles are in /metrics: {meta}"
        );
    }
    assert_ne!(cores("encoder"), cores("decoder"), "{meta}");
    let (zs, z) = fixture("z");
    let r = s.infer_json("vae.decode", &json!({"inputs": [json_input("z", &zs, &z)]}));
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let text = String::from_utf8_lossy(&s.get("/metrics").body).to_string();
    // The warm-up and the request.
    assert!(
        text.contains("mlhost_profile_runs_total{model=\"vae\",part=\"decoder\",device=\"1\"} 2"),
        "{text}"
    );
    assert!(
        text.contains("mlhost_profile_step_seconds_total{model=\"vae\",part=\"decoder\""),
        "{text}"
    );
    assert!(!text.contains("model=\"plain\",part="), "{text}");
    // The log has the table of the profiled model's decoder warm-up only (both models are the
    // sd_like directory, which names them in profiles); `plain` prints none.
    let log = s.startup.join("\n");
    assert_eq!(
        log.matches("profile of sd_like decoder:").count(),
        1,
        "{log}"
    );
}
