//! Hugging Face Hub ids: `mlhost compile org/name --subfolder vae --variant fp16` against a
//! loopback server that answers `/{repo}/resolve/{revision}/{path}` as the Hub does (HEAD with
//! X-Repo-Commit and ETag / X-Linked-Etag / X-Linked-Size, a relative redirect for a renamed
//! repository, an absolute redirect of LFS files to a CDN host that must get no token, 404s with
//! X-Error-Code, 401 without the token), then offline from the cache it wrote, and offline from
//! a cache written by Python's huggingface_hub (`tests/fixtures/hub_cache/`, made by
//! `tests/fixtures/hub_cache.py`).

mod support;

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::Response;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use support::*;

const COMMIT: &str = "4c1d5ee0c0ffee0a11ce0b0b0decade0f00dbabe";
const TOKEN: &str = "hf_loopback_token";

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures")
        .join(name)
}

/// A file of a repository: its content, and whether the Hub stores it in LFS (then the HEAD
/// redirects to the CDN and names the blob by X-Linked-Etag).
struct HubFile {
    content: Vec<u8>,
    lfs: bool,
}

/// One request as the server saw it.
#[derive(Debug, Clone)]
struct Seen {
    method: String,
    path: String,
    authorization: Option<String>,
}

struct Hub {
    /// repo -> path -> file.
    repos: BTreeMap<String, BTreeMap<String, HubFile>>,
    /// Repositories that answer 401 without the token.
    private: Vec<String>,
    /// old name -> new name (a relative 307 from the old one).
    renamed: BTreeMap<String, String>,
    /// Repositories whose LFS files announce one byte more than they send.
    short: Vec<String>,
    seen: Mutex<Vec<Seen>>,
    /// `http://localhost:PORT`: the CDN's origin (the endpoint is `http://127.0.0.1:PORT`).
    cdn: Mutex<String>,
}

/// An ETag the way the Hub makes them differ for small and LFS files; opaque to mlhost.
fn etag(content: &[u8], lfs: bool) -> String {
    let mut h: u64 = 0xcbf29ce484222325;
    for b in content {
        h = (h ^ u64::from(*b)).wrapping_mul(0x100000001b3);
    }
    if lfs {
        format!("{h:016x}{:016x}{h:016x}{:016x}", !h, h.rotate_left(7))
    } else {
        format!("{h:016x}{:016x}{:08x}", !h, h as u32)
    }
}

fn respond(status: StatusCode, headers: &[(&str, String)], body: Vec<u8>) -> Response {
    let mut b = Response::builder().status(status);
    for (k, v) in headers {
        b = b.header(*k, v);
    }
    b.body(Body::from(body)).unwrap()
}

fn error(status: StatusCode, code: &str, commit: bool) -> Response {
    let mut headers = vec![("X-Error-Code", code.to_string())];
    if commit {
        headers.push(("X-Repo-Commit", COMMIT.to_string()));
    }
    respond(status, &headers, code.as_bytes().to_vec())
}

