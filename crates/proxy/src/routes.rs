//! Listener and route selection with Gateway API precedence.

use std::borrow::Cow;
use std::cmp::Reverse;
use std::sync::Arc;

use http::request::Parts;

use config::{KeyValueMatch, PathMatch, Pattern, RouteMatch, StringMatch};

/// A hostname as listeners and routes write it: exact, or `*.suffix`.
#[derive(Debug, Clone)]
pub enum HostPattern {
    Exact(Arc<str>),
    /// Stored with the leading dot: `*.example.com` -> `.example.com`.
    Wildcard(Arc<str>),
}

impl HostPattern {
    pub fn parse(s: &str) -> Self {
        let lower = s.to_ascii_lowercase();
        match lower.strip_prefix('*') {
            Some(suffix) => HostPattern::Wildcard(suffix.into()),
            None => HostPattern::Exact(lower.into()),
        }
    }

    /// `host` must be lower-case and without port. A wildcard needs at least one label more.
    pub fn matches(&self, host: &str) -> bool {
        match self {
            HostPattern::Exact(h) => &**h == host,
            HostPattern::Wildcard(suffix) => host.len() > suffix.len() && host.ends_with(&**suffix),
        }
    }

    /// Higher is more specific: exact beats any wildcard, longer wildcards beat shorter.
    pub fn specificity(&self) -> usize {
        match self {
            HostPattern::Exact(_) => usize::MAX,
            HostPattern::Wildcard(s) => s.len(),
        }
    }
}

/// The request host, lower-cased, without port or trailing dot. HTTP/2 carries it in the URI
/// authority. Borrows when the host is already in canonical form (the common case).
pub fn request_host(parts: &Parts) -> Option<Cow<'_, str>> {
    let raw = match parts.uri.authority() {
        Some(a) => a.host(),
        None => strip_port(parts.headers.get(http::header::HOST)?.to_str().ok()?),
    };
    let raw = raw
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(raw);
    let raw = raw.strip_suffix('.').unwrap_or(raw);
    if raw.bytes().any(|b| b.is_ascii_uppercase()) {
        Some(Cow::Owned(raw.to_ascii_lowercase()))
    } else {
        Some(Cow::Borrowed(raw))
    }
}

fn strip_port(authority: &str) -> &str {
    if let Some(rest) = authority.strip_prefix('[') {
        // [v6]:port
        return rest.split(']').next().unwrap_or(rest);
    }
    match authority.rsplit_once(':') {
        Some((h, p)) if p.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => authority,
    }
}

#[derive(Debug, Clone)]
enum PathRule {
    Any,
    Exact(Arc<str>),
    /// Stored without a trailing slash; "/" is stored as "".
    Prefix(Arc<str>),
    Regex(Pattern),
}

#[derive(Debug, Clone)]
enum ValueRule {
    Exact(Arc<str>),
    Regex(Pattern),
}

impl ValueRule {
    fn from_config(m: &StringMatch) -> Self {
        match m {
            StringMatch::Exact(s) => ValueRule::Exact(s.as_str().into()),
            StringMatch::Regex(p) => ValueRule::Regex(p.clone()),
        }
    }
    fn matches(&self, v: &str) -> bool {
        match self {
            ValueRule::Exact(e) => &**e == v,
            ValueRule::Regex(p) => p.is_full_match(v),
        }
    }
}

/// One compiled `matches[]` entry.
#[derive(Debug, Clone)]
pub struct Matcher {
    path: PathRule,
    method: Option<http::Method>,
    headers: Vec<(http::HeaderName, ValueRule)>,
    query: Vec<(Arc<str>, ValueRule)>,
    /// The LLM model the request names (body or Gemini path).
    model: Option<ValueRule>,
}

impl Matcher {
    pub fn any() -> Self {
        Matcher {
            path: PathRule::Any,
            method: None,
            headers: Vec::new(),
            query: Vec::new(),
            model: None,
        }
    }

    pub fn compile(m: &RouteMatch) -> Result<Self, String> {
        let path = match &m.path {
            None => PathRule::Any,
            Some(PathMatch::Exact(p)) => PathRule::Exact(p.as_str().into()),
            Some(PathMatch::PathPrefix(p)) => PathRule::Prefix(p.trim_end_matches('/').into()),
            Some(PathMatch::Regex(r)) => PathRule::Regex(r.clone()),
        };
        let method = m
            .method
            .as_deref()
            .map(|s| http::Method::from_bytes(s.to_ascii_uppercase().as_bytes()))
            .transpose()
            .map_err(|e| format!("invalid method: {e}"))?;
        let headers = m
            .headers
            .iter()
            .map(|KeyValueMatch { name, value }| {
                http::HeaderName::from_bytes(name.as_bytes())
                    .map(|n| (n, ValueRule::from_config(value)))
                    .map_err(|_| format!("invalid header name {name:?}"))
            })
            .collect::<Result<_, _>>()?;
        let query = m
            .query
            .iter()
            .map(|KeyValueMatch { name, value }| {
                (name.as_str().into(), ValueRule::from_config(value))
            })
            .collect();
        Ok(Matcher {
            path,
            method,
            headers,
            query,
            model: m.model.as_ref().map(ValueRule::from_config),
        })
    }

