//! The TRITONBACKEND_* entry points Triton calls. Each one runs under [`guard`], so a failure
//! becomes a TRITONSERVER_Error with our message and a panic never unwinds into Triton.

use crate::config::{self, Params, Served};
use crate::model::{self, LoadedMethod};
use crate::sys::*;
use crate::triton::*;
use mlhost::PluginRegistry;
use serde_json::Value;
use std::ffi::{c_char, c_void};
use std::path::PathBuf;
use std::sync::Arc;

struct BackendState {
    registry: PluginRegistry,
}

pub(crate) struct ModelState {
    pub(crate) name: String,
    pub(crate) method: LoadedMethod,
    pub(crate) served: Served,
}

pub(crate) struct InstanceState {
    pub(crate) name: String,
    pub(crate) model: Arc<ModelState>,
}

fn location(
    call: Err,
    what: &str,
    kind: TRITONBACKEND_ArtifactType,
    loc: *const c_char,
) -> Res<PathBuf> {
    check(call, what)?;
    if kind != TRITONBACKEND_ARTIFACT_FILESYSTEM {
        return Err(Failure::unsupported(format!(
            "{what}: artifact type {kind} is not a local file system"
        )));
    }
    // SAFETY: Triton owns the string for the object's lifetime.
    Ok(PathBuf::from(unsafe { cstr(loc) }))
}

