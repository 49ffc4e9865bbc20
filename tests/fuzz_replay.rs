//! Replays every committed fuzz corpus entry and every minimized crash (`tests/fuzz/corpus/<target>/`
//! and `tests/fuzz/regressions/<target>/`) through the fuzz target bodies, so that what a
//! campaign found stays fixed. A target without seeds fails: a replay of nothing proves nothing.

use std::path::{Path, PathBuf};

fn entries(dir: &Path) -> Vec<PathBuf> {
    let Ok(read) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = read
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    files
}

#[test]
fn every_corpus_entry_and_regression_runs_without_panicking() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    for (name, target) in fuzz_targets::targets() {
        let seeds = entries(&root.join("corpus").join(name));
        assert!(
            !seeds.is_empty(),
            "fuzz target {name} has no seed corpus under tests/fuzz/corpus/{name}/"
        );
        let regressions = entries(&root.join("regressions").join(name));
        for file in seeds.iter().chain(&regressions) {
            let data = std::fs::read(file).expect("read a corpus entry");
            let outcome = std::panic::catch_unwind(|| target(&data));
            assert!(
                outcome.is_ok(),
                "fuzz target {name} panicked on {}",
                file.display()
            );
        }
        eprintln!(
            "{name}: {} corpus entries, {} regressions",
            seeds.len(),
            regressions.len()
        );
    }
}

#[test]
fn every_target_has_a_libfuzzer_entry_point() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/fuzz_targets");
    for (name, _) in fuzz_targets::targets() {
        let file = dir.join(format!("{name}.rs"));
        let text =
            std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        assert!(
            text.contains(&format!("fuzz_targets::{name}(")),
            "{} does not call fuzz_targets::{name}",
            file.display()
        );
    }
}
