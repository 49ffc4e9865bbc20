//! The KServe manifests in `deploy/kserve/` are checked against the OpenAPI v3 schemas of
//! KServe's own CRDs (vendored in `deploy/kserve/crds/`), strictly, as `kubectl apply
//! --validate=strict` does: the CRD schemas alone let unknown fields through, so every object
//! schema that lists its properties is closed here (unless the CRD marks it
//! `x-kubernetes-preserve-unknown-fields`), and `metadata` is checked against the fields of
//! Kubernetes' ObjectMeta that manifests set. A misspelt field fails.

use clap::Parser;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

fn deploy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy")
}

fn yaml_documents(text: &str) -> Vec<Value> {
    serde_yaml::Deserializer::from_str(text)
        .map(|doc| {
            let v: Value = serde::Deserialize::deserialize(doc).expect("valid YAML");
            v
        })
        .filter(|v| !v.is_null())
        .collect()
}

/// Closes every object schema that lists its properties.
fn make_strict(schema: &mut Value) {
    match schema {
        Value::Object(map) => {
            let preserve = map.get("x-kubernetes-preserve-unknown-fields") == Some(&json!(true));
            if map.contains_key("properties")
                && !map.contains_key("additionalProperties")
                && !preserve
            {
                map.insert("additionalProperties".into(), json!(false));
            }
            for v in map.values_mut() {
                make_strict(v);
            }
        }
        Value::Array(items) => items.iter_mut().for_each(make_strict),
        _ => {}
    }
}

/// The ObjectMeta fields a manifest may set (the API server fills in the rest).
fn object_meta() -> Value {
    let strings = json!({"type": "object", "additionalProperties": {"type": "string"}});
    json!({
        "type": "object",
        "required": ["name"],
        "additionalProperties": false,
        "properties": {
            "name": {"type": "string", "pattern": "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"},
            "namespace": {"type": "string"},
            "labels": strings,
            "annotations": strings,
        }
    })
}

/// `(apiVersion, kind)` -> the strict schema of that resource, from the vendored CRDs.
fn schemas() -> BTreeMap<(String, String), Value> {
    let mut out = BTreeMap::new();
    let crds = deploy_dir().join("kserve/crds");
    for entry in std::fs::read_dir(&crds).expect("deploy/kserve/crds") {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) != Some("yaml") {
            continue;
        }
        for crd in yaml_documents(&std::fs::read_to_string(&path).unwrap()) {
            let group = crd["spec"]["group"].as_str().unwrap().to_string();
            let kind = crd["spec"]["names"]["kind"].as_str().unwrap().to_string();
            for version in crd["spec"]["versions"].as_array().unwrap() {
                let mut schema = version["schema"]["openAPIV3Schema"].clone();
                make_strict(&mut schema);
                let api_version = format!("{group}/{}", version["name"].as_str().unwrap());
                schema["properties"]["metadata"] = object_meta();
                schema["properties"]["apiVersion"] = json!({"const": api_version});
                schema["properties"]["kind"] = json!({"const": kind});
                schema["required"] = json!(["apiVersion", "kind", "metadata", "spec"]);
                out.insert((api_version, kind.clone()), schema);
            }
        }
    }
    assert!(
        out.len() >= 3,
        "the vendored CRDs define {} schemas",
        out.len()
    );
    out
}

/// The validation errors of one resource, each `path: message`.
fn errors(schemas: &BTreeMap<(String, String), Value>, doc: &Value) -> Vec<String> {
    let key = (
        doc["apiVersion"].as_str().unwrap_or("").to_string(),
        doc["kind"].as_str().unwrap_or("").to_string(),
    );
    let Some(schema) = schemas.get(&key) else {
        return vec![format!("no vendored CRD defines {key:?}")];
    };
    let validator = jsonschema::validator_for(schema).expect("the CRD schema compiles");
    validator
        .iter_errors(doc)
        .map(|e| format!("{}: {e}", e.instance_path()))
        .collect()
}

/// Every resource of `deploy/kserve/*.yaml`, with its file.
fn manifests() -> Vec<(PathBuf, Value)> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(deploy_dir().join("kserve"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().and_then(|e| e.to_str()) == Some("yaml"))
        .collect();
    files.sort();
    let mut out = Vec::new();
    for file in files {
        for doc in yaml_documents(&std::fs::read_to_string(&file).unwrap()) {
            out.push((file.clone(), doc));
        }
    }
    out
}

#[test]
fn every_kserve_manifest_passes_strict_schema_validation() {
    let schemas = schemas();
    let docs = manifests();
    let kinds: Vec<&str> = docs
        .iter()
        .filter_map(|(_, d)| d["kind"].as_str())
        .collect();
    assert!(kinds.contains(&"ClusterServingRuntime") && kinds.contains(&"InferenceService"));
    for (file, doc) in &docs {
        let errs = errors(&schemas, doc);
        assert!(errs.is_empty(), "{}:\n{}", file.display(), errs.join("\n"));
    }
}