async fn handle(
    State(hub): State<Arc<Hub>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    let path = uri.path().to_string();
    let authorization = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    hub.seen.lock().unwrap().push(Seen {
        method: method.to_string(),
        path: path.clone(),
        authorization: authorization.clone(),
    });
    let head = method == Method::HEAD;
    if let Some(rest) = path.strip_prefix("/cdn/") {
        // A CDN's signed URL (/cdn/{org}/{name}/{etag}): a token sent here would leak it.
        if authorization.is_some() {
            return respond(
                StatusCode::BAD_REQUEST,
                &[],
                b"token sent to the CDN".to_vec(),
            );
        }
        let (repo, tag) = rest.rsplit_once('/').unwrap_or(("", rest));
        let found = hub.repos.get(repo).and_then(|files| {
            files
                .values()
                .find(|f| f.lfs && etag(&f.content, true) == tag)
        });
        return match found {
            Some(f) => {
                let mut body = f.content.clone();
                if hub.short.iter().any(|r| r == repo) {
                    body.pop();
                }
                respond(StatusCode::OK, &[], body)
            }
            None => respond(StatusCode::NOT_FOUND, &[], Vec::new()),
        };
    }
    // /{org}/{name}/resolve/{revision}/{path...}
    let parts: Vec<&str> = path.trim_start_matches('/').splitn(5, '/').collect();
    let [org, name, "resolve", revision, file] = parts[..] else {
        return respond(StatusCode::NOT_FOUND, &[], Vec::new());
    };
    let repo = format!("{org}/{name}");
    if let Some(new) = hub.renamed.get(&repo) {
        return respond(
            StatusCode::TEMPORARY_REDIRECT,
            &[("Location", format!("/{new}/resolve/{revision}/{file}"))],
            Vec::new(),
        );
    }
    let Some(files) = hub.repos.get(&repo) else {
        // The Hub answers 401 for a repository it does not show this caller.
        return error(StatusCode::UNAUTHORIZED, "RepoNotFound", false);
    };
    if hub.private.contains(&repo) && authorization.as_deref() != Some(&format!("Bearer {TOKEN}")) {
        return error(StatusCode::UNAUTHORIZED, "RepoNotFound", false);
    }
    if revision != "main" && revision != COMMIT {
        return error(StatusCode::NOT_FOUND, "RevisionNotFound", false);
    }
    let Some(f) = files.get(file) else {
        return error(StatusCode::NOT_FOUND, "EntryNotFound", true);
    };
    let commit = ("X-Repo-Commit", COMMIT.to_string());
    if f.lfs {
        let tag = etag(&f.content, true);
        let cdn = hub.cdn.lock().unwrap().clone();
        return respond(
            StatusCode::FOUND,
            &[
                commit,
                ("X-Linked-Etag", format!("\"{tag}\"")),
                ("X-Linked-Size", f.content.len().to_string()),
                ("ETag", "\"not-the-blob\"".into()),
                ("Location", format!("{cdn}/cdn/{repo}/{tag}")),
            ],
            Vec::new(),
        );
    }
    let headers = [
        commit,
        ("ETag", format!("\"{}\"", etag(&f.content, false))),
        ("Content-Length", f.content.len().to_string()),
    ];
    respond(
        StatusCode::OK,
        &headers,
        if head { Vec::new() } else { f.content.clone() },
    )
}

/// The loopback Hub, serving on its own thread until dropped.
struct Server {
    hub: Arc<Hub>,
    endpoint: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Server {
    fn start() -> Server {
        let read = |p: &str| std::fs::read(fixture("f16_weights").join(p)).unwrap();
        let tiny_vae = || {
            BTreeMap::from([
                (
                    "model_index.json".to_string(),
                    HubFile {
                        content: br#"{"_class_name": "StableDiffusionPipeline", "vae": ["diffusers", "AutoencoderKL"]}"#.to_vec(),
                        lfs: false,
                    },
                ),
                (
                    "vae/config.json".to_string(),
                    HubFile {
                        content: read("config.json"),
                        lfs: false,
                    },
                ),
                (
                    "vae/diffusion_pytorch_model.fp16.safetensors".to_string(),
                    HubFile {
                        content: read("diffusion_pytorch_model.safetensors"),
                        lfs: true,
                    },
                ),
            ])
        };
        let hub = Arc::new(Hub {
            repos: BTreeMap::from([
                ("org/tiny-vae".to_string(), tiny_vae()),
                ("org/private".to_string(), tiny_vae()),
                ("org/short".to_string(), tiny_vae()),
            ]),
            private: vec!["org/private".into()],
            renamed: BTreeMap::from([("old-org/tiny-vae".to_string(), "org/tiny-vae".to_string())]),
            short: vec!["org/short".into()],
            seen: Mutex::new(Vec::new()),
            cdn: Mutex::new(String::new()),
        });
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let (tx, rx) = std::sync::mpsc::channel();
        let state = hub.clone();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
                tx.send(listener.local_addr().unwrap().port()).unwrap();
                let app = axum::Router::new().fallback(handle).with_state(state);
                axum::serve(listener, app)
                    .with_graceful_shutdown(async {
                        let _ = stopped.await;
                    })
                    .await
                    .unwrap();
            });
        });
        let port = rx.recv().unwrap();
        *hub.cdn.lock().unwrap() = format!("http://localhost:{port}");
        Server {
            hub,
            endpoint: format!("http://127.0.0.1:{port}"),
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    fn seen(&self) -> Vec<Seen> {
        self.hub.seen.lock().unwrap().clone()
    }

    fn forget(&self) {
        self.hub.seen.lock().unwrap().clear();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// `mlhost --plugin-dir P ARGS` with a Hub environment of its own: the cache `cache`, `HF_HOME`
/// `home` (no token file unless a test writes one), `endpoint` (None: offline).
fn hub_cmd(plugins: &Path, cache: &Path, home: &Path, endpoint: Option<&str>) -> Command {
    let mut cmd = mlhost();
    for k in [
        "HF_TOKEN",
        "HF_TOKEN_PATH",
        "XDG_CACHE_HOME",
        "HUGGINGFACE_HUB_CACHE",
    ] {
        cmd.env_remove(k);
    }
    cmd.env("HF_HUB_CACHE", cache).env("HF_HOME", home);
    match endpoint {
        Some(e) => cmd.env("HF_ENDPOINT", e).env_remove("HF_HUB_OFFLINE"),
        None => cmd
            .env("HF_ENDPOINT", "http://127.0.0.1:1")
            .env("HF_HUB_OFFLINE", "1"),
    };
    cmd.arg("--plugin-dir").arg(plugins);
    cmd
}

/// Every file under `dir` (relative), symlinks as `path -> target`.
fn tree(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            let rel = p.strip_prefix(dir).unwrap().display().to_string();
            let meta = std::fs::symlink_metadata(&p).unwrap();
            if meta.file_type().is_symlink() {
                out.push(format!(
                    "{rel} -> {}",
                    std::fs::read_link(&p).unwrap().display()
                ));
            } else if meta.is_dir() {
                stack.push(p);
            } else {
                out.push(rel);
            }
        }
    }
    out.sort();
    out
}

