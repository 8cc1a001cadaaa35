// Included with `#[path]` by crates/*/tests/fuzz_replay.rs: replays a fuzz target's committed
// corpus (fuzz/corpus/<target>/*) through its entry function, so CI keeps every input that
// once crashed (and the seeds) passing without building the fuzz workspace.

use std::path::PathBuf;

/// Runs `entry` on every file of `fuzz/corpus/<target>`; panics naming the file that
/// panicked. Returns how many inputs ran.
pub fn replay(target: &str, entry: fn(&[u8])) -> usize {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../fuzz/corpus")
        .join(target);
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()))
        .map(|e| e.expect("a directory entry").path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no corpus in {}", dir.display());
    for f in &files {
        let data = std::fs::read(f).expect("a corpus file");
        if std::panic::catch_unwind(|| entry(&data)).is_err() {
            panic!("fuzz target {target} panicked on {}", f.display());
        }
    }
    files.len()
}
