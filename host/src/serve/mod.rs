//! `mlhost serve`: an Open Inference Protocol v2 (KServe v2 / Triton HTTP) server.
//!
//! Start-up: bind, serve `/v2/health/live`, load plugins and models (compiling them when the
//! manifest says so) on a blocking thread, warm each method up, start its batcher, and only then
//! report ready. HTTP runs on tokio; compute runs on each method's own worker threads
//! ([`batcher`]). On SIGTERM / SIGINT the server stops being ready, refuses new work, lets
//! in-flight requests finish for up to the exit timeout, and returns.

pub mod batcher;
pub mod error;
pub mod fault;
pub mod http;
pub mod method;
pub mod metrics;
pub mod pipeline;

use crate::error::UsageError;
use crate::manifest::Manifest;
use crate::models::manifest::open_manifest;
use crate::models::served::{load_manifest_model, load_repository_model, LoadedModel};
use crate::oip::Limits;
use crate::plugins::{plugin_search_path, PluginRegistry};
use anyhow::{anyhow, Context};
use batcher::{Batcher, QueueConfig};
use http::{App, Served};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

/// What to serve and where.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// A manifest file.
    pub manifest: Option<PathBuf>,
    /// A model repository: every compiled model directory directly under it.
    pub model_repository: Option<PathBuf>,
    /// Address to bind.
    pub host: String,
    /// Port to bind (0: any free port; the chosen one is printed).
    pub port: u16,
    /// How long in-flight requests may take to finish after SIGTERM / SIGINT.
    pub exit_timeout: Duration,
}

/// Runs the server until a signal; returns once drained (or the exit timeout passed).
pub fn run(plugin_dirs: &[PathBuf], opts: &ServeOptions) -> anyhow::Result<()> {
    let search = plugin_search_path(plugin_dirs)?;
    let (manifest, registry) = match &opts.manifest {
        Some(file) => {
            let (m, registry) = open_manifest(file, &search)?;
            (Some(m), registry)
        }
        None => (None, PluginRegistry::load(&search)?),
    };
    // The manifest's devices were configured when it was opened (each device plugin's own
    // thread pools; nothing process-wide is set here).
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("mlhost-http")
        .build()
        .context("starting the tokio runtime")?;
    let result = runtime.block_on(serve(registry, manifest, opts));
    runtime.shutdown_timeout(Duration::from_secs(1));
    result
}

async fn serve(
    registry: PluginRegistry,
    manifest: Option<Manifest>,
    opts: &ServeOptions,
) -> anyhow::Result<()> {
    let mut signal = Box::pin(shutdown_signal()?);
    let addr = format!("{}:{}", opts.host, opts.port);
    let listener = tokio::net::TcpListener::bind(&addr)
        .await
        .map_err(|e| UsageError(format!("cannot listen on {addr}: {e}")))?;
    let local: SocketAddr = listener.local_addr()?;
    eprintln!("mlhost serve: listening on http://{local}");

    let app = Arc::new(App::default());
    let stop = Arc::new(tokio::sync::Notify::new());
    let server = {
        let stop = stop.clone();
        let router = http::router(app.clone());
        tokio::spawn(async move {
            axum::serve(listener, router)
                .with_graceful_shutdown(async move { stop.notified().await })
                .await
        })
    };

    let repository = opts.model_repository.clone();
    let loading = tokio::task::spawn_blocking(move || load_all(&registry, manifest, repository));
    let (models, pipelines) = tokio::select! {
        loaded = loading => match loaded.context("loading models")? {
            Ok(models) => models,
            Err(e) => {
                stop.notify_one();
                return Err(e);
            }
        },
        _ = &mut signal => {
            eprintln!("mlhost serve: signal received while loading; exiting");
            stop.notify_one();
            return Ok(());
        }
    };

    let mut served = BTreeMap::new();
    for m in &models {
        let cfg = QueueConfig {
            instances: m.serving.instances.get(),
            max_queue_delay: Duration::from_micros(m.serving.max_queue_delay_us),
            max_queue_size: m.serving.max_queue_size.get(),
        };
        for sig in &m.methods {
            let name = format!("{}.{}", m.name, sig.method);
            let limits = Limits {
                max_rows: sig.batch.saturating_mul(cfg.max_queue_size),
                rows_reason: "the compiled batch_size x serving.max_queue_size",
            };
            let metrics = Arc::new(metrics::ModelMetrics::default());
            let batcher = Batcher::start(&name, m.model.clone(), sig.clone(), cfg, metrics.clone())
                .with_context(|| format!("starting the workers of {name}"))?;
            served.insert(
                name,
                Served {
                    class: m.class.clone(),
                    batcher,
                    metrics,
                    default_timeout_us: m.serving.timeout_us,
                    limits,
                    max_request_bytes: m.serving.max_request_bytes,
                    model: (m.name.clone(), m.model.clone()),
                },
            );
        }
    }
    let mut served_pipelines = BTreeMap::new();
    for p in pipelines {
        let name = p.name.clone();
        served_pipelines.insert(name, serve_pipeline(p, &served, &models)?);
    }
    let pipelines = served_pipelines;
    let mut names: Vec<String> = served.keys().cloned().collect();
    names.extend(pipelines.keys().cloned());
    let _ = app.served.set(served);
    let _ = app.pipelines.set(pipelines);
    app.ready.store(true, Relaxed);
    eprintln!("mlhost serve: ready: {}", names.join(", "));

    (&mut signal).await;
    eprintln!("mlhost serve: shutting down; finishing in-flight requests");
    app.ready.store(false, Relaxed);
    if let Some(served) = app.served.get() {
        for s in served.values() {
            s.batcher.close();
        }
    }
    stop.notify_one();
    match tokio::time::timeout(opts.exit_timeout, server).await {
        Ok(joined) => joined.context("the HTTP server task")??,
        Err(_) => eprintln!(
            "mlhost serve: exit timeout ({:?}) passed with requests in flight",
            opts.exit_timeout
        ),
    }
    eprintln!("mlhost serve: stopped");
    Ok(())
}

