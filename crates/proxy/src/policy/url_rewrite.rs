//! `urlRewrite` (backend phase): the authority and path sent upstream.

use config::{AuthorityRewrite, PathRewrite};

#[derive(Debug)]
pub struct UrlRewrite {
    pub authority: Option<AuthorityRewrite>,
    pub path: Option<PathRewrite>,
}

/// Rewrites an authority (`host[:port]`) the way `urlRewrite`/`requestRedirect` say.
pub fn rewrite_authority(current: &str, rule: &AuthorityRewrite) -> String {
    let (host, port) = split_authority(current);
    match rule {
        AuthorityRewrite::Full(a) => a.clone(),
        AuthorityRewrite::Host(h) => match port {
            Some(p) => format!("{h}:{p}"),
            None => h.clone(),
        },
        AuthorityRewrite::Port(p) => format!("{host}:{p}"),
    }
}

fn split_authority(a: &str) -> (&str, Option<&str>) {
    if a.starts_with('[') {
        return match a.rsplit_once("]:") {
            Some((h, p)) => (&a[..h.len() + 1], Some(p)),
            None => (a, None),
        };
    }
    match a.rsplit_once(':') {
        Some((h, p)) => (h, Some(p)),
        None => (a, None),
    }
}

/// Rewrites `path` (no query). `matched_prefix` is the route's matched `pathPrefix`, stored
/// without a trailing slash.
pub fn rewrite_path(path: &str, rule: &PathRewrite, matched_prefix: Option<&str>) -> String {
    match rule {
        PathRewrite::Full(p) => p.clone(),
        PathRewrite::Prefix(replacement) => {
            let rest = match matched_prefix {
                Some(prefix) if path.starts_with(prefix) => &path[prefix.len()..],
                _ => path,
            };
            let base = replacement.trim_end_matches('/');
            let mut out = String::with_capacity(base.len() + rest.len() + 1);
            out.push_str(base);
            if !rest.is_empty() && !rest.starts_with('/') {
                out.push('/');
            }
            out.push_str(rest);
            if out.is_empty() {
                out.push('/');
            }
            out
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn authority_rewrites() {
        assert_eq!(
            rewrite_authority("a.com:8080", &AuthorityRewrite::Full("b.com".into())),
            "b.com"
        );
        assert_eq!(
            rewrite_authority("a.com:8080", &AuthorityRewrite::Host("b.com".into())),
            "b.com:8080"
        );
        assert_eq!(
            rewrite_authority("a.com", &AuthorityRewrite::Port(9)),
            "a.com:9"
        );
        assert_eq!(
            rewrite_authority("[::1]:80", &AuthorityRewrite::Port(9)),
            "[::1]:9"
        );
    }

    #[test]
    fn path_prefix_rewrites() {
        let p = |path, repl: &str, prefix| {
            rewrite_path(path, &PathRewrite::Prefix(repl.into()), Some(prefix))
        };
        assert_eq!(
            p("/api/v1/chat", "/compatible-mode", "/api"),
            "/compatible-mode/v1/chat"
        );
        assert_eq!(p("/api", "/x/", "/api"), "/x");
        assert_eq!(p("/api/a", "/", "/api"), "/a");
        assert_eq!(p("/api", "/", "/api"), "/");
        assert_eq!(p("/foo", "/bar", ""), "/bar/foo");
    }
}