    /// Gateway API precedence, larger first: exact path, longest prefix, (regex, then
    /// catch-all), then a model match (an extension: among routes on the same path, the one
    /// naming the model wins), method, header count, query count. File order breaks ties
    /// (stable sort).
    fn rank(&self) -> (u8, usize, bool, bool, usize, usize) {
        let (kind, len) = match &self.path {
            PathRule::Exact(p) => (3, p.len()),
            PathRule::Prefix(p) => (2, p.len()),
            PathRule::Regex(r) => (1, r.as_str().len()),
            PathRule::Any => (0, 0),
        };
        (
            kind,
            len,
            self.model.is_some(),
            self.method.is_some(),
            self.headers.len(),
            self.query.len(),
        )
    }

    /// `model`: the model the request names, when the listener reads it (see
    /// [`RouteTable::reads_model`]).
    pub fn matches(&self, parts: &Parts, model: Option<&str>) -> bool {
        if let Some(rule) = &self.model {
            if !model.is_some_and(|m| rule.matches(m)) {
                return false;
            }
        }
        self.matches_request(parts)
    }

    /// Everything but the model.
    fn matches_request(&self, parts: &Parts) -> bool {
        if let Some(m) = &self.method {
            if parts.method != *m {
                return false;
            }
        }
        let path = parts.uri.path();
        let path_ok = match &self.path {
            PathRule::Any => true,
            PathRule::Exact(p) => path == &**p,
            PathRule::Prefix(p) => {
                path.starts_with(&**p) && matches!(path.as_bytes().get(p.len()), None | Some(b'/'))
            }
            PathRule::Regex(r) => r.is_full_match(path),
        };
        if !path_ok {
            return false;
        }
        for (name, rule) in &self.headers {
            let found = parts
                .headers
                .get_all(name)
                .iter()
                .any(|v| v.to_str().is_ok_and(|v| rule.matches(v)));
            if !found {
                return false;
            }
        }
        if !self.query.is_empty() {
            let q = parts.uri.query().unwrap_or("");
            for (name, rule) in &self.query {
                let found = q.split('&').any(|pair| {
                    let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
                    k == &**name && rule.matches(&percent_decode(v))
                });
                if !found {
                    return false;
                }
            }
        }
        true
    }

    /// The prefix this matcher matched, for `urlRewrite.path.prefix`.
    pub fn matched_prefix(&self) -> Option<&str> {
        match &self.path {
            PathRule::Prefix(p) => Some(p),
            _ => None,
        }
    }
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok();
                match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(b) => {
                        out.push(b);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A listener's routes, flattened to (matcher, route) and sorted by precedence once.
#[derive(Debug)]
pub struct RouteTable<R> {
    entries: Vec<Entry<R>>,
    /// Some route matches on the model: requests are read for it before routing.
    reads_model: bool,
    /// Every model pattern of the table in one automaton, run once per request: a table of
    /// many model routes costs one scan of the model, not one regex per route tried.
    model_patterns: Option<regex::RegexSet>,
    /// The model names routes match exactly, in file order, once each: the listener's model
    /// list (`GET /v1/models` when no route serves it).
    exact_models: Vec<Arc<str>>,
}

#[derive(Debug)]
struct Entry<R> {
    matcher: Matcher,
    hostnames: Arc<[HostPattern]>,
    route: Arc<R>,
    /// Its model pattern's index in the table's `model_patterns`.
    model_pattern: Option<usize>,
}

pub struct RouteMatchResult<'a, R> {
    pub route: &'a Arc<R>,
    pub matcher: &'a Matcher,
}

impl<R> RouteTable<R> {
    /// `routes` in file order: (hostnames, matchers, route).
    pub fn new(routes: Vec<(Vec<HostPattern>, Vec<Matcher>, Arc<R>)>) -> Self {
        let mut entries = Vec::new();
        let mut exact_models: Vec<Arc<str>> = Vec::new();
        for (hostnames, matchers, route) in routes {
            let hostnames: Arc<[HostPattern]> = hostnames.into();
            for matcher in matchers {
                if let Some(ValueRule::Exact(m)) = &matcher.model {
                    if !exact_models.contains(m) {
                        exact_models.push(m.clone());
                    }
                }
                entries.push(Entry {
                    matcher,
                    hostnames: hostnames.clone(),
                    route: route.clone(),
                    model_pattern: None,
                });
            }
        }
        entries.sort_by_key(|e| Reverse(e.matcher.rank()));
        let reads_model = entries.iter().any(|e| e.matcher.model.is_some());
        let mut sources = Vec::new();
        for e in &mut entries {
            if let Some(ValueRule::Regex(p)) = &e.matcher.model {
                e.model_pattern = Some(sources.len());
                sources.push(format!("^(?:{})$", p.as_str()));
            }
        }
        // Each pattern compiled alone at load; together they only fail past the size limit,
        // and then each route's own regex still answers.
        let model_patterns = match sources.is_empty() {
            true => None,
            false => regex::RegexSet::new(&sources).ok(),
        };
        RouteTable {
            entries,
            reads_model,
            model_patterns,
            exact_models,
        }
    }

