//! A deterministic, cheap stand-in for a real tokenizer.
//!
//! Text is split on whitespace, and punctuation characters become tokens of their own; each
//! piece maps to a `u32` through a stable FNV-1a hash, so the same text always yields the same
//! ids on every pod and every run. Chat requests go through a minimal chat template (a role
//! marker token, then the content's tokens, per message, then the assistant marker as the
//! generation prompt) so that shared system prompts and multi-turn conversations share a real
//! token prefix, which is what prefix caching keys on.
//!
//! Generated tokens are words of a small filler vocabulary, chosen from a seed derived from the
//! prompt (same prompt, same answer, as with greedy decoding). A filler word re-tokenizes to the
//! very id it was generated as, so the KV blocks a pod computed while decoding turn `n` are
//! prefix-cache hits when turn `n + 1` sends that answer back as history.

use std::collections::HashMap;
use std::sync::OnceLock;

/// Ids below this are reserved for role markers and other specials.
const FIRST_WORD_ID: u32 = 1024;

fn fnv1a(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// SplitMix64: a good 64-bit mixer for seeds and indices.
pub(crate) fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// The id of one word or punctuation piece.
pub fn token_id(piece: &str) -> u32 {
    let span = u64::from(u32::MAX - FIRST_WORD_ID);
    FIRST_WORD_ID + (fnv1a(piece.as_bytes()) % span) as u32
}

/// The marker token that opens a message of `role` in the chat template.
pub fn role_token(role: &str) -> u32 {
    (fnv1a(role.as_bytes()) % u64::from(FIRST_WORD_ID - 1)) as u32 + 1
}

/// Token ids of `text`: whitespace-separated words, punctuation characters on their own.
pub fn tokenize(text: &str) -> Vec<u32> {
    let mut out = Vec::new();
    for word in text.split_whitespace() {
        let mut start = None;
        for (i, c) in word.char_indices() {
            if c.is_ascii_punctuation() {
                if let Some(s) = start.take() {
                    out.push(token_id(&word[s..i]));
                }
                out.push(token_id(&word[i..i + 1]));
            } else if start.is_none() {
                start = Some(i);
            }
        }
        if let Some(s) = start {
            out.push(token_id(&word[s..]));
        }
    }
    out
}

/// Renders a conversation with the simulator's chat template: for each `(role, content)`, the
/// role marker then the content's tokens; then the assistant marker (the generation prompt).
pub fn render_chat<'a>(messages: impl IntoIterator<Item = (&'a str, &'a str)>) -> Vec<u32> {
    let mut out = Vec::new();
    for (role, content) in messages {
        out.push(role_token(role));
        out.extend(tokenize(content));
    }
    out.push(role_token("assistant"));
    out
}

/// The words generated text is made of.
const FILLER: [&str; 64] = [
    "the", "quick", "brown", "fox", "jumps", "over", "lazy", "dog", "and", "then", "runs", "far",
    "away", "into", "green", "hills", "where", "rivers", "flow", "under", "bright", "skies",
    "while", "birds", "sing", "old", "songs", "about", "distant", "lands", "full", "of", "quiet",
    "towns", "with", "narrow", "streets", "lined", "by", "tall", "trees", "that", "sway", "in",
    "warm", "summer", "wind", "as", "people", "walk", "slowly", "home", "after", "long", "days",
    "spent", "working", "on", "small", "farms", "near", "the", "sea", "shore",
];

/// The `index`-th generated token for a request whose output seed is `seed`.
pub fn filler_token(seed: u64, index: u32) -> u32 {
    let word = FILLER[(mix(seed ^ mix(u64::from(index))) % FILLER.len() as u64) as usize];
    token_id(word)
}

/// The text of a generated token, if it is one of the filler words.
pub fn decode(token: u32) -> Option<&'static str> {
    static TABLE: OnceLock<HashMap<u32, &'static str>> = OnceLock::new();
    TABLE
        .get_or_init(|| FILLER.iter().map(|w| (token_id(w), *w)).collect())
        .get(&token)
        .copied()
}

/// The output seed of a prompt: a hash of its tokens.
pub fn prompt_seed(tokens: &[u32]) -> u64 {
    tokens
        .iter()
        .fold(0x5eed_u64, |h, t| mix(h ^ u64::from(*t)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_and_punctuation_are_tokens() {
        let t = tokenize("Hello, world!  again");
        assert_eq!(t.len(), 5);
        assert_eq!(t[0], token_id("Hello"));
        assert_eq!(t[1], token_id(","));
        assert_eq!(t[3], token_id("!"));
        assert_eq!(tokenize("a b"), tokenize(" a\n b "));
    }

    #[test]
    fn chat_template_shares_prefixes_across_turns() {
        let turn1 = render_chat([("system", "be brief"), ("user", "hi")]);
        let answer: Vec<&str> = (0..5)
            .map(|i| decode(filler_token(prompt_seed(&turn1), i)).unwrap())
            .collect();
        let answer = answer.join(" ");
        let turn2 = render_chat([
            ("system", "be brief"),
            ("user", "hi"),
            ("assistant", &answer),
            ("user", "more"),
        ]);
        assert_eq!(turn2[..turn1.len()], turn1[..]);
        let generated: Vec<u32> = (0..5)
            .map(|i| filler_token(prompt_seed(&turn1), i))
            .collect();
        assert_eq!(turn2[turn1.len()..turn1.len() + 5], generated[..]);
        assert_ne!(role_token("user"), role_token("assistant"));
    }
}
