//! The bad-input catalogue, HTTP half: one server, every bad request in turn; each gets its status
//! and a JSON error naming what is wrong, and the same server then answers a good request
//! correctly (nothing a client sends disables a model). The command-line half is `catalogue.rs`.

mod serve_support;

use serde_json::{json, Value};
use serve_support::*;

/// One bad request: a POST to `path` (or a GET when `body` is None) with extra headers.
struct Case {
    name: &'static str,
    path: &'static str,
    headers: Vec<(&'static str, String)>,
    body: Option<Vec<u8>>,
    status: u16,
    needles: &'static [&'static str],
}

fn post(name: &'static str, body: Value, status: u16, needles: &'static [&'static str]) -> Case {
    Case {
        name,
        path: "/v2/models/vae.decode/infer",
        headers: Vec::new(),
        body: Some(body.to_string().into_bytes()),
        status,
        needles,
    }
}

/// A binary request: `header` JSON then `data` bytes, with its length header.
fn binary(
    name: &'static str,
    header: Value,
    data: &[u8],
    needles: &'static [&'static str],
) -> Case {
    let header = header.to_string();
    let mut body = header.clone().into_bytes();
    body.extend_from_slice(data);
    Case {
        name,
        path: "/v2/models/vae.decode/infer",
        headers: vec![("Inference-Header-Content-Length", header.len().to_string())],
        body: Some(body),
        status: 400,
        needles,
    }
}

fn z_input(shape: Value, data: Value) -> Value {
    json!({"inputs": [{"name": "z", "shape": shape, "datatype": "FP32", "data": data}]})
}

fn cases() -> Vec<Case> {
    let (_, z) = fixture("z");
    let mut beyond: Vec<Value> = z.iter().map(|v| json!(v)).collect();
    beyond[5] = serde_json::from_str("1e39").unwrap();
    vec![
        post(
            "a batch of 10^12 rows with three numbers (issue 12.1)",
            z_input(json!([1_000_000_000_000u64, 4, 8, 8]), json!([1, 2, 3])),
            400,
            &["rows", "limit"],
        ),
        binary(
            "a shape whose product wraps, with no data (issue 12.2)",
            json!({"inputs": [{"name": "z", "shape": [1125899906842624u64, 4, 8, 8],
                "datatype": "FP32", "parameters": {"binary_data_size": 0}}]}),
            &[],
            &["`z`"],
        ),
        post(
            "ragged data",
            z_input(json!([1, 4, 8, 8]), json!([[1, 2], [3]])),
            400,
            &["`z`", "ragged"],
        ),
        post(
            "data nested at mixed depths",
            z_input(json!([1, 1, 2, 2]), json!([[1, 2], [[3, 4]]])),
            400,
            &["`z`"],
        ),
        post(
            "a value beyond FP32",
            z_input(json!([1, 4, 8, 8]), json!(beyond)),
            400,
            &["`z`", "FP32", "5"],
        ),
        post(
            "too few values",
            z_input(json!([1, 4, 8, 8]), json!([1.0, 2.0])),
            400,
            &["`z`"],
        ),
        post(
            "strings for FP32",
            z_input(json!([1, 1, 1, 1]), json!(["a"])),
            400,
            &["`z`"],
        ),
        post(
            "a negative dimension",
            z_input(json!([-1, 4, 8, 8]), json!(z)),
            400,
            &["`z`"],
        ),
        post(
            "the wrong spatial size",
            z_input(json!([1, 4, 9, 8]), json!(z)),
            400,
            &["`z`", "[1, 4, 9, 8]"],
        ),
        post(
            "the wrong input name",
            json!({"inputs": [{"name": "x", "shape": [1, 4, 8, 8], "datatype": "FP32", "data": z}]}),
            400,
            &["`x`", "`z`"],
        ),
        post(
            "two inputs",
            json!({"inputs": [
                {"name": "z", "shape": [1, 4, 8, 8], "datatype": "FP32", "data": z},
                {"name": "z", "shape": [1, 4, 8, 8], "datatype": "FP32", "data": z}]}),
            400,
            &["exactly one input"],
        ),
        post(
            "an unsupported datatype",
            json!({"inputs": [{"name": "z", "shape": [1, 4, 8, 8], "datatype": "INT8", "data": [1]}]}),
            400,
            &["INT8", "FP32"],
        ),
        post(
            "an unknown output",
            json!({"inputs": [{"name": "z", "shape": [1, 4, 8, 8], "datatype": "FP32", "data": z}],
                "outputs": [{"name": "latent"}]}),
            400,
            &["latent"],
        ),
        post("no inputs", json!({"inputs": []}), 400, &["`z`"]),
        Case {
            name: "not JSON",
            path: "/v2/models/vae.decode/infer",
            headers: Vec::new(),
            body: Some(b"{\"inputs\": [".to_vec()),
            status: 400,
            needles: &["JSON"],
        },
        Case {
            name: "a header length that is not a number",
            path: "/v2/models/vae.decode/infer",
            headers: vec![("Inference-Header-Content-Length", "many".into())],
            body: Some(b"{}".to_vec()),
            status: 400,
            needles: &["Inference-Header-Content-Length"],
        },
        Case {
            name: "a header length past the body",
            path: "/v2/models/vae.decode/infer",
            headers: vec![("Inference-Header-Content-Length", "4096".into())],
            body: Some(b"{}".to_vec()),
            status: 400,
            needles: &["4096"],
        },
        binary(
            "binary data shorter than announced",
            json!({"inputs": [{"name": "z", "shape": [1, 4, 8, 8], "datatype": "FP32",
                "parameters": {"binary_data_size": 1024}}]}),
            &[0; 100],
            &["`z`", "1024"],
        ),
        binary(
            "a binary size that does not match the shape",
            json!({"inputs": [{"name": "z", "shape": [1, 4, 8, 8], "datatype": "FP32",
                "parameters": {"binary_data_size": 8}}]}),
            &[0; 8],
            &["`z`"],
        ),
        binary(
            "both data and binary_data_size",
            json!({"inputs": [{"name": "z", "shape": [1, 1, 1, 1], "datatype": "FP32",
                "data": [1], "parameters": {"binary_data_size": 4}}]}),
            &[0; 4],
            &["`z`"],
        ),
        post(
            "a timeout that is not a number",
            json!({"parameters": {"timeout": "soon"},
                "inputs": [{"name": "z", "shape": [1, 4, 8, 8], "datatype": "FP32", "data": z}]}),
            400,
            &["timeout"],
        ),
        Case {
            name: "an unknown model",
            path: "/v2/models/vae.blur/infer",
            headers: Vec::new(),
            body: Some(b"{}".to_vec()),
            status: 404,
            needles: &["vae.blur"],
        },
        Case {
            name: "an unknown version",
            path: "/v2/models/vae.decode/versions/7/infer",
            headers: Vec::new(),
            body: Some(b"{}".to_vec()),
            status: 404,
            needles: &["7"],
        },
        Case {
            name: "an unknown endpoint",
            path: "/v2/modelz",
            headers: Vec::new(),
            body: None,
            status: 404,
            needles: &["no such endpoint"],
        },
        Case {
            name: "a Content-Length over the model's limit (10^12 bytes announced, 16 sent)",
            path: "/v2/models/vae.decode/infer",
            headers: vec![("Content-Length", "1000000000000".into())],
            body: Some(vec![b'{'; 16]),
            status: 413,
            needles: &["max_request_bytes"],
        },
    ]
}

