//! `mlhost compile`'s output directory: never the input, an existing one only with
//! `--overwrite` and only if mlhost wrote it; every refusal is exit code 2 with a message
//! naming the directory (and what it holds), leaving it exactly as it was and no temporary
//! behind. The model and manifest paths agree.

mod support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use support::*;

fn tree(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.insert(
                    p.strip_prefix(dir).unwrap().to_path_buf(),
                    std::fs::read(&p).unwrap(),
                );
            }
        }
    }
    out
}

fn compile(plugins: &Path, input: &Path, out: &Path, extra: &[&str]) -> Outcome {
    run(mlhost()
        .arg("--plugin-dir")
        .arg(plugins)
        .arg("compile")
        .arg(input)
        .arg("-o")
        .arg(out)
        .args(extra))
}

/// What is compiled, where to, with which flags, and what the refusal must mention.
type Case<'a> = (&'a str, &'a Path, &'a Path, &'a [&'a str], &'a [&'a str]);

#[test]
fn refusals_leave_everything_as_it_was() {
    let plugins = plugin_dir(&[RBLN_NPU, RBLN_VAE]);
    let root = TempDir::new("compile-output");
    let vae = root.path().join("vae");
    std::fs::create_dir(&vae).unwrap();
    let model = Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/default");
    for f in ["config.json", "diffusion_pytorch_model.safetensors"] {
        std::fs::copy(model.join(f), vae.join(f)).unwrap();
    }
    let notes = root.path().join("notes");
    std::fs::create_dir(&notes).unwrap();
    std::fs::write(notes.join("todo.txt"), b"keep").unwrap();
    let out = root.path().join("out");
    assert_eq!(compile(plugins.path(), &vae, &out, &[]).code, 0);
    let extra = root.path().join("extra");
    assert_eq!(compile(plugins.path(), &vae, &extra, &[]).code, 0);
    std::fs::write(extra.join("mine.txt"), b"x").unwrap();
    let manifest = root.path().join("m.yaml");
    std::fs::write(
        &manifest,
        format!("models:\n  - name: vae\n    model_id: {}\n", vae.display()),
    )
    .unwrap();
    let cases: [Case; 7] = [
        (
            "into the input",
            &vae,
            &vae,
            &[],
            &["is the input directory"],
        ),
        (
            "into the input, --overwrite",
            &vae,
            &vae,
            &["--overwrite"],
            &["is the input directory"],
        ),
        (
            "into an existing compile",
            &vae,
            &out,
            &[],
            &["already exists", "--overwrite"],
        ),
        (
            "over unrelated files",
            &vae,
            &notes,
            &["--overwrite"],
            &["not a directory mlhost compiled", "todo.txt"],
        ),
        (
            "over a compile plus a file",
            &vae,
            &extra,
            &["--overwrite"],
            &["mine.txt"],
        ),
        (
            "a manifest over an existing dir",
            &manifest,
            &out,
            &[],
            &["already exists"],
        ),
        (
            "a manifest over a model compile",
            &manifest,
            &out,
            &["--overwrite"],
            &["not a directory mlhost compiled", "rbln_config.json"],
        ),
    ];
    for (what, input, target, flags, needles) in cases {
        let before = tree(root.path());
        let r = compile(plugins.path(), input, target, flags);
        assert_eq!(r.code, 2, "{what}: {r:?}");
        assert!(
            r.stderr.contains(&target.display().to_string()),
            "{what}: {}",
            r.stderr
        );
        for n in needles {
            assert!(
                r.stderr.contains(n),
                "{what}: {} does not mention {n:?}",
                r.stderr
            );
        }
        assert_eq!(tree(root.path()), before, "{what}: something changed");
    }
    // Allowed: replacing a previous compile, and a manifest compile replacing its own output.
    let before = tree(&out);
    let r = compile(
        plugins.path(),
        &vae,
        &out,
        &["--overwrite", "--batch-size", "2"],
    );
    assert_eq!(r.code, 0, "{r:?}");
    assert_ne!(tree(&out), before);
    let mdir = root.path().join("mcompiled");
    for flags in [&[][..], &["--overwrite"][..]] {
        let r = compile(plugins.path(), &manifest, &mdir, flags);
        assert_eq!(r.code, 0, "{flags:?}: {r:?}");
    }
    let names: Vec<String> = std::fs::read_dir(root.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.'))
        .collect();
    assert!(names.is_empty(), "temporaries left behind: {names:?}");
}
