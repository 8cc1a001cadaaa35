//! Replays the committed fuzz corpora (`fuzz/corpus/<target>`: seeds and every crash the
//! fuzzers found) through the fuzz targets' own entry functions, so CI keeps them passing
//! without building the fuzz workspace. See bench/fuzz/README.md.

#[allow(dead_code)]
#[path = "../../../fuzz/entries/llm.rs"]
mod entries;
#[path = "../../../fuzz/entries/replay.rs"]
mod replay;

#[test]
fn sse() {
    replay::replay("sse", entries::sse);
}

#[test]
fn eventstream() {
    replay::replay("eventstream", entries::eventstream);
}

#[test]
fn request_translate() {
    replay::replay("request_translate", entries::request_translate);
}

#[test]
fn response_translate() {
    replay::replay("response_translate", entries::response_translate);
}

#[test]
fn stream_translate() {
    replay::replay("stream_translate", entries::stream_translate);
}