#[test]
fn every_bad_request_gets_its_named_error_and_the_server_goes_on() {
    let s = start_fixture("{max_request_bytes: 65536}");
    let (zs, z) = fixture("z");
    let (_, want) = fixture("sample");
    let good = json!({"inputs": [json_input("z", &zs, &z)]});
    let cases = cases();
    let mut failures = Vec::new();
    for case in &cases {
        let declared = case.headers.iter().any(|(k, _)| *k == "Content-Length");
        let r = match &case.body {
            // An HTTP client sends the length of what it sends: write this one by hand.
            Some(body) if declared => {
                let mut head = format!("POST {} HTTP/1.1\r\nHost: x\r\n", case.path);
                for (k, v) in &case.headers {
                    head.push_str(&format!("{k}: {v}\r\n"));
                }
                head.push_str("\r\n");
                let (status, body) = raw_exchange(&s, &head, body);
                Reply {
                    status,
                    headers: Default::default(),
                    body,
                }
            }
            Some(body) => s.post(case.path, &case.headers, body),
            None => s.get(case.path),
        };
        let mut wrong = Vec::new();
        if r.status != case.status {
            wrong.push(format!("status {} (expected {})", r.status, case.status));
        }
        let message = serde_json::from_slice::<Value>(&r.body)
            .ok()
            .and_then(|v| v["error"].as_str().map(str::to_string));
        match &message {
            None => wrong.push("the body is not {\"error\": ...}".into()),
            Some(m) => {
                for n in case.needles {
                    if !m.contains(n) {
                        wrong.push(format!("the error does not name {n:?}"));
                    }
                }
            }
        }
        let after = s.infer_json("vae.decode", &good);
        if after.status != 200 {
            wrong.push(format!("the next good request got {}", after.status));
        } else {
            let got = &outputs(&after)["sample"].1;
            let scale = want.iter().fold(1.0f32, |m, v| m.max(v.abs()));
            let worst = got
                .iter()
                .zip(&want)
                .map(|(a, b)| (a - b).abs())
                .fold(0.0f32, f32::max);
            if got.len() != want.len() || worst > 1e-4 * scale {
                wrong.push(format!("the next good request's output is off by {worst}"));
            }
        }
        if !wrong.is_empty() {
            failures.push(format!(
                "{}: {}\n  body: {}",
                case.name,
                wrong.join("; "),
                String::from_utf8_lossy(&r.body)
            ));
        }
    }
    assert_eq!(s.get("/v2/health/ready").status, 200);
    eprintln!("{} HTTP cases", cases.len());
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