type Pipelines = Vec<crate::pipeline::graph::Pipeline>;

/// Serves `p` through the started batchers of the methods it calls; it admits as many requests
/// at once as the smallest queue (instances + max_queue_size) among its models.
fn serve_pipeline(
    p: crate::pipeline::graph::Pipeline,
    served: &BTreeMap<String, Served>,
    models: &[LoadedModel],
) -> anyhow::Result<pipeline::ServedPipeline> {
    let mut batchers = BTreeMap::new();
    let mut capacity = usize::MAX;
    let mut max_request_bytes = u64::MAX;
    for step in &p.steps {
        let crate::pipeline::graph::Action::Model { model, method } = &step.action else {
            continue;
        };
        let name = format!("{model}.{method}");
        let s = served
            .get(&name)
            .ok_or_else(|| anyhow!("pipeline {}: {name} is not served", p.name))?;
        batchers.insert(name, s.batcher.clone());
        if let Some(m) = models.iter().find(|m| &m.name == model) {
            let queue = m.serving.instances.get() + m.serving.max_queue_size.get();
            capacity = capacity.min(queue);
            max_request_bytes = max_request_bytes.min(m.serving.max_request_bytes);
        }
    }
    if capacity == usize::MAX {
        capacity = crate::manifest::ServingOptions::default()
            .max_queue_size
            .get();
        max_request_bytes = crate::manifest::ServingOptions::default().max_request_bytes;
    }
    Ok(pipeline::ServedPipeline::new(
        Arc::new(p),
        pipeline::BatchedModels(batchers),
        capacity,
        max_request_bytes,
    ))
}

fn load_all(
    registry: &PluginRegistry,
    manifest: Option<Manifest>,
    repository: Option<PathBuf>,
) -> anyhow::Result<(Vec<LoadedModel>, Pipelines)> {
    let mut models = Vec::new();
    if let Some(m) = &manifest {
        for entry in &m.models {
            eprintln!(
                "mlhost serve: loading {} from {}",
                entry.name,
                entry.model_id.display()
            );
            models.push(load_manifest_model(registry, m, entry)?);
        }
    }
    if let Some(dir) = repository {
        let mut dirs: Vec<PathBuf> = std::fs::read_dir(&dir)
            .map_err(|e| {
                UsageError(format!(
                    "cannot read model repository {}: {e}",
                    dir.display()
                ))
            })?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.is_dir())
            .collect();
        dirs.sort();
        for d in dirs {
            match load_repository_model(registry, &d) {
                Ok(m) => {
                    eprintln!("mlhost serve: loaded {} from {}", m.name, d.display());
                    models.push(m);
                }
                Err(e) => eprintln!("mlhost serve: skipping {}: {e:#}", d.display()),
            }
        }
        if models.is_empty() {
            return Err(anyhow!("no model under {} could be loaded", dir.display()));
        }
    }
    let pipelines = manifest.map(|m| m.resolved).unwrap_or_default();
    Ok((models, pipelines))
}

/// Resolves on SIGTERM or SIGINT (registered now, so an early signal is not lost).
fn shutdown_signal() -> anyhow::Result<impl std::future::Future<Output = ()>> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
        let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
        Ok(async move {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        })
    }
    #[cfg(not(unix))]
    {
        Ok(async {
            let _ = tokio::signal::ctrl_c().await;
        })
    }
}
