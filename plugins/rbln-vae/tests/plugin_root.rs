//! Loads the built `cdylib` through abi_stable, as the host does, and checks its root module.

use plugin_api::abi_stable::library::lib_header_from_path;
use plugin_api::PluginRootRef;

#[test]
fn cdylib_exports_the_root_module() {
    // cargo builds the cdylib beside this test executable (target/<profile>/deps/); only a
    // top-level `cargo build` also copies it up to target/<profile>/.
    let exe = std::env::current_exe().unwrap();
    let deps = exe.parent().unwrap();
    let name = format!(
        "{}rbln_vae{}",
        std::env::consts::DLL_PREFIX,
        std::env::consts::DLL_SUFFIX
    );
    let path = [deps.join(&name), deps.parent().unwrap().join(&name)]
        .into_iter()
        .find(|p| p.exists())
        .unwrap_or_else(|| panic!("{name} was not built next to {}", deps.display()));
    let root = lib_header_from_path(&path)
        .and_then(|h| h.init_root_module::<PluginRootRef>())
        .unwrap_or_else(|e| panic!("loading {}: {e}", path.display()));
    let info = root.info()();
    assert_eq!(info.name.as_str(), "rbln-vae");
    assert_eq!(info.abi_version.as_str(), plugin_api::ABI_VERSION);
    let classes = root.model_classes()();
    assert_eq!(classes.len(), 1);
    assert_eq!(classes[0].name().as_str(), "RBLNAutoencoderKL");
    assert!(root.compilers()().is_empty());
    assert!(root.devices()().is_empty());
}
