//! The Open Inference Protocol v2 REST routes, plus `/metrics`.

use super::batcher::Batcher;
use super::error::ServeError;
use super::method;
use super::metrics::{self, ModelMetrics};
use super::pipeline::ServedPipeline;
use crate::models::MethodSig;
use crate::oip::{self, Encoded, Limits, HEADER_LENGTH};
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

/// Largest request body accepted.
pub const MAX_BODY_BYTES: usize = 256 << 20;

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
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(app)
}

async fn ready(State(app): State<Arc<App>>) -> Response {
    if app.ready.load(Relaxed) {
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
        Some(m) => metrics::render(m.iter().map(|(n, s)| (n.as_str(), s.metrics.as_ref()))),
        None => String::new(),
    };
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response()
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
    if app.pipeline(&params).is_none() {
        app.lookup(&params)?;
    }
    if !app.ready.load(Relaxed) {
        return Err(ServeError::NotReady("the server is shutting down".into()));
    }
    Ok(StatusCode::OK)
}

async fn infer(
    State(app): State<Arc<App>>,
    Path(params): Path<HashMap<String, String>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let start = Instant::now();
    if let Some(p) = app.pipeline(&params) {
        if !app.ready.load(Relaxed) {
            return ServeError::NotReady("the server is shutting down".into()).into_response();
        }
        return match infer_pipeline(p, &headers, &body).await {
            Ok(r) => r,
            Err(e) => e.into_response(),
        };
    }
    let (name, served) = match app.lookup(&params) {
        Ok(found) => found,
        Err(e) => return e.into_response(),
    };
    match run_infer(name, served, &headers, &body).await {
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
    body: &[u8],
) -> Result<Response, ServeError> {
    Ok(reply(p.infer(body, header_length(headers)?).await?))
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

async fn run_infer(
    name: &str,
    served: &Served,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Response, ServeError> {
    let sig = served.batcher.sig();
    let mut req = method::parse(name, sig, body, header_length(headers)?, &served.limits)?;
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
    Ok(reply(method::encode(name, sig, &req, &outputs)))
}