/// Renames the first object key `from` (at any depth) to `to`.
fn rename_key(v: &mut Value, from: &str, to: &str) -> bool {
    match v {
        Value::Object(map) => {
            if let Some(inner) = map.remove(from) {
                map.insert(to.to_string(), inner);
                return true;
            }
            map.values_mut().any(|inner| rename_key(inner, from, to))
        }
        Value::Array(items) => items.iter_mut().any(|inner| rename_key(inner, from, to)),
        _ => false,
    }
}

#[test]
fn a_misspelt_field_fails_validation() {
    let schemas = schemas();
    let docs = manifests();
    let find = |kind: &str| {
        docs.iter()
            .find(|(_, d)| d["kind"] == kind)
            .map(|(_, d)| d.clone())
            .unwrap()
    };
    let cases = [
        (
            "ClusterServingRuntime",
            "supportedModelFormats",
            "supportedModelFormat",
        ),
        ("ClusterServingRuntime", "readinessProbe", "readinesProbe"),
        ("ClusterServingRuntime", "periodSeconds", "periodSecond"),
        ("ClusterServingRuntime", "annotations", "annotation"),
        ("InferenceService", "storageUri", "storageURI"),
        ("InferenceService", "minReplicas", "minReplica"),
        ("InferenceService", "modelFormat", "modelformat"),
    ];
    for (kind, from, to) in cases {
        let mut doc = find(kind);
        assert!(rename_key(&mut doc, from, to), "{kind} has no field {from}");
        let errs = errors(&schemas, &doc);
        assert!(
            errs.iter().any(|e| e.contains(to)),
            "{kind} with {from} misspelt as {to} passed validation: {errs:?}"
        );
    }
    let mut doc = find("InferenceService");
    doc["spec"]["predictor"]["scaleMetric"] = json!("requests");
    assert!(
        !errors(&schemas, &doc).is_empty(),
        "an unknown scaleMetric passed"
    );
    let mut doc = find("InferenceService");
    doc["spec"]["predictor"]["scaleTarget"] = json!("two");
    assert!(
        !errors(&schemas, &doc).is_empty(),
        "a string scaleTarget passed"
    );
}

#[test]
fn the_mlhost_runtime_runs_the_image_entrypoint_with_real_flags_and_probes() {
    let docs = manifests();
    let runtime = docs
        .iter()
        .map(|(_, d)| d)
        .find(|d| d["metadata"]["name"] == "mlhost-rbln")
        .expect("the mlhost-rbln runtime");
    let container = &runtime["spec"]["containers"][0];
    assert_eq!(container["name"], "kserve-container");
    assert_eq!(
        container["readinessProbe"]["httpGet"]["path"],
        "/v2/health/ready"
    );
    assert_eq!(
        container["livenessProbe"]["httpGet"]["path"],
        "/v2/health/live"
    );
    let mut argv = vec!["mlhost".to_string()];
    for a in container["args"].as_array().unwrap() {
        argv.push(a.as_str().unwrap().to_string());
    }
    mlhost::cli::Cli::try_parse_from(&argv)
        .unwrap_or_else(|e| panic!("the runtime's args {argv:?} are not mlhost's: {e}"));
    assert!(argv.contains(&"/mnt/models".to_string()));

    let formats: Vec<&Value> = docs
        .iter()
        .filter(|(_, d)| d["kind"] == "ClusterServingRuntime")
        .flat_map(|(_, d)| d["spec"]["supportedModelFormats"].as_array().unwrap())
        .collect();
    for (file, isvc) in docs.iter().filter(|(_, d)| d["kind"] == "InferenceService") {
        let model = &isvc["spec"]["predictor"]["model"];
        let runtime_name = model["runtime"].as_str().unwrap();
        let runtime = docs
            .iter()
            .find(|(_, d)| d["metadata"]["name"] == runtime_name)
            .unwrap_or_else(|| panic!("{}: no runtime {runtime_name}", file.display()));
        let served: Vec<&Value> = runtime.1["spec"]["supportedModelFormats"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| &f["name"])
            .collect();
        assert!(
            served.contains(&&model["modelFormat"]["name"]),
            "{}: runtime {runtime_name} does not serve {}",
            file.display(),
            model["modelFormat"]["name"]
        );
    }
    assert!(!formats.is_empty());

    let containerfile = std::fs::read_to_string(deploy_dir().join("Containerfile")).unwrap();
    assert!(containerfile.contains("RUN bash .ci/build --release"));
    assert!(containerfile.contains(
        r#"CMD ["serve", "--model-repository", "/mnt/models", "--host", "0.0.0.0", "--http-port", "8080"]"#
    ));
    assert!(containerfile.contains("USER 1000"));
}
