//! `balance` (route, before the attempts): which of a route's backends (deployments of one
//! model, possibly different providers) a request tries first, and the order of the rest.
//!
//! - `weighted` (the default without this policy): a weighted-random first pick, then by weight.
//! - `leastRequest`: fewest requests in flight first (streams count until they end).
//! - `leastLatency`: lowest moving average of time to response headers first; a backend not
//!   measured yet goes first, so every one gets measured.
//! - `prefixAffinity`: the same conversation start (the system prompt and the first user
//!   message, in any dialect: leading `system` messages and the first other one; Anthropic
//!   `system` and `messages[0]`; Responses `instructions` and the first `input`; Gemini
//!   `systemInstruction` and `contents[0]`) always ranks the backends the same way (rendezvous
//!   hashing), so every turn of a conversation hits the deployment whose prompt cache it
//!   warmed, and only the share of a removed deployment moves.
//!
//! Weight-0 backends (standbys) stay last whichever the strategy; resting backends are skipped
//! by `failover` as usual.

use bytes::Bytes;

use crate::snapshot::smallvec_like::Order;
use crate::snapshot::RouteRt;

const DEFAULT_PREFIX_BYTES: usize = 2048;

#[derive(Debug)]
pub struct Balance {
    strategy: config::BalanceStrategy,
    prefix_bytes: usize,
}

impl Balance {
    pub fn compile(c: &config::Balance) -> Balance {
        Balance {
            strategy: c.strategy,
            prefix_bytes: c.prefix_bytes.unwrap_or(DEFAULT_PREFIX_BYTES).max(1),
        }
    }

    /// The backends of `route` in the order to try them (`weighted`: as picked).
    pub fn order(&self, route: &RouteRt, weighted: Order, body: Option<&Bytes>) -> Order {
        use config::BalanceStrategy as S;
        let mut all: Vec<usize> = (0..weighted.len()).map(|n| weighted.get(n)).collect();
        match self.strategy {
            S::Weighted => return weighted,
            S::LeastRequest => {
                all.sort_by_key(|&i| {
                    let b = &route.backends[i];
                    (
                        b.weight == 0,
                        b.health.in_flight(),
                        std::cmp::Reverse(b.weight),
                    )
                });
            }
            S::LeastLatency => {
                all.sort_by_key(|&i| {
                    let b = &route.backends[i];
                    (b.weight == 0, b.health.latency().unwrap_or_default())
                });
            }
            S::PrefixAffinity => {
                let key = conversation_key(body.map(|b| &b[..]).unwrap_or(&[]), self.prefix_bytes);
                all.sort_by_key(|&i| {
                    let b = &route.backends[i];
                    (
                        b.weight == 0,
                        std::cmp::Reverse(score(&key, &b.name, b.weight)),
                    )
                });
            }
        }
        let mut order = Order::new();
        for i in all {
            order.push(i);
        }
        order
    }
}

/// What identifies a conversation in a request body: its system prompt and first user
/// message (so later turns, appended at the end, keep the key), at most `n` bytes of it.
fn conversation_key(body: &[u8], n: usize) -> Vec<u8> {
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(body) else {
        return body[..body.len().min(n)].to_vec();
    };
    let mut key = String::new();
    for field in ["system", "instructions", "systemInstruction"] {
        if let Some(x) = v.get(field) {
            key.push_str(&x.to_string());
        }
    }
    for field in ["messages", "input", "contents"] {
        match v.get(field) {
            Some(serde_json::Value::Array(items)) => {
                for m in items {
                    key.push_str(&m.to_string());
                    let role = m.get("role").and_then(|r| r.as_str());
                    if !matches!(role, Some("system") | Some("developer")) {
                        break;
                    }
                }
            }
            Some(other) => key.push_str(&other.to_string()),
            None => {}
        }
    }
    let mut bytes = key.into_bytes();
    bytes.truncate(n);
    bytes
}

/// Rendezvous score of a backend for a prefix, scaled by weight (a heavier deployment wins
/// more prefixes).
fn score(prefix: &[u8], backend: &str, weight: u32) -> u64 {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    ctx.update(backend.as_bytes());
    ctx.update(&[0]);
    ctx.update(prefix);
    let d = ctx.finish();
    let h = u64::from_be_bytes(d.as_ref()[..8].try_into().unwrap_or_default());
    // Weighted rendezvous: -w / ln(u), u in (0, 1].
    let u = (h >> 11) as f64 / (1u64 << 53) as f64;
    let u = u.max(f64::MIN_POSITIVE);
    let s = -(weight.max(1) as f64) / u.ln();
    (s * 1e6).min(u64::MAX as f64) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_turn_of_a_conversation_has_its_key() {
        let turn = |n: usize| {
            let mut messages = vec![
                serde_json::json!({"role": "system", "content": "You are terse."}),
                serde_json::json!({"role": "user", "content": "first question"}),
            ];
            for i in 0..n {
                messages.push(
                    serde_json::json!({"role": "assistant", "content": format!("answer {i}")}),
                );
                messages
                    .push(serde_json::json!({"role": "user", "content": format!("question {i}")}));
            }
            serde_json::json!({"model": "m", "temperature": n, "messages": messages}).to_string()
        };
        let k0 = conversation_key(turn(0).as_bytes(), 2048);
        assert_eq!(k0, conversation_key(turn(3).as_bytes(), 2048));
        assert!(String::from_utf8_lossy(&k0).contains("first question"));
        let anthropic = br#"{"system":"Be brief.","messages":[{"role":"user","content":"hi"},{"role":"assistant","content":"yo"}]}"#;
        let k = conversation_key(anthropic, 2048);
        assert!(
            String::from_utf8_lossy(&k).contains("Be brief.")
                && !String::from_utf8_lossy(&k).contains("yo")
        );
        assert_eq!(conversation_key(anthropic, 5).len(), 5);
    }

    #[test]
    fn rendezvous_scores_spread_prefixes_and_follow_weight() {
        let names = ["a", "b", "c"];
        let mut wins = [0usize; 3];
        for i in 0..3000 {
            let p = format!("prefix {i}");
            let best = (0..3)
                .max_by_key(|&j| score(p.as_bytes(), names[j], if j == 2 { 2 } else { 1 }))
                .unwrap();
            wins[best] += 1;
        }
        // c has twice the weight: about half of the prefixes.
        assert!((1300..1700).contains(&wins[2]), "{wins:?}");
        assert!(
            (600..900).contains(&wins[0]) && (600..900).contains(&wins[1]),
            "{wins:?}"
        );
    }
}