fn compile(cmd: &mut Command, id: &str, out: &Path, extra: &[&str]) -> Outcome {
    run(cmd.arg("compile").arg(id).arg("-o").arg(out).args(extra))
}

const VAE_FP16: &[&str] = &["--subfolder", "vae", "--variant", "fp16"];

/// The decoder that compiling the local fixture `f16_weights/` (into `work/local`) writes: what a
/// compile of the Hub copy of its weights must write too.
fn compiled_locally(plugins: &Path, work: &Path) -> Vec<u8> {
    let out = run(mlhost()
        .arg("--plugin-dir")
        .arg(plugins)
        .arg("compile")
        .arg(fixture("f16_weights"))
        .arg("-o")
        .arg(work.join("local")));
    assert_eq!(out.code, 0, "{out:?}");
    std::fs::read(work.join("local/decoder.rbln")).unwrap()
}

#[test]
fn downloads_into_huggingface_hubs_layout_then_compiles_offline() {
    let plugins = plugin_dir(&[RBLN_NPU, RBLN_VAE]);
    let work = TempDir::new("hub");
    let (cache, home) = (work.path().join("cache"), work.path().join("home"));
    let server = Server::start();
    let ep = Some(server.endpoint.as_str());

    let out = compile(
        &mut hub_cmd(plugins.path(), &cache, &home, ep),
        "org/tiny-vae",
        &work.path().join("online"),
        VAE_FP16,
    );
    assert_eq!(out.code, 0, "{out:?}");
    let weights =
        std::fs::read(fixture("f16_weights/diffusion_pytorch_model.safetensors")).unwrap();
    let config = std::fs::read(fixture("f16_weights/config.json")).unwrap();
    let (wtag, ctag) = (etag(&weights, true), etag(&config, false));
    let repo = cache.join("models--org--tiny-vae");
    let mut expected = vec![
            format!("blobs/{ctag}"),
            format!("blobs/{wtag}"),
            "refs/main".to_string(),
            format!("snapshots/{COMMIT}/vae/config.json -> ../../../blobs/{ctag}"),
            format!(
                "snapshots/{COMMIT}/vae/diffusion_pytorch_model.fp16.safetensors -> ../../../blobs/{wtag}"
            ),
    ];
    expected.sort();
    assert_eq!(
        tree(&repo),
        expected,
        "blobs by ETag, relative snapshot links, refs/main; no temporary file left"
    );
    assert_eq!(
        std::fs::read_to_string(repo.join("refs/main")).unwrap(),
        COMMIT
    );
    assert_eq!(
        std::fs::read(repo.join("blobs").join(&wtag)).unwrap(),
        weights
    );
    let seen = server.seen();
    let cdn: Vec<&Seen> = seen
        .iter()
        .filter(|s| s.path.starts_with("/cdn/"))
        .collect();
    assert_eq!(cdn.len(), 1, "{seen:?}");
    assert_eq!(cdn[0].method, "GET");
    assert!(
        seen.iter().all(|s| s.authorization.is_none()),
        "no token, none sent: {seen:?}"
    );

    // Asked again without --subfolder: model_index.json makes it a pipeline, so vae/; the
    // cached blobs are not downloaded again.
    server.forget();
    let out = compile(
        &mut hub_cmd(plugins.path(), &cache, &home, ep),
        "org/tiny-vae",
        &work.path().join("pipeline"),
        &["--variant", "fp16"],
    );
    assert_eq!(out.code, 0, "{out:?}");
    let seen = server.seen();
    assert!(
        seen.iter()
            .all(|s| s.method == "HEAD" || s.path.ends_with("model_index.json")),
        "{seen:?}"
    );
    assert!(repo
        .join(format!("snapshots/{COMMIT}/model_index.json"))
        .is_file());

    // Offline, with the server gone: the cache alone, by branch and by commit.
    drop(server);
    for (rev, dir) in [("main", "offline"), (COMMIT, "offline-commit")] {
        let out = compile(
            &mut hub_cmd(plugins.path(), &cache, &home, None),
            "org/tiny-vae",
            &work.path().join(dir),
            &[VAE_FP16, &["--revision", rev][..]].concat(),
        );
        assert_eq!(out.code, 0, "{rev}: {out:?}");
    }
    // And the same compile as from the local fixture: the variant's weights were read.
    let local = compiled_locally(plugins.path(), work.path());
    for dir in ["online", "pipeline", "offline", "offline-commit"] {
        assert_eq!(
            std::fs::read(work.path().join(dir).join("decoder.rbln")).unwrap(),
            local,
            "{dir}"
        );
    }
    assert_eq!(
        tree(&cache.join("models--org--tiny-vae")).len(),
        7,
        "offline writes nothing"
    );
}

