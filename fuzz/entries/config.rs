// Fuzz entry point for the config loader and snapshot compiler. Included with `#[path]` by
// fuzz/fuzz_targets/config.rs and by crates/proxy/tests/fuzz_replay.rs.

use std::path::Path;

/// Config YAML through `${VAR}` expansion, parsing, validation and `proxy::snapshot::compile`.
/// Compiling spawns tasks (trace exporters, pool scrapers), so it runs inside a fresh
/// current-thread runtime that is never driven: nothing spawned runs, nothing binds or
/// connects, and dropping the runtime drops the tasks. Variables
/// named `UNSET*` are unset; others expand to text chosen by their name (`PORT*` to a port,
/// `BOOL*` to `true`).
pub fn config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let env = |name: &str| -> Option<String> {
        if name.starts_with("UNSET") {
            None
        } else if name.starts_with("PORT") {
            Some("8080".into())
        } else if name.starts_with("BOOL") {
            Some("true".into())
        } else {
            Some(format!("value-of-{name}"))
        }
    };
    let Ok(loaded) = config::load_str(
        text,
        Path::new("fuzz.yaml"),
        Path::new("/nonexistent-fuzz-base"),
        env,
    ) else {
        return;
    };
    let _ = config::redacted_dump(&loaded.config);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a current-thread runtime");
    let _guard = rt.enter();
    let cache = proxy::snapshot::ClientCache::default();
    let _ = proxy::snapshot::compile(&loaded, &cache);
}
