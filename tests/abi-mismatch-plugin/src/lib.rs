//! A test fixture that looks to the host like an mlhost plugin built against an incompatible
//! plugin-api (99.0.0).
//!
//! It exports an abi_stable root module with the same `NAME`/`BASE_NAME` as
//! `plugin_api::PluginRootRef` ("mlhost_plugin") but its own prefix struct and version strings.
//! abi_stable's `LibHeader::init_root_module` checks the version before the layout, and the host
//! checks the version before calling it, so loading this library must fail with a version error
//! that names the file and both versions, never with a layout error and never by running code
//! from here.

use abi_stable::library::RootModule;
use abi_stable::prefix_type::PrefixTypeTrait;
use abi_stable::sabi_types::VersionStrings;
use abi_stable::std_types::RString;
use abi_stable::{declare_root_module_statics, export_root_module, StableAbi};

/// The plugin-api version this fixture claims to be built against.
pub const CLAIMED_ABI_VERSION: &str = "99.0.0";

/// A root module of a future, incompatible plugin-api.
#[repr(C)]
#[derive(StableAbi)]
#[sabi(kind(Prefix(prefix_ref = FutureRootRef)))]
#[sabi(missing_field(panic))]
pub struct FutureRoot {
    /// A field the current plugin-api does not have at this position.
    #[sabi(last_prefix_field)]
    pub describe: extern "C" fn() -> RString,
}

impl RootModule for FutureRootRef {
    declare_root_module_statics! {FutureRootRef}
    const BASE_NAME: &'static str = "mlhost_plugin";
    const NAME: &'static str = "mlhost_plugin";
    const VERSION_STRINGS: VersionStrings = VersionStrings::new(CLAIMED_ABI_VERSION);
}

extern "C" fn describe() -> RString {
    RString::from("abi-mismatch-plugin: built against plugin-api 99.0.0")
}

/// The exported root module.
#[export_root_module]
pub fn get_root_module() -> FutureRootRef {
    FutureRoot { describe }.leak_into_prefix()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn claims_a_different_major_version_under_the_host_name() {
        assert_eq!(FutureRootRef::NAME, plugin_api::PluginRootRef::NAME);
        let ours = FutureRootRef::VERSION_STRINGS.parsed().unwrap();
        let host = plugin_api::PluginRootRef::VERSION_STRINGS.parsed().unwrap();
        assert_ne!(ours.major, host.major);
        assert!(get_root_module().describe()().contains("99.0.0"));
    }
}