#[test]
fn hub_errors_name_what_was_looked_for() {
    let plugins = plugin_dir(&[RBLN_NPU, RBLN_VAE]);
    let work = TempDir::new("hub-errors");
    let (cache, home) = (work.path().join("cache"), work.path().join("home"));
    std::fs::create_dir_all(&home).unwrap();
    let server = Server::start();
    let endpoint = server.endpoint.clone();
    let ep = Some(endpoint.as_str());
    let out_dir = work.path().join("out");
    let fails = |out: &Outcome, code: i32, needles: &[&str]| {
        assert_eq!(out.code, code, "{out:?}");
        assert!(!out.stderr.contains("panicked"), "{out:?}");
        for n in needles {
            assert!(out.stderr.contains(n), "{n:?} not in {}", out.stderr);
        }
        assert!(!out_dir.exists());
    };
    let cmd = || hub_cmd(plugins.path(), &cache, &home, ep);

    let out = compile(
        &mut cmd(),
        "org/tiny-vae",
        &out_dir,
        &[VAE_FP16, &["--revision", "nope"][..]].concat(),
    );
    fails(
        &out,
        2,
        &["org/tiny-vae", "revision \"nope\"", "does not exist", "404"],
    );

    let out = compile(
        &mut cmd(),
        "org/tiny-vae",
        &out_dir,
        &["--subfolder", "vae", "--variant", "bf16"],
    );
    fails(
        &out,
        2,
        &[
            "org/tiny-vae has no file vae/diffusion_pytorch_model.bf16.safetensors",
            "variant \"bf16\"",
        ],
    );

    // 401 without the token, and nothing in the cache to fall back on.
    let out = compile(&mut cmd(), "org/private", &out_dir, VAE_FP16);
    fails(
        &out,
        2,
        &[
            "org/private",
            "revision \"main\"",
            "vae/config.json",
            "401",
            "HF_TOKEN",
            "not in the Hugging Face cache",
        ],
    );
    let out = compile(&mut cmd(), "nobody/nothing", &out_dir, VAE_FP16);
    fails(&out, 2, &["nobody/nothing", "401"]);

    // The token from HF_TOKEN, then from $HF_HOME/token; never sent to the CDN.
    server.forget();
    let out = compile(
        cmd().env("HF_TOKEN", TOKEN),
        "org/private",
        &work.path().join("t1"),
        VAE_FP16,
    );
    assert_eq!(out.code, 0, "{out:?}");
    let seen = server.seen();
    assert!(
        seen.iter()
            .filter(|s| !s.path.starts_with("/cdn/"))
            .all(|s| s.authorization.as_deref() == Some(&format!("Bearer {TOKEN}"))),
        "{seen:?}"
    );
    assert!(seen.iter().any(|s| s.path.starts_with("/cdn/")), "{seen:?}");
    std::fs::remove_dir_all(cache.join("models--org--private")).unwrap();
    std::fs::write(home.join("token"), format!("{TOKEN}\n")).unwrap();
    let out = compile(&mut cmd(), "org/private", &work.path().join("t2"), VAE_FP16);
    assert_eq!(out.code, 0, "{out:?}");
    std::fs::remove_file(home.join("token")).unwrap();

    // A renamed repository: the relative redirect is followed; the files land under the name
    // asked for, as huggingface_hub stores them.
    let out = compile(
        &mut cmd(),
        "old-org/tiny-vae",
        &work.path().join("renamed"),
        VAE_FP16,
    );
    assert_eq!(out.code, 0, "{out:?}");
    assert!(cache
        .join(format!(
            "models--old-org--tiny-vae/snapshots/{COMMIT}/vae/config.json"
        ))
        .is_file());

    // A body shorter than announced: an error, and no blob or temporary file.
    let out = compile(&mut cmd(), "org/short", &out_dir, VAE_FP16);
    fails(&out, 1, &["the body ended after"]);
    let blobs = tree(&cache.join("models--org--short/blobs"));
    assert_eq!(blobs.len(), 1, "only config.json's blob: {blobs:?}");

    // Offline: a miss names the id, revision, file, the cache and what was looked at.
    let out = compile(
        &mut hub_cmd(plugins.path(), &cache, &home, None),
        "org/absent",
        &out_dir,
        VAE_FP16,
    );
    let cache_s = cache.display().to_string();
    let refs = cache
        .join("models--org--absent/refs/main")
        .display()
        .to_string();
    fails(
        &out,
        2,
        &[
            "org/absent revision \"main\" file vae/config.json",
            &cache_s,
            &refs,
            "HF_HUB_OFFLINE",
        ],
    );

    // No endpoint answers: the cache is used when it has the file, else the error says so.
    drop(server);
    let gone = |c: &mut Command| {
        c.env("HF_ENDPOINT", "http://127.0.0.1:1");
    };
    let mut c = cmd();
    gone(&mut c);
    let out = compile(
        &mut c,
        "org/tiny-vae",
        &work.path().join("cached"),
        VAE_FP16,
    );
    fails(
        &out,
        1,
        &[
            "no endpoint answered",
            "org/tiny-vae revision \"main\" file vae/diffusion_pytorch_model.fp16.safetensors",
        ],
    );
    let mut c = cmd();
    gone(&mut c);
    let out = compile(&mut c, "org/private", &work.path().join("cached"), VAE_FP16);
    assert_eq!(out.code, 0, "{out:?}");
}

