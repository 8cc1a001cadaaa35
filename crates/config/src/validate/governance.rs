//! Checks of the governance policies (keys, authorization, limits, budgets): what parsing
//! alone cannot say.

use std::collections::HashSet;
use std::path::Path;

use super::{check_cel, load_secret, problem, resolve_file, Problem};
use crate::schema::*;

pub(super) fn check(p: &mut Policies, key: &str, base: &Path) -> Result<(), Problem> {
    if let Some(a) = &mut p.api_key_auth {
        let akey = format!("{key}.apiKeyAuth");
        check_keys(&mut a.keys, &format!("{akey}.keys"), base)?;
        if let Some(f) = &mut a.keys_file {
            resolve_file(f, base, &format!("{akey}.keysFile"))?;
        }
    }
    if let Some(b) = &mut p.basic_auth {
        resolve_file(&mut b.htpasswd, base, &format!("{key}.basicAuth.htpasswd"))?;
    }
    if let Some(a) = &p.authorization {
        for (i, rule) in a.rules.iter().enumerate() {
            let rkey = format!("{key}.authorization.rules[{i}]");
            match (&rule.allow, &rule.deny) {
                (Some(e), None) => check_cel(&format!("{rkey}.allow"), "allow", e)?,
                (None, Some(e)) => check_cel(&format!("{rkey}.deny"), "deny", e)?,
                _ => {
                    return Err(problem(
                        rkey,
                        "a rule is exactly one of `allow: <CEL>` or `deny: <CEL>`",
                        Some("rules:".into()),
                    ))
                }
            }
        }
    }
    for (i, l) in p.local_rate_limit.iter().enumerate() {
        let lkey = format!("{key}.localRateLimit[{i}]");
        if let Some(e) = &l.key {
            check_cel(&format!("{lkey}.key"), "key", e)?;
        }
        if l.requests.is_none() && l.tokens.is_none() {
            return Err(problem(
                lkey,
                "a limit needs `requests: {limit, per}`, `tokens: {limit, per}` or both",
                Some("localRateLimit:".into()),
            ));
        }
        for (name, b) in [("requests", &l.requests), ("tokens", &l.tokens)] {
            if let Some(b) = b {
                if b.limit == 0 || b.per.0.is_zero() {
                    return Err(problem(
                        format!("{lkey}.{name}"),
                        "`limit` and `per` must both be above zero",
                        Some(format!("{name}:")),
                    ));
                }
            }
        }
    }
    if let Some(r) = &p.rate_limit {
        let mut names = HashSet::new();
        for (i, l) in r.limits.iter().enumerate() {
            let lkey = format!("{key}.rateLimit.limits[{i}]");
            if !names.insert(l.name.as_str()) {
                return Err(problem(
                    format!("{lkey}.name"),
                    format!("a second limit is named {:?}: names must differ", l.name),
                    Some(l.name.clone()),
                ));
            }
            if let Some(e) = &l.key {
                check_cel(&format!("{lkey}.key"), "key", e)?;
            }
            if l.requests.is_none() && l.tokens.is_none() {
                return Err(problem(
                    lkey,
                    "a limit needs `requests`, `tokens` or both",
                    Some(l.name.clone()),
                ));
            }
            if l.window.0.as_millis() < 1000 {
                return Err(problem(
                    format!("{lkey}.window"),
                    "a shared window is at least 1s",
                    Some("window".into()),
                ));
            }
        }
    }
    if let Some(b) = &p.budgets {
        let bkey = format!("{key}.budgets");
        let named = b
            .key
            .iter()
            .map(|b| ("key".to_string(), b))
            .chain(b.teams.iter().map(|(n, b)| (format!("teams.{n}"), b)))
            .chain(b.orgs.iter().map(|(n, b)| (format!("orgs.{n}"), b)));
        for (name, budget) in named {
            check_budget(budget, &format!("{bkey}.{name}"))?;
        }
        for (model, price) in &b.prices {
            if [price.input, price.output, price.cached_input.unwrap_or(0.0)]
                .iter()
                .any(|v| !v.is_finite() || *v < 0.0)
            {
                return Err(problem(
                    format!("{bkey}.prices.{model}"),
                    "prices are USD per million tokens: finite and not negative",
                    Some(model.clone()),
                ));
            }
        }
    }
    if let Some(r) = &p.remote_rate_limit {
        for (i, d) in r.descriptors.iter().enumerate() {
            for (name, e) in &d.entries {
                check_cel(
                    &format!("{key}.remoteRateLimit.descriptors[{i}].entries.{name}"),
                    name,
                    e,
                )?;
            }
        }
    }
    Ok(())
}

/// Keys: one of `key` and `hash` each, names and keys unique, secrets loaded.
pub(crate) fn check_keys(keys: &mut [ApiKey], key: &str, base: &Path) -> Result<(), Problem> {
    let mut names = HashSet::new();
    for (i, k) in keys.iter_mut().enumerate() {
        let kkey = format!("{key}[{i}]");
        if !names.insert(k.name.clone()) {
            return Err(problem(
                format!("{kkey}.name"),
                format!("a second key is named {:?}: names must differ", k.name),
                Some(k.name.clone()),
            ));
        }
        match (&mut k.key, &k.hash) {
            (Some(secret), None) => {
                load_secret(secret, base, &format!("{kkey}.key"))?;
                if secret.expose().is_empty() {
                    return Err(problem(
                        format!("{kkey}.key"),
                        "the key is empty (an unset environment variable?)",
                        Some(k.name.clone()),
                    ));
                }
            }
            (None, Some(h)) => {
                let hex = h.strip_prefix("sha256:").unwrap_or("");
                if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                    return Err(problem(
                        format!("{kkey}.hash"),
                        "expected `sha256:` and 64 hex digits (`printf %s KEY | sha256sum`)",
                        Some(h.clone()),
                    ));
                }
            }
            _ => {
                return Err(problem(
                    kkey,
                    "a key gives exactly one of `key` (the key, e.g. `$TEAM_KEY`) and `hash`",
                    Some(k.name.clone()),
                ))
            }
        }
        if let Some(b) = &k.budget {
            check_budget(b, &format!("{kkey}.budget"))?;
        }
        if let Some(r) = &k.rate_limit {
            if r.requests.is_none() && r.tokens.is_none() {
                return Err(problem(
                    format!("{kkey}.rateLimit"),
                    "a limit needs `requests`, `tokens` or both",
                    Some("rateLimit:".into()),
                ));
            }
        }
    }
    Ok(())
}

fn check_budget(b: &Budget, key: &str) -> Result<(), Problem> {
    if b.tokens.is_none() && b.cost.is_none() {
        return Err(problem(
            key,
            "a budget needs `tokens`, `cost` (USD) or both",
            Some("window".into()),
        ));
    }
    if b.cost.is_some_and(|c| !c.is_finite() || c < 0.0) {
        return Err(problem(
            format!("{key}.cost"),
            "cost is USD: finite and not negative",
            Some("cost".into()),
        ));
    }
    Ok(())
}
