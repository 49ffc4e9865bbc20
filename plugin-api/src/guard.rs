//! Panic containment for exported entry points.

use crate::error::{PluginError, PluginResult};
use abi_stable::std_types::RResult;
use std::panic::{catch_unwind, AssertUnwindSafe};

/// Runs `f`, converting both its error and any panic into a [`PluginResult`].
///
/// Every `extern "C"` function and every `#[sabi_trait]` method implementation of a plugin must
/// go through this: a panic that unwinds across the boundary aborts the host process.
pub fn guard<T>(f: impl FnOnce() -> Result<T, PluginError>) -> PluginResult<T> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(v)) => RResult::ROk(v),
        Ok(Err(e)) => RResult::RErr(e),
        Err(payload) => {
            let msg = if let Some(s) = payload.downcast_ref::<&str>() {
                (*s).to_string()
            } else if let Some(s) = payload.downcast_ref::<String>() {
                s.clone()
            } else {
                "unknown panic payload".to_string()
            };
            RResult::RErr(PluginError::internal(format!(
                "plugin panicked (this is a bug): {msg}"
            )))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn panic_becomes_internal_error() {
        let r: PluginResult<()> = guard(|| panic!("boom {}", 7));
        let e = r.into_result().unwrap_err();
        assert_eq!(e.kind, crate::ErrorKind::Internal);
        assert!(e.message().contains("boom 7"), "{}", e.message());
    }

    #[test]
    fn error_passes_through() {
        let r: PluginResult<u8> = guard(|| Err(PluginError::not_found("x")));
        assert_eq!(r.into_result().unwrap_err(), PluginError::not_found("x"));
        let r: PluginResult<u8> = guard(|| Ok(3));
        assert_eq!(r.into_result().unwrap(), 3);
    }
}