#[no_mangle]
pub extern "C" fn TRITONBACKEND_Initialize(backend: *mut TRITONBACKEND_Backend) -> Err {
    guard("TRITONBACKEND_Initialize", || {
        let (mut major, mut minor) = (0u32, 0u32);
        // SAFETY: out-pointers to locals.
        check(
            unsafe { TRITONBACKEND_ApiVersion(&mut major, &mut minor) },
            "TRITONBACKEND_ApiVersion",
        )?;
        config::check_api_version(major, minor).map_err(Failure::unsupported)?;

        let mut cfg = std::ptr::null_mut();
        // SAFETY: backend is live; the message stays owned by Triton.
        check(
            unsafe { TRITONBACKEND_BackendConfig(backend, &mut cfg) },
            "TRITONBACKEND_BackendConfig",
        )?;
        let cfg = message_json(cfg, "backend config")?;
        let (mut kind, mut loc) = (0, std::ptr::null());
        // SAFETY: out-pointers to locals.
        let call = unsafe { TRITONBACKEND_BackendArtifacts(backend, &mut kind, &mut loc) };
        let dir = location(call, "TRITONBACKEND_BackendArtifacts", kind, loc)?;
        let dirs: Vec<PathBuf> = match cfg.pointer("/cmdline/plugin-dir").and_then(Value::as_str) {
            Some(list) => std::env::split_paths(list).collect(),
            None => vec![dir],
        };
        let registry = PluginRegistry::load(&dirs).map_err(|e| {
            Failure::internal(format!("rbln backend: loading the mlhost plugins: {e}"))
        })?;
        if registry.model_classes.is_empty() {
            return Err(Failure::internal(format!(
                "rbln backend: no mlhost model plugin in {} (put librbln_vae.so and \
                 librbln_npu.so next to libtriton_rbln.so, or pass \
                 --backend-config=rbln,plugin-dir=DIR)",
                dirs.iter()
                    .map(|d| d.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
        let names: Vec<String> = registry
            .plugins
            .iter()
            .map(|p| format!("{} {}", p.info.name, p.info.version))
            .collect();
        log(
            TRITONSERVER_LOG_INFO,
            &format!(
                "TRITONBACKEND API {major}.{minor}; mlhost plugins: {}",
                names.join(", ")
            ),
        );
        let state = Box::into_raw(Box::new(BackendState { registry }));
        // SAFETY: backend is live; the state is ours until Finalize.
        if let Err(e) = check(
            unsafe { TRITONBACKEND_BackendSetState(backend, state as *mut c_void) },
            "TRITONBACKEND_BackendSetState",
        ) {
            // SAFETY: not handed over; reclaim it.
            drop(unsafe { Box::from_raw(state) });
            return Err(e);
        }
        Ok(())
    })
}

#[no_mangle]
pub extern "C" fn TRITONBACKEND_Finalize(backend: *mut TRITONBACKEND_Backend) -> Err {
    guard("TRITONBACKEND_Finalize", || {
        let mut state = std::ptr::null_mut();
        // SAFETY: out-pointer to a local.
        check(
            unsafe { TRITONBACKEND_BackendState(backend, &mut state) },
            "TRITONBACKEND_BackendState",
        )?;
        if !state.is_null() {
            // SAFETY: set by Initialize from a Box<BackendState>; Triton calls Finalize once.
            drop(unsafe { Box::from_raw(state as *mut BackendState) });
        }
        Ok(())
    })
}

fn model_config(model: *mut TRITONBACKEND_Model) -> Res<Value> {
    let mut msg = std::ptr::null_mut();
    // SAFETY: model is live; we own the returned message.
    check(
        unsafe { TRITONBACKEND_ModelConfig(model, 1, &mut msg) },
        "TRITONBACKEND_ModelConfig",
    )?;
    let json = message_json(msg, "model config");
    delete_message(msg);
    json
}

#[no_mangle]
pub extern "C" fn TRITONBACKEND_ModelInitialize(model: *mut TRITONBACKEND_Model) -> Err {
    guard("TRITONBACKEND_ModelInitialize", || {
        let mut name = std::ptr::null();
        let mut version = 0u64;
        // SAFETY: out-pointers to locals; the name is owned by Triton.
        check(
            unsafe { TRITONBACKEND_ModelName(model, &mut name) },
            "TRITONBACKEND_ModelName",
        )?;
        let name = unsafe { cstr(name) };
        check(
            unsafe { TRITONBACKEND_ModelVersion(model, &mut version) },
            "TRITONBACKEND_ModelVersion",
        )?;
        initialize_model(model, &name, version)
            .map_err(|f| f.context(format!("rbln backend: model \"{name}\"")))
    })
}

fn initialize_model(model: *mut TRITONBACKEND_Model, name: &str, version: u64) -> Res<()> {
    let (mut kind, mut loc) = (0, std::ptr::null());
    // SAFETY: out-pointers to locals.
    let call = unsafe { TRITONBACKEND_ModelRepository(model, &mut kind, &mut loc) };
    let model_root = location(call, "TRITONBACKEND_ModelRepository", kind, loc)?;
    let mut backend = std::ptr::null_mut();
    let mut state = std::ptr::null_mut();
    // SAFETY: out-pointers to locals.
    check(
        unsafe { TRITONBACKEND_ModelBackend(model, &mut backend) },
        "TRITONBACKEND_ModelBackend",
    )?;
    check(
        unsafe { TRITONBACKEND_BackendState(backend, &mut state) },
        "TRITONBACKEND_BackendState",
    )?;
    if state.is_null() {
        return Err(Failure::internal("the backend was not initialized"));
    }
    // SAFETY: set by TRITONBACKEND_Initialize; it lives until TRITONBACKEND_Finalize, after every
    // model is finalized.
    let backend_state = unsafe { &*(state as *const BackendState) };

    let cfg = model_config(model)?;
    let params: Params = config::parse_params(&cfg).map_err(|e| Failure::invalid(e.0))?;
    let dir =
        model::resolve_dir(&model_root, version, &params).map_err(|e| Failure::from_anyhow(&e))?;
    log(
        TRITONSERVER_LOG_INFO,
        &format!(
            "model \"{name}\": loading {} of {}",
            params.method,
            dir.display()
        ),
    );
    let loaded = model::load(&backend_state.registry, &dir, &params)
        .map_err(|e| Failure::from_anyhow(&e))?;

    let mut auto = false;
    // SAFETY: out-pointer to a local.
    check(
        unsafe { TRITONBACKEND_ModelAutoCompleteConfig(model, &mut auto) },
        "TRITONBACKEND_ModelAutoCompleteConfig",
    )?;
    let cfg = match config::auto_complete(&cfg, &loaded.sig).filter(|_| auto) {
        Some(completed) => {
            let msg = new_message(&completed)?;
            // SAFETY: model is live; Triton does not take the message.
            let set = check(
                unsafe { TRITONBACKEND_ModelSetConfig(model, 1, msg) },
                "TRITONBACKEND_ModelSetConfig",
            );
            delete_message(msg);
            set?;
            model_config(model)?
        }
        None => cfg,
    };
    let served = config::check(&cfg, &loaded.sig)
        .map_err(|e| Failure::invalid(format!("config.pbtxt: {}", e.0)))?;
    log(
        TRITONSERVER_LOG_INFO,
        &format!(
            "model \"{name}\": serving {} of {} ({} `{}` {:?} -> {}; compiled batch {}, \
             max_batch_size {})",
            params.method,
            dir.display(),
            "FP32",
            loaded.sig.input.0,
            loaded.sig.input.1,
            served.outputs.join(", "),
            loaded.sig.batch,
            served.max_batch_size
        ),
    );
    let state = Box::into_raw(Box::new(Arc::new(ModelState {
        name: name.to_string(),
        method: loaded,
        served,
    })));
    // SAFETY: model is live; the state is ours until ModelFinalize.
    if let Err(e) = check(
        unsafe { TRITONBACKEND_ModelSetState(model, state as *mut c_void) },
        "TRITONBACKEND_ModelSetState",
    ) {
        // SAFETY: not handed over; reclaim it.
        drop(unsafe { Box::from_raw(state) });
        return Err(e);
    }
    Ok(())
}

#[no_mangle]
pub extern "C" fn TRITONBACKEND_ModelFinalize(model: *mut TRITONBACKEND_Model) -> Err {
    guard("TRITONBACKEND_ModelFinalize", || {
        let mut state = std::ptr::null_mut();
        // SAFETY: out-pointer to a local.
        check(
            unsafe { TRITONBACKEND_ModelState(model, &mut state) },
            "TRITONBACKEND_ModelState",
        )?;
        if !state.is_null() {
            // SAFETY: set by ModelInitialize from a Box<Arc<ModelState>>; called once.
            drop(unsafe { Box::from_raw(state as *mut Arc<ModelState>) });
        }
        Ok(())
    })
}

#[no_mangle]
pub extern "C" fn TRITONBACKEND_ModelInstanceInitialize(
    instance: *mut TRITONBACKEND_ModelInstance,
) -> Err {
    guard("TRITONBACKEND_ModelInstanceInitialize", || {
        let mut name = std::ptr::null();
        let mut kind = 0;
        let mut model = std::ptr::null_mut();
        let mut state = std::ptr::null_mut();
        // SAFETY: out-pointers to locals; strings owned by Triton.
        check(
            unsafe { TRITONBACKEND_ModelInstanceName(instance, &mut name) },
            "TRITONBACKEND_ModelInstanceName",
        )?;
        let name = unsafe { cstr(name) };
        check(
            unsafe { TRITONBACKEND_ModelInstanceKind(instance, &mut kind) },
            "TRITONBACKEND_ModelInstanceKind",
        )?;
        if kind == TRITONSERVER_INSTANCEGROUPKIND_GPU {
            return Err(Failure::unsupported(format!(
                "rbln backend: instance \"{name}\": KIND_GPU is not supported; the rbln runtime \
                 runs on the host CPU (use instance_group [{{ kind: KIND_CPU }}])"
            )));
        }
        check(
            unsafe { TRITONBACKEND_ModelInstanceModel(instance, &mut model) },
            "TRITONBACKEND_ModelInstanceModel",
        )?;
        check(
            unsafe { TRITONBACKEND_ModelState(model, &mut state) },
            "TRITONBACKEND_ModelState",
        )?;
        if state.is_null() {
            return Err(Failure::internal(
                "rbln backend: the model was not initialized",
            ));
        }
        // SAFETY: set by ModelInitialize; alive until ModelFinalize, after every instance.
        let model_state = unsafe { &*(state as *const Arc<ModelState>) }.clone();
        let inst = Box::into_raw(Box::new(InstanceState {
            name,
            model: model_state,
        }));
        // SAFETY: instance is live; the state is ours until ModelInstanceFinalize.
        if let Err(e) = check(
            unsafe { TRITONBACKEND_ModelInstanceSetState(instance, inst as *mut c_void) },
            "TRITONBACKEND_ModelInstanceSetState",
        ) {
            // SAFETY: not handed over; reclaim it.
            drop(unsafe { Box::from_raw(inst) });
            return Err(e);
        }
        Ok(())
    })
}

#[no_mangle]
pub extern "C" fn TRITONBACKEND_ModelInstanceFinalize(
    instance: *mut TRITONBACKEND_ModelInstance,
) -> Err {
    guard("TRITONBACKEND_ModelInstanceFinalize", || {
        let mut state = std::ptr::null_mut();
        // SAFETY: out-pointer to a local.
        check(
            unsafe { TRITONBACKEND_ModelInstanceState(instance, &mut state) },
            "TRITONBACKEND_ModelInstanceState",
        )?;
        if !state.is_null() {
            // SAFETY: set by ModelInstanceInitialize from a Box<InstanceState>; called once.
            drop(unsafe { Box::from_raw(state as *mut InstanceState) });
        }
        Ok(())
    })
}
