//! Small safe helpers over the Triton C API: errors, log lines, JSON messages, clocks.

use crate::sys::*;
use mlhost::error::{kind_of, ErrorKind};
use serde_json::Value;
use std::ffi::{c_char, CStr, CString};

/// An error to hand to Triton: its code and our message.
#[derive(Debug)]
pub struct Failure {
    pub code: TRITONSERVER_Error_Code,
    pub msg: String,
}

impl Failure {
    /// The one mapping of mlhost's error kinds to Triton's error codes.
    pub fn from_kind(kind: ErrorKind, msg: impl Into<String>) -> Failure {
        let code = match kind {
            ErrorKind::Invalid => TRITONSERVER_ERROR_INVALID_ARG,
            ErrorKind::NotFound => TRITONSERVER_ERROR_NOT_FOUND,
            ErrorKind::Unsupported => TRITONSERVER_ERROR_UNSUPPORTED,
            ErrorKind::Unavailable | ErrorKind::Timeout => TRITONSERVER_ERROR_UNAVAILABLE,
            ErrorKind::Internal => TRITONSERVER_ERROR_INTERNAL,
        };
        Failure {
            code,
            msg: msg.into(),
        }
    }
    /// The failure of an mlhost error, by its kind.
    pub fn from_anyhow(e: &anyhow::Error) -> Failure {
        Failure::from_kind(kind_of(e), format!("{e:#}"))
    }
    pub fn invalid(msg: impl Into<String>) -> Failure {
        Failure {
            code: TRITONSERVER_ERROR_INVALID_ARG,
            msg: msg.into(),
        }
    }
    pub fn internal(msg: impl Into<String>) -> Failure {
        Failure {
            code: TRITONSERVER_ERROR_INTERNAL,
            msg: msg.into(),
        }
    }
    pub fn unsupported(msg: impl Into<String>) -> Failure {
        Failure {
            code: TRITONSERVER_ERROR_UNSUPPORTED,
            msg: msg.into(),
        }
    }
    /// Prefixes the message with `what: `.
    pub fn context(mut self, what: impl std::fmt::Display) -> Failure {
        self.msg = format!("{what}: {}", self.msg);
        self
    }
    /// A new TRITONSERVER_Error owned by the caller.
    pub fn into_error(self) -> Err {
        new_error(self.code, &self.msg)
    }
}

pub type Res<T> = Result<T, Failure>;

fn c_string(s: &str) -> CString {
    CString::new(s.replace('\0', " ")).unwrap_or_default()
}

/// A new TRITONSERVER_Error with `msg`.
pub fn new_error(code: TRITONSERVER_Error_Code, msg: &str) -> Err {
    let msg = c_string(msg);
    // SAFETY: msg is a valid NUL-terminated string; Triton copies it.
    unsafe { TRITONSERVER_ErrorNew(code, msg.as_ptr()) }
}

/// Turns a returned TRITONSERVER_Error into a Failure (deleting it), naming the call.
pub fn check(err: Err, call: &str) -> Res<()> {
    if err.is_null() {
        return Ok(());
    }
    // SAFETY: err is a live error we own; its message lives until ErrorDelete.
    let msg = unsafe { cstr(TRITONSERVER_ErrorMessage(err)) };
    // SAFETY: we own err and do not use it again.
    unsafe { TRITONSERVER_ErrorDelete(err) };
    Err(Failure::internal(format!("{call} failed: {msg}")))
}

/// A copy of a C string owned by Triton ("" for null).
///
/// # Safety
/// `p` is null or points to a NUL-terminated string alive for this call.
pub unsafe fn cstr(p: *const c_char) -> String {
    if p.is_null() {
        return String::new();
    }
    // SAFETY: by the caller's contract.
    unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
}

/// Writes a line to Triton's log.
pub fn log(level: TRITONSERVER_LogLevel, msg: &str) {
    let file = c_string("triton_rbln");
    let msg = match msg.starts_with("rbln backend") {
        true => c_string(msg),
        false => c_string(&format!("rbln backend: {msg}")),
    };
    // SAFETY: both strings are valid for the call.
    let err = unsafe { TRITONSERVER_LogMessage(level, file.as_ptr(), 0, msg.as_ptr()) };
    if !err.is_null() {
        // SAFETY: we own err.
        unsafe { TRITONSERVER_ErrorDelete(err) };
    }
}

/// The JSON of a TRITONSERVER_Message (not deleted: the caller decides ownership).
pub fn message_json(msg: *mut TRITONSERVER_Message, what: &str) -> Res<Value> {
    let mut base: *const c_char = std::ptr::null();
    let mut size = 0usize;
    // SAFETY: msg is a live message; base/size are out-pointers.
    check(
        unsafe { TRITONSERVER_MessageSerializeToJson(msg, &mut base, &mut size) },
        "TRITONSERVER_MessageSerializeToJson",
    )?;
    if base.is_null() {
        return Err(Failure::internal(format!(
            "{what}: Triton returned no JSON"
        )));
    }
    // SAFETY: Triton guarantees `size` bytes at `base` for the message's lifetime.
    let bytes = unsafe { std::slice::from_raw_parts(base as *const u8, size) };
    serde_json::from_slice(bytes)
        .map_err(|e| Failure::internal(format!("{what}: Triton's JSON does not parse: {e}")))
}

/// A new TRITONSERVER_Message holding `value` (the caller deletes it).
pub fn new_message(value: &Value) -> Res<*mut TRITONSERVER_Message> {
    let text = value.to_string();
    let mut msg = std::ptr::null_mut();
    // SAFETY: text outlives the call; Triton copies it.
    check(
        unsafe {
            TRITONSERVER_MessageNewFromSerializedJson(
                &mut msg,
                text.as_ptr() as *const c_char,
                text.len(),
            )
        },
        "TRITONSERVER_MessageNewFromSerializedJson",
    )?;
    Ok(msg)
}

/// Deletes a message we own.
pub fn delete_message(msg: *mut TRITONSERVER_Message) {
    // SAFETY: msg is a message we own, not used after this.
    let err = unsafe { TRITONSERVER_MessageDelete(msg) };
    let _ = check(err, "TRITONSERVER_MessageDelete");
}

/// Nanoseconds of the monotonic clock (what std::chrono::steady_clock reads on Linux).
pub fn now_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: ts is a valid out-pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// The message of a caught panic.
pub fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        s.to_string()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "a panic without a message".to_string()
    }
}

/// Runs `f`, turning its failure or panic into a TRITONSERVER_Error (null on success).
pub fn guard(what: &str, f: impl FnOnce() -> Res<()>) -> Err {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        Ok(Ok(())) => std::ptr::null_mut(),
        Ok(Err(failure)) => {
            log(TRITONSERVER_LOG_ERROR, &failure.msg);
            failure.into_error()
        }
        Err(p) => {
            let msg = format!("{what}: internal error (panic): {}", panic_message(&*p));
            log(TRITONSERVER_LOG_ERROR, &msg);
            new_error(TRITONSERVER_ERROR_INTERNAL, &msg)
        }
    }
}
