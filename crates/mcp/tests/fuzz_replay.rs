//! Replays the committed fuzz corpora (`fuzz/corpus/<target>`: seeds and every crash the
//! fuzzers found) through the fuzz targets' own entry functions, so CI keeps them passing
//! without building the fuzz workspace. See bench/fuzz/README.md.

#[allow(dead_code)]
#[path = "../../../fuzz/entries/mcp.rs"]
mod entries;
#[path = "../../../fuzz/entries/replay.rs"]
mod replay;

#[test]
fn mcp_session() {
    replay::replay("mcp_session", entries::mcp_session);
}

#[test]
fn mcp_jsonrpc() {
    replay::replay("mcp_jsonrpc", entries::mcp_jsonrpc);
}

#[test]
fn mcp_serve() {
    replay::replay("mcp_serve", entries::mcp_serve);
}
