//! The Open Inference Protocol v2 REST routes, plus `/metrics`.

use super::batcher::Batcher;
use super::error::ServeError;
use super::method;
use super::metrics::{self, ModelMetrics};
use super::pipeline::ServedPipeline;
use crate::models::MethodSig;
use crate::oip::{self, Encoded, Limits, HEADER_LENGTH};
use axum::body::{Body, Bytes};
use axum::extract::{Path, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

/// One served OIP model: a method of a loaded model.
pub struct Served {
    /// The model class (reported as the platform).
    pub class: String,
    /// The queue and workers.
    pub batcher: Batcher,
    /// Its counters.
    pub metrics: Arc<ModelMetrics>,
    /// The default queue timeout when a request sets none.
    pub default_timeout_us: Option<u64>,
    /// What one request may carry.
    pub limits: Limits,
    /// Largest request body accepted (413 above it).
    pub max_request_bytes: u64,
    /// The served model's name (the part before `.method`) and the model, which says where
    /// its parts run (`Model::runtime_json`).
    pub model: (String, Arc<plugin_api::ModelBox>),
}

impl Served {
    /// Where and how the model runs (`Model::runtime_json`), `{}` when it does not say.
    pub fn runtime(&self) -> Value {
        serde_json::from_str(self.model.1.runtime_json().as_str()).unwrap_or_else(|_| json!({}))
    }
}

/// State shared by the handlers.
#[derive(Default)]
pub struct App {
    /// True once every model is loaded and warmed up, false again on shutdown.
    pub ready: AtomicBool,
    /// The served models by OIP name, set once loading finished.
    pub served: OnceLock<BTreeMap<String, Served>>,
    /// The served pipelines by OIP name, set once loading finished.
    pub pipelines: OnceLock<BTreeMap<String, ServedPipeline>>,
}

impl App {
    /// Ready means "can answer now": loaded, not shutting down, and every method has a running
    /// worker.
    fn is_ready(&self) -> bool {
        self.ready.load(Relaxed)
            && self
                .served
                .get()
                .is_some_and(|m| m.values().all(|s| s.batcher.healthy()))
    }

    fn pipeline(&self, params: &HashMap<String, String>) -> Option<&ServedPipeline> {
        let name = params.get("name")?;
        if params.get("version").is_some_and(|v| v != "1") {
            return None;
        }
        self.pipelines.get()?.get(name)
    }

    fn lookup(&self, params: &HashMap<String, String>) -> Result<(&str, &Served), ServeError> {
        let name = params.get("name").map(String::as_str).unwrap_or("");
        let Some(models) = self.served.get() else {
            return Err(ServeError::NotReady(
                "the server is still loading models".into(),
            ));
        };
        let (key, served) = models
            .get_key_value(name)
            .ok_or_else(|| ServeError::NotFound(format!("unknown model `{name}`")))?;
        if let Some(v) = params.get("version").filter(|v| v.as_str() != "1") {
            return Err(ServeError::NotFound(format!(
                "model `{name}` has no version `{v}` (it has version 1)"
            )));
        }
        Ok((key.as_str(), served))
    }
}

/// The router.
pub fn router(app: Arc<App>) -> Router {
    Router::new()
        .route("/v2/health/live", get(|| async { StatusCode::OK }))
        .route("/v2/health/ready", get(ready))
        .route("/v2", get(server_metadata))
        .route("/metrics", get(render_metrics))
        .route("/v2/models/:name", get(model_metadata))
        .route("/v2/models/:name/versions/:version", get(model_metadata))
        .route("/v2/models/:name/ready", get(model_ready))
        .route("/v2/models/:name/versions/:version/ready", get(model_ready))
        .route("/v2/models/:name/infer", post(infer))
        .route("/v2/models/:name/versions/:version/infer", post(infer))
        .fallback(|| async { ServeError::NotFound("no such endpoint".into()) })
        .with_state(app)
}

async fn ready(State(app): State<Arc<App>>) -> Response {
    if app.is_ready() {
        StatusCode::OK.into_response()
    } else {
        ServeError::NotReady("not ready".into()).into_response()
    }
}

async fn server_metadata() -> Json<Value> {
    Json(json!({
        "name": "mlhost",
        "version": env!("CARGO_PKG_VERSION"),
        "extensions": ["binary_tensor_data"],
    }))
}

async fn render_metrics(State(app): State<Arc<App>>) -> Response {
    let text = match app.served.get() {
        Some(m) => {
            let mut text = metrics::render(m.iter().map(|(n, s)| (n.as_str(), s.metrics.as_ref())));
            // One runtime per model (its methods share it).
            let mut models: BTreeMap<&str, &Served> = BTreeMap::new();
            for s in m.values() {
                models.entry(s.model.0.as_str()).or_insert(s);
            }
            let runtimes: Vec<(&str, Value)> =
                models.into_iter().map(|(n, s)| (n, s.runtime())).collect();
            text.push_str(&metrics::render_profiles(&runtimes));
            text
        }
        None => String::new(),
    };
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response()
}

/// Where each part runs (devices, cores), the timeout and whether it is profiled: the model's
/// runtime without the profile totals (those are in `/metrics`).
fn placement(runtime: &Value) -> Value {
    let mut v = runtime.clone();
    if let Some(parts) = v.get_mut("parts").and_then(Value::as_object_mut) {
        for part in parts.values_mut() {
            for r in part
                .get_mut("replicas")
                .and_then(Value::as_array_mut)
                .into_iter()
                .flatten()
            {
                if let Some(r) = r.as_object_mut() {
                    r.remove("profile");
                }
            }
        }
    }
    v
}

fn tensor_meta(name: &str, dims: &[usize]) -> Value {
    let mut shape = vec![-1i64];
    shape.extend(dims.iter().map(|&d| d as i64));
    json!({"name": name, "datatype": "FP32", "shape": shape})
}

fn metadata(name: &str, served: &Served) -> Value {
    let sig: &MethodSig = served.batcher.sig();
    json!({
        "name": name,
        "versions": ["1"],
        "platform": format!("mlhost_{}", served.class),
        "parameters": {"runtime": placement(&served.runtime())},
        "inputs": [tensor_meta(&sig.input.0, &sig.input.1)],
        "outputs": sig.outputs.iter().map(|(n, d)| tensor_meta(n, d)).collect::<Vec<_>>(),
    })
}

async fn model_metadata(
    State(app): State<Arc<App>>,
    Path(params): Path<HashMap<String, String>>,
) -> Result<Json<Value>, ServeError> {
    if let Some(p) = app.pipeline(&params) {
        return Ok(Json(p.metadata()));
    }
    let (name, served) = app.lookup(&params)?;
    Ok(Json(metadata(name, served)))
}

async fn model_ready(
    State(app): State<Arc<App>>,
    Path(params): Path<HashMap<String, String>>,
) -> Result<StatusCode, ServeError> {
    let healthy = match app.pipeline(&params) {
        Some(p) => p.healthy(),
        None => app.lookup(&params)?.1.batcher.healthy(),
    };
    if !app.ready.load(Relaxed) {
        return Err(ServeError::NotReady("the server is shutting down".into()));
    }
    if !healthy {
        return Err(ServeError::NotReady(
            "the model has no running worker".into(),
        ));
    }
    Ok(StatusCode::OK)
}

/// After a 413, how much more of the refused body is read and dropped, and for how long, so that
/// a client still writing it gets to read the reply instead of a reset (a lingering close).
const LINGER_BYTES: usize = 64 << 20;
const LINGER: Duration = Duration::from_secs(10);

/// Reads and drops the rest of a refused body, at most [`LINGER_BYTES`] for at most
/// [`LINGER`], then lets the connection go.
fn linger(mut body: Body) {
    tokio::spawn(async move {
        let drain = async {
            let mut seen = 0usize;
            while let Some(Ok(frame)) = http_body_util::BodyExt::frame(&mut body).await {
                seen = seen.saturating_add(frame.data_ref().map_or(0, |d| d.len()));
                if seen > LINGER_BYTES {
                    break;
                }
            }
        };
        let _ = tokio::time::timeout(LINGER, drain).await;
    });
}

/// Reads a request body of at most `limit` bytes: a `Content-Length` above it is refused
/// before anything is read, a body that grows past it when it does. Either way the rest of the
/// body is drained for a while ([`linger`]) so that the client reads the 413.
async fn read_body(mut body: Body, headers: &HeaderMap, limit: u64) -> Result<Bytes, ServeError> {
    let too_large = |what: String| {
        ServeError::TooLarge(format!(
            "{what}; this model accepts at most {limit} bytes (serving.max_request_bytes)"
        ))
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if let Some(n) = declared.filter(|&n| n > limit) {
        linger(body);
        return Err(too_large(format!("the request body is {n} bytes")));
    }
    let limit = usize::try_from(limit).unwrap_or(usize::MAX);
    // The declared length (at most the limit) sizes the buffer, up to what a lie could cost.
    let reserve = declared.map_or(0, |n| usize::try_from(n).unwrap_or(0).min(LINGER_BYTES));
    let mut data = Vec::with_capacity(reserve);
    while let Some(frame) = http_body_util::BodyExt::frame(&mut body).await {
        let frame = frame
            .map_err(|e| ServeError::InvalidInput(format!("cannot read the request body: {e}")))?;
        let Some(chunk) = frame.data_ref() else {
            continue;
        };
        if chunk.len() > limit - data.len() {
            linger(body);
            return Err(too_large("the request body is larger".into()));
        }
        data.extend_from_slice(chunk);
    }
    Ok(Bytes::from(data))
}

async fn infer(
    State(app): State<Arc<App>>,
    Path(params): Path<HashMap<String, String>>,
    request: Request,
) -> Response {
    let start = Instant::now();
    let (parts, body) = request.into_parts();
    let headers = parts.headers;
    if let Some(p) = app.pipeline(&params) {
        if !app.ready.load(Relaxed) {
            return ServeError::NotReady("the server is shutting down".into()).into_response();
        }
        return match infer_pipeline(p, &headers, body).await {
            Ok(r) => r,
            Err(e) => e.into_response(),
        };
    }
    let (name, served) = match app.lookup(&params) {
        Ok(found) => found,
        Err(e) => return e.into_response(),
    };
    let body = match read_body(body, &headers, served.max_request_bytes).await {
        Ok(b) => b,
        Err(e) => {
            served.metrics.fail(e.reason());
            return e.into_response();
        }
    };
    match run_infer(name, served, &headers, body).await {
        Ok(response) => {
            served.metrics.success.fetch_add(1, Relaxed);
            let us = start.elapsed().as_micros() as u64;
            served.metrics.request_us.fetch_add(us, Relaxed);
            response
        }
        Err(e) => {
            served.metrics.fail(e.reason());
            e.into_response()
        }
    }
}

fn header_length(headers: &HeaderMap) -> Result<Option<usize>, ServeError> {
    Ok(oip::header_length(
        headers.get(HEADER_LENGTH).map(HeaderValue::as_bytes),
    )?)
}

async fn infer_pipeline(
    p: &ServedPipeline,
    headers: &HeaderMap,
    body: Body,
) -> Result<Response, ServeError> {
    let header_len = header_length(headers)?;
    let body = read_body(body, headers, p.max_request_bytes).await?;
    Ok(reply(p.infer(body, header_len).await?))
}

/// The HTTP reply of an encoded response: JSON alone, or the JSON header and the binary part
/// with the header's length in `Inference-Header-Content-Length`.
fn reply(encoded: Encoded) -> Response {
    if encoded.binary.is_empty() {
        return (
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            )],
            encoded.json,
        )
            .into_response();
    }
    let json_len = encoded.json.len();
    let mut bytes = encoded.json;
    bytes.extend_from_slice(&encoded.binary);
    let mut response = bytes.into_response();
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    h.insert(HEADER_LENGTH, HeaderValue::from(json_len));
    response
}

