//! Provider-neutral LLM translation between the OpenAI Chat Completions and
//! Anthropic Messages wire formats: requests, non-streaming responses, error
//! bodies and SSE streams. Pure functions and state machines over bytes and
//! `serde_json`; no HTTP or async dependencies.
//!
//! Wire formats follow the providers' references:
//! - OpenAI Chat Completions: <https://platform.openai.com/docs/api-reference/chat>
//!   (request, `chat.completion`, `chat.completion.chunk`, `stream_options.include_usage`)
//!   and error bodies `{"error":{"message","type","param","code"}}`.
//! - Anthropic Messages: <https://docs.anthropic.com/en/api/messages>,
//!   streaming <https://docs.anthropic.com/en/docs/build-with-claude/streaming>,
//!   errors <https://docs.anthropic.com/en/api/errors>.
//!
//! - Google Gemini `generateContent` (egress only, see `gemini/`):
//!   <https://ai.google.dev/api/generate-content>.
//!
//! - Amazon Bedrock `Converse` / `ConverseStream` (egress only, see
//!   `bedrock/`): <https://docs.aws.amazon.com/bedrock/latest/APIReference/API_runtime_Converse.html>.
//!
//! - OpenAI Responses (ingress only, through the Chat pivot, see
//!   `responses/`): <https://platform.openai.com/docs/api-reference/responses>.
//!
//! What cannot be carried across is listed in `crates/llm/README.md`.

mod anthropic;
mod bedrock;
mod dialect;
mod errors;
mod gemini;
mod model;
mod openai;
mod pivot;
mod request;
mod response;
mod responses;
mod sse;
mod stream;

pub use bedrock::eventstream;
pub use errors::{error_body, error_body_with_code, translate_error};
pub use model::{model_in_body, model_in_path};
pub use request::{apply_request_options, prepare_request};
pub use response::{translate_response, translate_response_with_model};
pub use stream::StreamTranslator;

/// Internals the fuzz targets (`fuzz/`) and their corpus replay tests drive directly; not
/// part of the API.
#[doc(hidden)]
pub mod __fuzz {
    pub use crate::sse::{SseEvent, SseParser};
}

use serde_json::{Map, Value};

/// A wire dialect, for the client side (ingress) or the provider side (egress).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    OpenAiChat,
    AnthropicMessages,
    /// Google Gemini `generateContent` (Gemini API and Vertex AI). Egress
    /// only: the model goes in the URL path, not the body.
    Gemini,
    /// OpenAI Responses API (`POST /v1/responses`). Ingress only and
    /// stateless: translated through OpenAI Chat Completions (see
    /// `responses/`).
    OpenAiResponses,
    /// Amazon Bedrock Runtime `Converse` / `ConverseStream`. Egress only:
    /// the model goes in the URL path, streams are AWS event-stream frames
    /// (see `bedrock/`, `bedrock/eventstream.rs`).
    Bedrock,
}

/// Token usage in provider-neutral terms.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Usage {
    /// OpenAI `prompt_tokens`; Anthropic `input_tokens + cache_read_input_tokens + cache_creation_input_tokens`.
    pub input_tokens: Option<u64>,
    pub output_tokens: Option<u64>,
    /// OpenAI `prompt_tokens_details.cached_tokens`; Anthropic `cache_read_input_tokens`.
    pub cached_input_tokens: Option<u64>,
    /// OpenAI `completion_tokens_details.reasoning_tokens` (Anthropic does not report it separately).
    pub reasoning_tokens: Option<u64>,
}

/// One prompt message flattened to text: text parts joined with "\n";
/// the system prompt is included as role "system".
#[derive(Clone, Debug, PartialEq)]
pub struct PromptMessage {
    pub role: String,
    pub content: String,
}

/// Gateway configuration applied while preparing a request.
pub struct RequestOptions<'a> {
    /// Provider-level forced model (config `provider.openAI.model`); wins over aliases.
    pub model_override: Option<&'a str>,
    /// (pattern, target) in config order; pattern may contain `*` wildcards
    /// (glob, full match). First match wins.
    pub model_aliases: &'a [(String, String)],
    /// Top-level request fields set only when absent (after overrides).
    pub defaults: &'a Map<String, Value>,
    /// Top-level request fields always set. Applied to the INGRESS-format
    /// request, before translation, so users write them in the client's
    /// format (e.g. `max_completion_tokens` for OpenAI clients even when the
    /// provider speaks Anthropic). Overrides beat defaults for the same key.
    pub overrides: &'a Map<String, Value>,
    /// `max_tokens` used when translating to Anthropic and the client gave none.
    pub default_max_tokens: u64,
}

