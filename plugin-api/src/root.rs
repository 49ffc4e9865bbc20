//! The root module every plugin exports.

use crate::traits::{CompilerBox, DeviceBox, ModelClassBox};
use abi_stable::library::RootModule;
use abi_stable::sabi_types::VersionStrings;
use abi_stable::std_types::{RString, RVec};
use abi_stable::{declare_root_module_statics, package_version_strings, StableAbi};

/// The version of this interface crate; plugins built against an incompatible one are refused.
pub const ABI_VERSION: &str = env!("CARGO_PKG_VERSION");

/// What a plugin is and provides, for `mlhost plugins`.
#[repr(C)]
#[derive(StableAbi, Clone, Debug)]
pub struct PluginInfo {
    /// The plugin's name, e.g. `rbln-vae`.
    pub name: RString,
    /// The plugin's own version.
    pub version: RString,
    /// The plugin-api version it was built against.
    pub abi_version: RString,
    /// One line saying what it is.
    pub description: RString,
}

/// The root module: a prefix struct of constructors. New fields go after
/// `last_prefix_field` so older hosts keep loading newer plugins.
#[repr(C)]
#[derive(StableAbi)]
#[sabi(kind(Prefix(prefix_ref = PluginRootRef)))]
#[sabi(missing_field(panic))]
pub struct PluginRoot {
    /// Name, version and description.
    pub info: extern "C" fn() -> PluginInfo,
    /// Model classes provided (may be empty).
    pub model_classes: extern "C" fn() -> RVec<ModelClassBox>,
    /// Compilers provided (may be empty).
    pub compilers: extern "C" fn() -> RVec<CompilerBox>,
    /// Devices provided (may be empty).
    #[sabi(last_prefix_field)]
    pub devices: extern "C" fn() -> RVec<DeviceBox>,
}

impl RootModule for PluginRootRef {
    declare_root_module_statics! {PluginRootRef}
    const BASE_NAME: &'static str = "mlhost_plugin";
    const NAME: &'static str = "mlhost_plugin";
    const VERSION_STRINGS: VersionStrings = package_version_strings!();
}
