//! What a call costs: USD per million tokens by model, from the config over a small built-in
//! table. Money is counted in micro-dollars (integers), so counters add exactly.

use config::Price;

/// Published list prices (USD per million tokens: input, cached input, output) of a few
/// well-known models, as of late 2025. The config's `budgets.prices` wins over these.
const BUILT_IN: &[(&str, f64, f64, f64)] = &[
    ("gpt-4o-mini*", 0.15, 0.075, 0.60),
    ("gpt-4o*", 2.50, 1.25, 10.00),
    ("gpt-4.1-nano*", 0.10, 0.025, 0.40),
    ("gpt-4.1-mini*", 0.40, 0.10, 1.60),
    ("gpt-4.1*", 2.00, 0.50, 8.00),
    ("o4-mini*", 1.10, 0.275, 4.40),
    ("o3*", 2.00, 0.50, 8.00),
    ("gpt-5-nano*", 0.05, 0.005, 0.40),
    ("gpt-5-mini*", 0.25, 0.025, 2.00),
    ("gpt-5*", 1.25, 0.125, 10.00),
    ("text-embedding-3-small*", 0.02, 0.02, 0.0),
    ("text-embedding-3-large*", 0.13, 0.13, 0.0),
    ("claude-opus-4*", 15.00, 1.50, 75.00),
    ("claude-sonnet-4*", 3.00, 0.30, 15.00),
    ("claude-3-7-sonnet*", 3.00, 0.30, 15.00),
    ("claude-3-5-sonnet*", 3.00, 0.30, 15.00),
    ("claude-haiku-4*", 1.00, 0.10, 5.00),
    ("claude-3-5-haiku*", 0.80, 0.08, 4.00),
    ("gemini-2.5-pro*", 1.25, 0.31, 10.00),
    ("gemini-2.5-flash*", 0.30, 0.075, 2.50),
    ("gemini-2.0-flash*", 0.10, 0.025, 0.40),
];

/// Prices for one snapshot: the config's entries first (exact names before patterns), then
/// the built-in table.
#[derive(Debug, Default)]
pub struct PriceTable {
    entries: Vec<(String, Price)>,
}

impl PriceTable {
    pub fn new(config: &std::collections::BTreeMap<String, Price>) -> PriceTable {
        let mut entries: Vec<(String, Price)> =
            config.iter().map(|(k, v)| (k.clone(), *v)).collect();
        // Exact names before wildcards, longer patterns before shorter ones.
        entries.sort_by_key(|(k, _)| (k.contains('*'), std::cmp::Reverse(k.len())));
        entries.extend(BUILT_IN.iter().map(|(m, i, c, o)| {
            (
                m.to_string(),
                Price {
                    input: *i,
                    cached_input: Some(*c),
                    output: *o,
                },
            )
        }));
        PriceTable { entries }
    }

    pub fn price(&self, model: &str) -> Option<&Price> {
        self.entries
            .iter()
            .find(|(pattern, _)| llm::glob_match(pattern, model))
            .map(|(_, p)| p)
    }

    /// Micro-dollars for a call's tokens; `None` when the model has no price.
    pub fn cost_micros(
        &self,
        model: &str,
        input: u64,
        cached_input: u64,
        output: u64,
    ) -> Option<i64> {
        let p = self.price(model)?;
        let cached = cached_input.min(input);
        // USD per million tokens × tokens = micro-dollars.
        let micros = (input - cached) as f64 * p.input
            + cached as f64 * p.cached_input.unwrap_or(p.input)
            + output as f64 * p.output;
        Some(micros.ceil().min(i64::MAX as f64) as i64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_prices_win_and_patterns_match_versions() {
        let mut cfg = std::collections::BTreeMap::new();
        cfg.insert(
            "gpt-4o".to_string(),
            Price {
                input: 1.0,
                cached_input: None,
                output: 2.0,
            },
        );
        let t = PriceTable::new(&cfg);
        // 1000 in, 500 out at 1 and 2 USD per million: 0.002 USD = 2000 micro-USD.
        assert_eq!(t.cost_micros("gpt-4o", 1000, 0, 500), Some(2000));
        // A dated version of the mini model uses the built-in price, not gpt-4o*'s.
        assert_eq!(
            t.cost_micros("gpt-4o-mini-2024-07-18", 1_000_000, 0, 0),
            Some(150_000)
        );
        // Cached input at its own price.
        assert_eq!(
            t.cost_micros("claude-sonnet-4-5", 1_000_000, 1_000_000, 0),
            Some(300_000)
        );
        assert_eq!(t.cost_micros("my-local-llama", 10, 0, 10), None);
    }
}