/// A request ready to send upstream.
#[derive(Debug)]
pub struct PreparedRequest {
    /// The request body to send upstream, in egress format.
    pub body: Vec<u8>,
    /// Model the client asked for (before overrides, aliases and model_override).
    pub request_model: Option<String>,
    /// Model sent upstream.
    pub upstream_model: Option<String>,
    pub stream: bool,
    /// Sampling parameters in the client's format and spelling (temperature,
    /// top_p, max_tokens / max_completion_tokens, stop, seed, ...), with
    /// overrides and defaults applied, i.e. the effective values.
    pub params: Map<String, Value>,
    pub prompt: Vec<PromptMessage>,
}

/// An error in the gateway's own handling of a request or response.
#[derive(Debug, Clone, PartialEq)]
pub struct LlmError {
    pub status: u16,
    pub message: String,
}

impl LlmError {
    pub(crate) fn bad_request(message: impl Into<String>) -> Self {
        LlmError {
            status: 400,
            message: message.into(),
        }
    }

    pub(crate) fn bad_gateway(message: impl Into<String>) -> Self {
        LlmError {
            status: 502,
            message: message.into(),
        }
    }
}

impl std::fmt::Display for LlmError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} (status {})", self.message, self.status)
    }
}

impl std::error::Error for LlmError {}

/// What the gateway learned from a response (for logs, metrics and limits).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ResponseInfo {
    pub model: Option<String>,
    pub usage: Usage,
    /// OpenAI: the text of each choice; Anthropic: the text blocks concatenated.
    pub completion: Vec<String>,
}

/// Token-count estimate for a prepared request, used for limits before the
/// provider reports real usage: each message's text counted with the
/// `o200k_base` BPE (GPT-4o and later; other vendors' tokenizers differ by
/// some percent, which is the precision a limit needs), plus the chat
/// framing OpenAI documents for its models: 3 tokens per message and 3 to
/// prime the reply. The BPE tables load on first use (tens of MiB), so a
/// gateway that never estimates never pays for them.
pub fn estimate_input_tokens(prompt: &[PromptMessage]) -> u64 {
    if prompt.is_empty() {
        return 0;
    }
    let bpe = tiktoken_rs::o200k_base_singleton();
    let text: u64 = prompt
        .iter()
        .map(|m| bpe.count_ordinary(&m.content) as u64 + MESSAGE_FRAMING_TOKENS)
        .sum();
    text + REPLY_PRIMING_TOKENS
}

/// Longest completion text (per choice) a stream keeps for telemetry and for counting the
/// tokens of a stream that broke off; the rest is not kept. Process-wide
/// (`config.limits.maxRecordedTextBytes`, set at each config load).
static RECORDED_TEXT_CAP: std::sync::atomic::AtomicUsize =
    std::sync::atomic::AtomicUsize::new(DEFAULT_RECORDED_TEXT_CAP);

/// The default of [`set_recorded_text_cap`]: 256 KiB.
pub const DEFAULT_RECORDED_TEXT_CAP: usize = 256 * 1024;

/// Sets the cap on completion text kept per choice (see [`recorded_text_cap`]).
pub fn set_recorded_text_cap(bytes: usize) {
    RECORDED_TEXT_CAP.store(bytes, std::sync::atomic::Ordering::Relaxed);
}

/// Longest completion text kept per choice while a response streams.
pub fn recorded_text_cap() -> usize {
    RECORDED_TEXT_CAP.load(std::sync::atomic::Ordering::Relaxed)
}

/// Appends `text` to recorded text `to`, up to `cap` bytes in all (cut on a char boundary).
/// Returns whether anything was left out.
pub fn push_capped(to: &mut String, text: &str, cap: usize) -> bool {
    let room = cap.saturating_sub(to.len());
    if text.len() <= room {
        to.push_str(text);
        return false;
    }
    let mut end = room;
    while end > 0 && !text.is_char_boundary(end) {
        end -= 1;
    }
    to.push_str(&text[..end]);
    true
}

/// Cuts recorded text to `cap` bytes (on a char boundary), giving the rest of its memory back.
pub fn cap_text(text: &mut String, cap: usize) {
    if text.len() <= cap {
        return;
    }
    let mut end = cap;
    while end > 0 && !text.is_char_boundary(end) {
        end -= 1;
    }
    text.truncate(end);
    text.shrink_to_fit();
}