#[test]
fn reads_a_cache_written_by_huggingface_hub() {
    let plugins = plugin_dir(&[RBLN_NPU, RBLN_VAE]);
    let work = TempDir::new("hub-python");
    let cache = fixture("hub_cache");
    let before = tree(&cache);
    assert!(
        before
            .iter()
            .any(|l| l.contains("vae/diffusion_pytorch_model.fp16.safetensors -> ../../../blobs/")),
        "{before:?}"
    );
    let home = work.path().join("home");
    let out = compile(
        &mut hub_cmd(plugins.path(), &cache, &home, None),
        "org/tiny-vae",
        &work.path().join("hub"),
        VAE_FP16,
    );
    assert_eq!(out.code, 0, "{out:?}");
    let local = compiled_locally(plugins.path(), work.path());
    assert_eq!(
        std::fs::read(work.path().join("hub/decoder.rbln")).unwrap(),
        local
    );
    // A manifest naming the Hub model: `mlhost compile MANIFEST` reads the same snapshot.
    let manifest = work.path().join("m.yaml");
    std::fs::write(
        &manifest,
        "models:\n  - name: vae\n    model_id: org/tiny-vae\n    variant: fp16\n",
    )
    .unwrap();
    let out = run(hub_cmd(plugins.path(), &cache, &home, None)
        .arg("compile")
        .arg(&manifest)
        .arg("-o")
        .arg(work.path().join("manifest")));
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(
        std::fs::read(work.path().join("manifest/vae/decoder.rbln")).unwrap(),
        local
    );
    let compiled = std::fs::read_to_string(work.path().join("manifest/manifest.yaml")).unwrap();
    assert!(!compiled.contains("variant"), "{compiled}");
    assert_eq!(tree(&cache), before, "reading the cache changes nothing");
}