/// Runs `f` on tokio's blocking pool: decoding and encoding a large request takes long enough
/// to stall the HTTP workers.
async fn off_workers<T: Send + 'static>(
    name: &str,
    f: impl FnOnce() -> Result<T, ServeError> + Send + 'static,
) -> Result<T, ServeError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ServeError::Internal(format!("{name}: a request task failed: {e}")))?
}

async fn run_infer(
    name: &str,
    served: &Served,
    headers: &HeaderMap,
    body: Bytes,
) -> Result<Response, ServeError> {
    let sig = served.batcher.sig();
    let header_len = header_length(headers)?;
    let mut req = {
        let (model, sig, limits) = (name.to_string(), sig.clone(), served.limits);
        off_workers(name, move || {
            method::parse(&model, &sig, &body, header_len, &limits)
        })
        .await?
    };
    let timeout_us = req
        .timeout_us
        .or(served.default_timeout_us)
        .filter(|&t| t > 0);
    // A timeout too far away to represent is no deadline.
    let deadline = timeout_us.and_then(|t| Instant::now().checked_add(Duration::from_micros(t)));
    let data = std::mem::take(&mut req.data);
    let mut ticket = served.batcher.submit(data, req.items, deadline)?;
    let reply_rx = match deadline {
        None => (&mut ticket.reply).await,
        Some(d) => match tokio::time::timeout_at(d.into(), &mut ticket.reply).await {
            Ok(r) => r,
            Err(_) if served.batcher.withdraw(&ticket) => {
                return Err(ServeError::Timeout(timeout_us.unwrap_or_default()))
            }
            Err(_) => (&mut ticket.reply).await,
        },
    };
    let outputs = reply_rx
        .map_err(|_| ServeError::Internal(format!("{name}: the worker ended without a reply")))??;
    let (model, sig) = (name.to_string(), sig.clone());
    let encoded = off_workers(name, move || {
        Ok(method::encode(&model, &sig, &req, &outputs))
    })
    .await?;
    Ok(reply(encoded))
}
