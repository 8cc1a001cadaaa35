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
}

impl Matcher {
    pub fn any() -> Self {
        Matcher {
            path: PathRule::Any,
            method: None,
            headers: Vec::new(),
            query: Vec::new(),
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
        })
    }

    /// Gateway API precedence, larger first: exact path, longest prefix, (regex, then
    /// catch-all), method, header count, query count. File order breaks ties (stable sort).
    fn rank(&self) -> (u8, usize, bool, usize, usize) {
        let (kind, len) = match &self.path {
            PathRule::Exact(p) => (3, p.len()),
            PathRule::Prefix(p) => (2, p.len()),
            PathRule::Regex(r) => (1, r.as_str().len()),
            PathRule::Any => (0, 0),
        };
        (
            kind,
            len,
            self.method.is_some(),
            self.headers.len(),
            self.query.len(),
        )
    }

    pub fn matches(&self, parts: &Parts) -> bool {
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
}

#[derive(Debug)]
struct Entry<R> {
    matcher: Matcher,
    hostnames: Arc<[HostPattern]>,
    route: Arc<R>,
}

pub struct RouteMatchResult<'a, R> {
    pub route: &'a Arc<R>,
    pub matcher: &'a Matcher,
}

impl<R> RouteTable<R> {
    /// `routes` in file order: (hostnames, matchers, route).
    pub fn new(routes: Vec<(Vec<HostPattern>, Vec<Matcher>, Arc<R>)>) -> Self {
        let mut entries = Vec::new();
        for (hostnames, matchers, route) in routes {
            let hostnames: Arc<[HostPattern]> = hostnames.into();
            for matcher in matchers {
                entries.push(Entry {
                    matcher,
                    hostnames: hostnames.clone(),
                    route: route.clone(),
                });
            }
        }
        entries.sort_by_key(|e| Reverse(e.matcher.rank()));
        RouteTable { entries }
    }

    pub fn find<'a>(
        &'a self,
        host: Option<&str>,
        parts: &Parts,
    ) -> Option<RouteMatchResult<'a, R>> {
        self.entries
            .iter()
            .find(|e| {
                (e.hostnames.is_empty()
                    || host.is_some_and(|h| e.hostnames.iter().any(|p| p.matches(h))))
                    && e.matcher.matches(parts)
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
        t.find(None, p).map(|r| (**r.route).clone())
    }

    #[test]
    fn prefix_matches_on_segment_boundaries() {
        let x = m(r#"{"path": {"pathPrefix": "/api/"}}"#);
        assert!(x.matches(&parts("GET", "/api", &[])));
        assert!(x.matches(&parts("GET", "/api/v1", &[])));
        assert!(!x.matches(&parts("GET", "/apiv1", &[])));
        let root = m(r#"{"path": {"pathPrefix": "/"}}"#);
        assert!(root.matches(&parts("GET", "/anything", &[])));
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
        assert_eq!(**t.find(Some("a.example.com"), &p).unwrap().route, "wild");
        assert_eq!(**t.find(Some("example.com"), &p).unwrap().route, "first");
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
}
