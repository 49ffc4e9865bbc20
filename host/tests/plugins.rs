//! Plugin discovery and loading: the real rbln-npu / rbln-vae cdylibs, the ABI-mismatch fixture,
//! non-plugin libraries, duplicates, and the `mlhost plugins` listing.

mod support;

use mlhost::plugins::{host_abi_version, PluginRegistry};
use mlhost::RegistryError;
use support::*;

#[test]
fn loads_rbln_npu_in_process() {
    let dir = plugin_dir(&[RBLN_NPU]);
    let registry = PluginRegistry::load(&[dir.path().to_path_buf()]).unwrap();
    assert_eq!(registry.plugins.len(), 1);
    let plugin = &registry.plugins[0];
    assert_eq!(plugin.path, dir.path().join(library_file_name(RBLN_NPU)));
    assert_eq!(plugin.info.abi_version.as_str(), host_abi_version());
    let compiler = registry.compiler("rbln-npu").unwrap();
    assert!(!compiler.artifact_extension().is_empty());
    let device = registry.device("rbln-npu").unwrap();
    assert!(!device.description().is_empty());
    assert_eq!(registry.select_compiler(None).unwrap(), "rbln-npu");
    assert!(registry.backend("rbln-npu", "rbln-npu").is_ok());
    let e = registry.select_model_class(None).unwrap_err();
    assert!(matches!(e, RegistryError::NoneLoaded { .. }), "{e}");
    let e = registry.device("tpu").map(|_| ()).unwrap_err().to_string();
    assert!(e.contains("\"tpu\"") && e.contains("rbln-npu"), "{e}");
}

#[test]
fn abi_mismatch_is_refused_in_process() {
    let dir = plugin_dir(&[ABI_MISMATCH]);
    let e = PluginRegistry::load(&[dir.path().to_path_buf()]).unwrap_err();
    let RegistryError::IncompatibleVersion {
        path,
        plugin,
        plugin_version,
        host_version,
    } = &e
    else {
        panic!("expected a version error, got: {e}");
    };
    assert_eq!(path, &dir.path().join(library_file_name(ABI_MISMATCH)));
    assert_eq!(plugin, "abi-mismatch-plugin");
    assert_eq!(plugin_version, "99.0.0");
    assert_eq!(host_version, host_abi_version());
    let msg = e.to_string();
    assert!(
        msg.contains(&format!(
            "was built against plugin-api 99.0.0, this host uses {}",
            host_abi_version()
        )),
        "{msg}"
    );
}

#[test]
fn abi_mismatch_is_a_cli_error_naming_file_and_versions() {
    let dir = plugin_dir(&[RBLN_NPU, ABI_MISMATCH]);
    let out = run(mlhost().arg("plugins").arg("--plugin-dir").arg(dir.path()));
    assert_eq!(out.code, 1, "{out:?}");
    let lib = dir.path().join(library_file_name(ABI_MISMATCH));
    assert!(out.stderr.starts_with("error: "), "{out:?}");
    assert!(out.stderr.contains(&lib.display().to_string()), "{out:?}");
    assert!(out.stderr.contains("99.0.0"), "{out:?}");
    assert!(out.stderr.contains(host_abi_version()), "{out:?}");
    assert!(!out.stderr.contains("panicked"), "{out:?}");
    assert!(out.stdout.is_empty(), "{out:?}");
}

#[test]
fn non_plugin_libraries_are_skipped() {
    let dir = plugin_dir(&[RBLN_NPU]);
    let proc_macro = dir.path().join(library_file_name("not_a_plugin"));
    std::fs::copy(non_plugin_library(), &proc_macro).unwrap();
    let garbage = dir.path().join(library_file_name("garbage"));
    std::fs::write(&garbage, b"this is not an ELF file").unwrap();
    std::fs::write(dir.path().join("README.txt"), b"ignored").unwrap();

    let out = run(mlhost()
        .args(["-vv", "plugins", "--plugin-dir"])
        .arg(dir.path()));
    assert_eq!(out.code, 0, "{out:?}");
    assert!(out.stdout.starts_with("rbln-npu "), "{out:?}");
    assert!(!out.stdout.contains("not_a_plugin"), "{out:?}");
    let skip = format!("skipping {}", proc_macro.display());
    assert!(out.stderr.contains(&skip), "{out:?}");
    let skip = format!("skipping {}", garbage.display());
    assert!(out.stderr.contains(&skip), "{out:?}");
    assert!(out.stderr.contains("not a shared library"), "{out:?}");

    // Without -v the scan says nothing about them: neither is opened (nothing to warn about).
    let out = run(mlhost().args(["plugins", "--plugin-dir"]).arg(dir.path()));
    assert_eq!(out.code, 0, "{out:?}");
    assert!(
        !out.stderr.contains("skipping") && !out.stderr.contains("WARN"),
        "{out:?}"
    );

    // Named explicitly, a library that is not a plugin is an input error.
    let out = run(mlhost().arg("plugins").arg("--plugin-dir").arg(&proc_macro));
    assert_eq!(out.code, 2, "{out:?}");
    assert!(out.stderr.contains("is not an mlhost plugin"), "{out:?}");
}