/// Tokens of a plain text (`o200k_base`), e.g. the part of a completion that was streamed
/// before the stream broke off.
pub fn count_text_tokens(text: &str) -> u64 {
    if text.is_empty() {
        return 0;
    }
    tiktoken_rs::o200k_base_singleton().count_ordinary(text) as u64
}

const MESSAGE_FRAMING_TOKENS: u64 = 3;
const REPLY_PRIMING_TOKENS: u64 = 3;

/// Glob match used for model aliases: `*` matches any run of characters
/// (including none), everything else matches literally, and the whole of
/// `text` must match.
pub fn glob_match(pattern: &str, text: &str) -> bool {
    if !pattern.contains('*') {
        return pattern == text;
    }
    // Byte by byte, which for UTF-8 is the same as char by char: a literal run of the pattern
    // starts with a leading byte, so it can only line up with the text at a char boundary.
    // (Nothing is allocated: every request's model is matched against the aliases.)
    let (p, t) = (pattern.as_bytes(), text.as_bytes());
    let (mut pi, mut ti) = (0usize, 0usize);
    // Position of the last `*` seen and the text position it was tried at,
    // for linear-time backtracking.
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && p[pi] == b'*' {
            star = Some((pi, ti));
            pi += 1;
        } else if pi < p.len() && p[pi] == t[ti] {
            pi += 1;
            ti += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == b'*')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glob_wildcards() {
        assert!(glob_match("gpt-4*", "gpt-4o-mini"));
        assert!(glob_match("gpt-4*", "gpt-4"));
        assert!(glob_match("*", ""));
        assert!(glob_match("claude-*-sonnet*", "claude-3-5-sonnet-latest"));
        assert!(glob_match("a*b*c", "aXXbYYc"));
        assert!(!glob_match("a*b*c", "aXXbYY"));
        assert!(!glob_match("gpt-4", "gpt-4o"), "no implicit prefix match");
        assert!(!glob_match("*-mini", "gpt-4o-mini-2024"));
        assert!(glob_match("*mini*", "gpt-4o-mini-2024"));
        assert!(glob_match("", ""));
        assert!(!glob_match("", "x"));
        // Non-ASCII on either side: `*` takes whole characters, literals match whole ones.
        assert!(glob_match("modèle-*", "modèle-rapide"));
        assert!(glob_match("*é", "café"));
        assert!(!glob_match("caf*e", "café"));
        assert!(glob_match("日本*語", "日本の語"));
        assert!(!glob_match("日*", "本日"));
    }

    #[test]
    fn estimate_counts_bpe_tokens_and_chat_framing() {
        let p = |s: &str| PromptMessage {
            role: "user".into(),
            content: s.into(),
        };
        assert_eq!(estimate_input_tokens(&[]), 0);
        // "hello world" is two o200k tokens.
        assert_eq!(estimate_input_tokens(&[p("hello world")]), 2 + 3 + 3);
        assert_eq!(
            estimate_input_tokens(&[p("hello world"), p("hello world")]),
            2 * (2 + 3) + 3
        );
        // Real tokenization, not a bytes/4 guess: a repeated word is one token each.
        let long = "word ".repeat(1000);
        let n = estimate_input_tokens(&[p(&long)]);
        assert!((1000..=1010).contains(&n), "{n}");
    }
}

#[cfg(test)]
mod recorded_text_tests {
    use super::{cap_text, push_capped};

    #[test]
    fn recorded_text_stops_at_the_cap_on_a_char_boundary() {
        let mut s = String::new();
        assert!(!push_capped(&mut s, "abc", 8));
        // "é" is two bytes: the cut falls before it rather than inside it.
        assert!(push_capped(&mut s, "defgéh", 8));
        assert_eq!(s, "abcdefg");
        // The byte left is filled, then nothing more is taken.
        assert!(push_capped(&mut s, "more", 8));
        assert_eq!(s, "abcdefgm");
        assert!(push_capped(&mut s, "x", 8));
        assert_eq!(s, "abcdefgm");
        let mut long = "x".repeat(1000) + "é";
        cap_text(&mut long, 1000);
        assert_eq!(long.len(), 1000);
        assert!(long.capacity() < 1002);
        let mut short = String::from("hé");
        cap_text(&mut short, 2);
        assert_eq!(short, "h");
    }
}