    /// The model names routes match exactly (see the field).
    pub fn exact_models(&self) -> &[Arc<str>] {
        &self.exact_models
    }

    /// The routes that match models by pattern, with the pattern (in rank order).
    pub fn model_patterns(&self) -> impl Iterator<Item = (&Pattern, &Arc<R>)> {
        self.entries.iter().filter_map(|e| match &e.matcher.model {
            Some(ValueRule::Regex(p)) => Some((p, &e.route)),
            _ => None,
        })
    }

    /// Whether routing needs the model the request names (read from the body).
    pub fn reads_model(&self) -> bool {
        self.reads_model
    }

    pub fn find<'a>(
        &'a self,
        host: Option<&str>,
        parts: &Parts,
        model: Option<&str>,
    ) -> Option<RouteMatchResult<'a, R>> {
        let pattern_hits = match (&self.model_patterns, model) {
            (Some(set), Some(m)) => Some(set.matches(m)),
            _ => None,
        };
        let model_ok = |e: &Entry<R>| match (&e.matcher.model, model) {
            (None, _) => true,
            (Some(_), None) => false,
            (Some(rule), Some(m)) => match (&pattern_hits, e.model_pattern) {
                (Some(hits), Some(i)) => hits.matched(i),
                _ => rule.matches(m),
            },
        };
        self.entries
            .iter()
            .find(|e| {
                model_ok(e)
                    && (e.hostnames.is_empty()
                        || host.is_some_and(|h| e.hostnames.iter().any(|p| p.matches(h))))
                    && e.matcher.matches_request(parts)
            })
            .map(|e| RouteMatchResult {
                route: &e.route,
                matcher: &e.matcher,
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(yaml: &str) -> Matcher {
        let rm: RouteMatch = serde_json::from_str(yaml).unwrap();
        Matcher::compile(&rm).unwrap()
    }

    fn parts(method: &str, uri: &str, headers: &[(&str, &str)]) -> Parts {
        let mut b = http::Request::builder().method(method).uri(uri);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        b.body(()).unwrap().into_parts().0
    }

    fn table(routes: Vec<(&str, Vec<Matcher>)>) -> RouteTable<String> {
        RouteTable::new(
            routes
                .into_iter()
                .map(|(name, ms)| (vec![], ms, Arc::new(name.to_string())))
                .collect(),
        )
    }

    fn pick(t: &RouteTable<String>, p: &Parts) -> Option<String> {
        t.find(None, p, None).map(|r| (**r.route).clone())
    }

    #[test]
    fn prefix_matches_on_segment_boundaries() {
        let x = m(r#"{"path": {"pathPrefix": "/api/"}}"#);
        assert!(x.matches(&parts("GET", "/api", &[]), None));
        assert!(x.matches(&parts("GET", "/api/v1", &[]), None));
        assert!(!x.matches(&parts("GET", "/apiv1", &[]), None));
        let root = m(r#"{"path": {"pathPrefix": "/"}}"#);
        assert!(root.matches(&parts("GET", "/anything", &[]), None));
    }

    #[test]
    fn precedence_exact_then_longest_prefix_then_method_headers_query() {
        let t = table(vec![
            ("catchall", vec![Matcher::any()]),
            ("short", vec![m(r#"{"path": {"pathPrefix": "/v1"}}"#)]),
            ("long", vec![m(r#"{"path": {"pathPrefix": "/v1/chat"}}"#)]),
            (
                "exact",
                vec![m(r#"{"path": {"exact": "/v1/chat/completions"}}"#)],
            ),
            (
                "post",
                vec![m(r#"{"path": {"pathPrefix": "/v1"}, "method": "POST"}"#)],
            ),
            (
                "hdr",
                vec![m(
                    r#"{"path": {"pathPrefix": "/v1"}, "method": "POST", "headers": [{"name": "x-tier", "value": {"exact": "gold"}}]}"#,
                )],
            ),
            (
                "query",
                vec![m(
                    r#"{"path": {"pathPrefix": "/v1"}, "method": "POST", "headers": [{"name": "x-tier", "value": {"regex": "g.*"}}], "query": [{"name": "beta", "value": {"exact": "on off"}}]}"#,
                )],
            ),
        ]);
        assert_eq!(pick(&t, &parts("GET", "/other", &[])).unwrap(), "catchall");
        assert_eq!(pick(&t, &parts("GET", "/v1/models", &[])).unwrap(), "short");
        assert_eq!(pick(&t, &parts("GET", "/v1/chat/x", &[])).unwrap(), "long");
        assert_eq!(
            pick(&t, &parts("POST", "/v1/chat/completions", &[])).unwrap(),
            "exact"
        );
        assert_eq!(pick(&t, &parts("POST", "/v1/models", &[])).unwrap(), "post");
        assert_eq!(
            pick(&t, &parts("POST", "/v1/models", &[("x-tier", "gold")])).unwrap(),
            "hdr"
        );
        assert_eq!(
            pick(
                &t,
                &parts("POST", "/v1/models?beta=on+off", &[("x-tier", "gold")])
            )
            .unwrap(),
            "query"
        );
    }

    #[test]
    fn file_order_breaks_ties_and_hostnames_filter() {
        let t = RouteTable::new(vec![
            (
                vec![HostPattern::parse("*.example.com")],
                vec![Matcher::any()],
                Arc::new("wild".to_string()),
            ),
            (vec![], vec![Matcher::any()], Arc::new("first".to_string())),
            (vec![], vec![Matcher::any()], Arc::new("second".to_string())),
        ]);
        let p = parts("GET", "/", &[]);
        assert_eq!(
            **t.find(Some("a.example.com"), &p, None).unwrap().route,
            "wild"
        );
        assert_eq!(
            **t.find(Some("example.com"), &p, None).unwrap().route,
            "first"
        );
    }

    #[test]
    fn host_from_header_or_authority() {
        assert_eq!(
            request_host(&parts("GET", "/", &[("host", "API.Example.com:8080")])).unwrap(),
            "api.example.com"
        );
        assert_eq!(
            request_host(&parts("GET", "http://h2.example/x", &[])).unwrap(),
            "h2.example"
        );
        assert_eq!(
            request_host(&parts("GET", "/", &[("host", "[::1]:80")])).unwrap(),
            "::1"
        );
    }

    #[test]
    fn a_model_match_needs_the_model_and_outranks_the_same_path_without_one() {
        let t = table(vec![
            ("any", vec![m(r#"{"path": {"pathPrefix": "/v1"}}"#)]),
            (
                "gpt",
                vec![m(
                    r#"{"path": {"pathPrefix": "/v1"}, "model": {"regex": "gpt-.*"}}"#,
                )],
            ),
            (
                "claude",
                vec![m(
                    r#"{"path": {"pathPrefix": "/v1"}, "model": {"exact": "claude-x"}}"#,
                )],
            ),
        ]);
        assert!(t.reads_model());
        let p = parts("POST", "/v1/chat/completions", &[]);
        let find = |model| t.find(None, &p, model).map(|r| (**r.route).clone());
        assert_eq!(find(Some("gpt-4o")).as_deref(), Some("gpt"));
        assert_eq!(find(Some("claude-x")).as_deref(), Some("claude"));
        assert_eq!(find(Some("claude-y")).as_deref(), Some("any"));
        assert_eq!(find(None).as_deref(), Some("any"));
        // A longer path still outranks a model match on a shorter one.
        let t = table(vec![
            (
                "model",
                vec![m(
                    r#"{"path": {"pathPrefix": "/v1"}, "model": {"exact": "m"}}"#,
                )],
            ),
            ("longer", vec![m(r#"{"path": {"pathPrefix": "/v1/chat"}}"#)]),
        ]);
        assert_eq!(
            t.find(None, &p, Some("m"))
                .map(|r| (**r.route).clone())
                .as_deref(),
            Some("longer")
        );
        assert!(!table(vec![("any", vec![Matcher::any()])]).reads_model());
    }
}