#[test]
fn duplicate_names_are_an_error_naming_both_files() {
    let a = plugin_dir(&[RBLN_NPU]);
    let b = plugin_dir(&[RBLN_NPU]);
    let out = run(mlhost()
        .arg("plugins")
        .arg("--plugin-dir")
        .arg(a.path())
        .arg("--plugin-dir")
        .arg(b.path()));
    assert_eq!(out.code, 1, "{out:?}");
    for dir in [a.path(), b.path()] {
        let lib = dir.join(library_file_name(RBLN_NPU));
        assert!(out.stderr.contains(&lib.display().to_string()), "{out:?}");
    }
    assert!(
        out.stderr
            .contains("\"rbln-npu\" is provided by two plugins"),
        "{out:?}"
    );

    // The same directory twice is one plugin, not a duplicate.
    let out = run(mlhost()
        .arg("plugins")
        .arg("--plugin-dir")
        .arg(a.path())
        .arg("--plugin-dir")
        .arg(a.path()));
    assert_eq!(out.code, 0, "{out:?}");
}

#[test]
fn plugins_lists_what_each_plugin_provides() {
    let dir = plugin_dir(&[RBLN_NPU, RBLN_VAE]);
    let out = run(mlhost().arg("plugins").arg("--plugin-dir").arg(dir.path()));
    assert_eq!(out.code, 0, "{out:?}");
    let s = &out.stdout;
    let npu = s.find("rbln-npu ").expect("rbln-npu listed");
    let vae = s.find("rbln-vae ").expect("rbln-vae listed");
    assert!(npu < vae, "{s}");
    assert!(
        s.contains(&format!("(plugin-api {})", host_abi_version())),
        "{s}"
    );
    let npu_path = dir.path().join(library_file_name(RBLN_NPU));
    assert!(s.contains(&format!("path: {}", npu_path.display())), "{s}");
    assert!(s.contains("compilers: rbln-npu (artifacts: ."), "{s}");
    assert!(s.contains("    rbln-npu: "), "{s}");
    assert!(s.contains("model classes: RBLNAutoencoderKL"), "{s}");
    // The NPU runtime has no hardware here; its description must say what really executes.
    assert!(s.to_lowercase().contains("cpu"), "{s}");
}

#[test]
fn plugin_dir_env_and_flag_precedence() {
    let good = plugin_dir(&[RBLN_NPU]);
    let bad = plugin_dir(&[ABI_MISMATCH]);
    let out = run(mlhost()
        .arg("plugins")
        .env("MLHOST_PLUGIN_DIR", good.path()));
    assert_eq!(out.code, 0, "{out:?}");
    assert!(out.stdout.starts_with("rbln-npu "), "{out:?}");

    let list = std::env::join_paths([bad.path(), good.path()]).unwrap();
    let out = run(mlhost().arg("plugins").env("MLHOST_PLUGIN_DIR", &list));
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stderr.contains("99.0.0"), "{out:?}");

    // --plugin-dir wins over the environment.
    let out = run(mlhost()
        .arg("plugins")
        .arg("--plugin-dir")
        .arg(good.path())
        .env("MLHOST_PLUGIN_DIR", bad.path()));
    assert_eq!(out.code, 0, "{out:?}");
}

#[test]
fn missing_and_empty_plugin_dirs() {
    let empty = TempDir::new("empty");
    let missing = empty.path().join("nope");
    let out = run(mlhost().arg("plugins").arg("--plugin-dir").arg(&missing));
    assert_eq!(out.code, 2, "{out:?}");
    assert!(
        out.stderr.contains(&missing.display().to_string()),
        "{out:?}"
    );

    let out = run(mlhost()
        .arg("plugins")
        .arg("--plugin-dir")
        .arg(empty.path()));
    assert_eq!(out.code, 0, "{out:?}");
    assert!(out.stdout.starts_with("no plugins found in "), "{out:?}");
}

#[test]
fn default_search_path_is_the_executable_directory() {
    let dir = plugin_dir(&[RBLN_NPU]);
    let exe = dir.path().join(mlhost_exe().file_name().unwrap());
    std::fs::copy(mlhost_exe(), &exe).unwrap();
    let mut cmd = std::process::Command::new(&exe);
    cmd.arg("plugins").env_remove("MLHOST_PLUGIN_DIR");
    let out = run(&mut cmd);
    assert_eq!(out.code, 0, "{out:?}");
    let lib = dir.path().join(library_file_name(RBLN_NPU));
    assert!(
        out.stdout.contains(&format!("path: {}", lib.display())),
        "{out:?}"
    );
}
