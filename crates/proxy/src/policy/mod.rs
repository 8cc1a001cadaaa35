//! Route and backend policies, compiled once per config snapshot and applied per request.

use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Response, StatusCode};

use config::{AuthorityRewrite, PathRewrite, Policies};

use crate::body::{self, Body};

/// A backend's policy of a kind replaces the route's; the result is computed per backend at
/// load time so a request reads one struct.
#[derive(Debug, Default)]
pub struct Effective {
    pub url_rewrite: Option<UrlRewrite>,
    pub request_headers: Option<HeaderModifier>,
    pub response_headers: Option<HeaderModifier>,
    pub redirect: Option<Redirect>,
    pub direct_response: Option<DirectResponse>,
    pub cors: Option<Cors>,
    pub request_timeout: Option<Duration>,
    pub backend_timeout: Option<Duration>,
    pub retry: Option<Retry>,
    /// Complete `Authorization` value; marked sensitive so it never prints.
    pub backend_auth: Option<HeaderValue>,
    pub jwt_auth: Option<std::sync::Arc<crate::authn::JwtAuth>>,
}

impl Effective {
    /// `route` then `backend` overrides, per policy kind.
    pub fn compile(route: Option<&Policies>, backend: Option<&Policies>) -> Result<Self, String> {
        fn pick<'a, T>(
            route: Option<&'a Policies>,
            backend: Option<&'a Policies>,
            f: impl Fn(&'a Policies) -> Option<&'a T>,
        ) -> Option<&'a T> {
            backend.and_then(&f).or_else(|| route.and_then(&f))
        }
        let timeout = pick(route, backend, |p| p.timeout.as_ref());
        Ok(Effective {
            url_rewrite: pick(route, backend, |p| p.url_rewrite.as_ref()).map(|u| UrlRewrite {
                authority: u.authority.clone(),
                path: u.path.clone(),
            }),
            request_headers: pick(route, backend, |p| p.request_header_modifier.as_ref())
                .map(HeaderModifier::compile)
                .transpose()?,
            response_headers: pick(route, backend, |p| p.response_header_modifier.as_ref())
                .map(HeaderModifier::compile)
                .transpose()?,
            redirect: pick(route, backend, |p| p.request_redirect.as_ref()).map(|r| Redirect {
                scheme: r.scheme.clone(),
                authority: r.authority.clone(),
                path: r.path.clone(),
                status: r
                    .status
                    .and_then(|s| StatusCode::from_u16(s.0).ok())
                    .unwrap_or(StatusCode::FOUND),
            }),
            direct_response: pick(route, backend, |p| p.direct_response.as_ref())
                .map(|d| DirectResponse::compile(d.status.0, &d.body))
                .transpose()?,
            cors: pick(route, backend, |p| p.cors.as_ref())
                .map(Cors::compile)
                .transpose()?,
            request_timeout: timeout.and_then(|t| t.request_timeout).map(|d| d.0),
            backend_timeout: timeout.and_then(|t| t.backend_request_timeout).map(|d| d.0),
            retry: pick(route, backend, |p| p.retry.as_ref()).map(|r| Retry {
                attempts: r.attempts,
                backoff: r.backoff.map_or(Duration::from_millis(25), |d| d.0),
                codes: if r.codes.is_empty() {
                    vec![503]
                } else {
                    r.codes.iter().map(|s| s.0).collect()
                },
            }),
            backend_auth: pick(route, backend, |p| p.backend_auth.as_ref())
                .map(|a| {
                    let mut v = HeaderValue::from_str(&format!("Bearer {}", a.key.expose()))
                        .map_err(|_| {
                            "backendAuth.key contains characters not allowed in a header"
                                .to_string()
                        })?;
                    v.set_sensitive(true);
                    Ok::<_, String>(v)
                })
                .transpose()?,
            jwt_auth: pick(route, backend, |p| p.jwt_auth.as_ref())
                .map(|j| crate::authn::JwtAuth::compile(j).map(std::sync::Arc::new))
                .transpose()?,
        })
    }
}

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

#[derive(Debug, Default)]
pub struct HeaderModifier {
    add: Vec<(HeaderName, HeaderValue)>,
    set: Vec<(HeaderName, HeaderValue)>,
    remove: Vec<HeaderName>,
}

impl HeaderModifier {
    fn compile(m: &config::HeaderModifier) -> Result<Self, String> {
        fn pairs(
            map: &std::collections::BTreeMap<config::HeaderName, config::HeaderValue>,
        ) -> Result<Vec<(HeaderName, HeaderValue)>, String> {
            map.iter()
                .map(|(k, v)| {
                    let name = HeaderName::from_bytes(k.as_str().as_bytes())
                        .map_err(|_| format!("invalid header name {:?}", k.as_str()))?;
                    let mut value = HeaderValue::from_str(&v.0)
                        .map_err(|_| format!("invalid value for header {:?}", k.as_str()))?;
                    value.set_sensitive(k.is_sensitive());
                    Ok((name, value))
                })
                .collect()
        }
        Ok(HeaderModifier {
            add: pairs(&m.add)?,
            set: pairs(&m.set)?,
            remove: m
                .remove
                .iter()
                .filter_map(|h| HeaderName::from_bytes(h.as_str().as_bytes()).ok())
                .collect(),
        })
    }

    /// `add`, then `set`, then `remove`.
    pub fn apply(&self, headers: &mut HeaderMap) {
        for (k, v) in &self.add {
            headers.append(k.clone(), v.clone());
        }
        for (k, v) in &self.set {
            headers.insert(k.clone(), v.clone());
        }
        for k in &self.remove {
            headers.remove(k);
        }
    }
}

#[derive(Debug)]
pub struct Redirect {
    scheme: Option<String>,
    authority: Option<AuthorityRewrite>,
    path: Option<PathRewrite>,
    status: StatusCode,
}

impl Redirect {
    pub fn respond(
        &self,
        scheme: &str,
        authority: &str,
        path: &str,
        query: Option<&str>,
        matched_prefix: Option<&str>,
    ) -> Response<Body> {
        let scheme = self.scheme.as_deref().unwrap_or(scheme);
        let authority = match &self.authority {
            Some(rule) => rewrite_authority(authority, rule),
            None => authority.to_string(),
        };
        let path = match &self.path {
            Some(rule) => rewrite_path(path, rule, matched_prefix),
            None => path.to_string(),
        };
        let mut location = format!("{scheme}://{authority}{path}");
        if let Some(q) = query {
            location.push('?');
            location.push_str(q);
        }
        let mut resp = Response::new(body::empty());
        *resp.status_mut() = self.status;
        if let Ok(v) = HeaderValue::from_str(&location) {
            resp.headers_mut().insert(header::LOCATION, v);
        }
        resp
    }
}

#[derive(Debug)]
pub struct DirectResponse {
    status: StatusCode,
    body: Bytes,
    content_type: HeaderValue,
}

impl DirectResponse {
    fn compile(status: u16, body: &str) -> Result<Self, String> {
        let status = StatusCode::from_u16(status).map_err(|e| e.to_string())?;
        let is_json = serde_json::from_str::<serde_json::Value>(body)
            .is_ok_and(|v| v.is_object() || v.is_array());
        Ok(DirectResponse {
            status,
            body: Bytes::copy_from_slice(body.as_bytes()),
            content_type: HeaderValue::from_static(if is_json {
                "application/json"
            } else {
                "text/plain; charset=utf-8"
            }),
        })
    }

    pub fn respond(&self) -> Response<Body> {
        let mut resp = Response::new(body::full(self.body.clone()));
        *resp.status_mut() = self.status;
        if !self.body.is_empty() {
            resp.headers_mut()
                .insert(header::CONTENT_TYPE, self.content_type.clone());
        }
        resp
    }
}

#[derive(Debug)]
pub struct Retry {
    pub attempts: u32,
    pub backoff: Duration,
    pub codes: Vec<u16>,
}

impl Retry {
    /// Exponential backoff with +-25% jitter, so retries from many clients spread out.
    pub fn delay(&self, retry_number: u32) -> Duration {
        let base = self.backoff.saturating_mul(1 << retry_number.min(10));
        let jitter = 0.75 + fastrand::f64() * 0.5;
        base.mul_f64(jitter)
    }
}

#[derive(Debug)]
enum OriginRule {
    Any,
    Exact(String),
    /// `https://*.example.com` -> ("https://", ".example.com")
    Wildcard(String, String),
}

#[derive(Debug)]
pub struct Cors {
    origins: Vec<OriginRule>,
    allow_methods: Option<HeaderValue>,
    /// None: nothing allowed beyond CORS-safelisted headers; `*` echoes the request.
    allow_headers: Option<HeaderValue>,
    allow_any_header: bool,
    expose_headers: Option<HeaderValue>,
    max_age: Option<HeaderValue>,
    credentials: bool,
}

static VARY_VALUE: HeaderValue = HeaderValue::from_static(
    "Origin, Access-Control-Request-Method, Access-Control-Request-Headers",
);

pub enum CorsOutcome {
    /// Not a CORS request, or the origin is not allowed: proceed without CORS headers.
    NotCors,
    /// An allowed preflight: answer it now.
    Preflight(Response<Body>),
    /// An allowed actual request: proceed and add these to the response.
    Actual(HeaderMap),
}

impl Cors {
    fn compile(c: &config::Cors) -> Result<Self, String> {
        let join = |v: &[String]| -> Result<Option<HeaderValue>, String> {
            if v.is_empty() {
                return Ok(None);
            }
            HeaderValue::from_str(&v.join(", "))
                .map(Some)
                .map_err(|_| format!("invalid CORS list {v:?}"))
        };
        let origins = c
            .allow_origins
            .iter()
            .map(|o| {
                if o == "*" {
                    OriginRule::Any
                } else if let Some((scheme, rest)) = o.split_once("://*") {
                    OriginRule::Wildcard(format!("{scheme}://"), rest.to_ascii_lowercase())
                } else {
                    OriginRule::Exact(o.trim_end_matches('/').to_ascii_lowercase())
                }
            })
            .collect();
        Ok(Cors {
            origins,
            allow_methods: join(&c.allow_methods)?,
            allow_any_header: c.allow_headers.iter().any(|h| h == "*"),
            allow_headers: join(&c.allow_headers)?,
            expose_headers: join(&c.expose_headers)?,
            max_age: c.max_age.map(|d| HeaderValue::from(d.0.as_secs())),
            credentials: c.allow_credentials,
        })
    }

    fn origin_allowed(&self, origin: &str) -> bool {
        let o = origin.to_ascii_lowercase();
        self.origins.iter().any(|rule| match rule {
            OriginRule::Any => true,
            OriginRule::Exact(e) => *e == o,
            OriginRule::Wildcard(scheme, suffix) => {
                o.starts_with(scheme.as_str())
                    && o.ends_with(suffix.as_str())
                    && o.len() > scheme.len() + suffix.len()
            }
        })
    }

    pub fn evaluate(&self, method: &Method, headers: &HeaderMap) -> CorsOutcome {
        let Some(origin) = headers.get(header::ORIGIN) else {
            return CorsOutcome::NotCors;
        };
        let allowed = origin.to_str().is_ok_and(|o| self.origin_allowed(o));
        let preflight = method == Method::OPTIONS
            && headers.contains_key(header::ACCESS_CONTROL_REQUEST_METHOD);
        if !allowed {
            if preflight {
                // Answer without CORS headers: the browser then blocks the real request.
                let mut resp = Response::new(body::empty());
                *resp.status_mut() = StatusCode::FORBIDDEN;
                resp.headers_mut().insert(header::VARY, VARY_VALUE.clone());
                return CorsOutcome::Preflight(resp);
            }
            return CorsOutcome::NotCors;
        }
        let mut out = HeaderMap::new();
        let any = self.origins.iter().any(|r| matches!(r, OriginRule::Any));
        if any && !self.credentials {
            out.insert(
                header::ACCESS_CONTROL_ALLOW_ORIGIN,
                HeaderValue::from_static("*"),
            );
        } else {
            out.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
        }
        if self.credentials {
            out.insert(
                header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
                HeaderValue::from_static("true"),
            );
        }
        out.insert(header::VARY, VARY_VALUE.clone());
        if !preflight {
            if let Some(e) = &self.expose_headers {
                out.insert(header::ACCESS_CONTROL_EXPOSE_HEADERS, e.clone());
            }
            return CorsOutcome::Actual(out);
        }
        let methods = self
            .allow_methods
            .clone()
            .or_else(|| headers.get(header::ACCESS_CONTROL_REQUEST_METHOD).cloned());
        if let Some(m) = methods {
            out.insert(header::ACCESS_CONTROL_ALLOW_METHODS, m);
        }
        let allow_headers = if self.allow_any_header {
            headers.get(header::ACCESS_CONTROL_REQUEST_HEADERS).cloned()
        } else {
            self.allow_headers.clone()
        };
        if let Some(h) = allow_headers {
            out.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, h);
        }
        if let Some(age) = &self.max_age {
            out.insert(header::ACCESS_CONTROL_MAX_AGE, age.clone());
        }
        let mut resp = Response::new(body::empty());
        *resp.status_mut() = StatusCode::OK;
        *resp.headers_mut() = out;
        CorsOutcome::Preflight(resp)
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

    #[test]
    fn header_modifier_order_add_set_remove() {
        let cfg: config::HeaderModifier = serde_json::from_str(
            r#"{"add": {"x-a": "2", "x-gone": "1"}, "set": {"x-b": "new"}, "remove": ["x-gone"]}"#,
        )
        .unwrap();
        let m = HeaderModifier::compile(&cfg).unwrap();
        let mut h = HeaderMap::new();
        h.insert("x-a", HeaderValue::from_static("1"));
        h.append("x-b", HeaderValue::from_static("old1"));
        h.append("x-b", HeaderValue::from_static("old2"));
        m.apply(&mut h);
        let a: Vec<_> = h.get_all("x-a").iter().collect();
        assert_eq!(a, ["1", "2"]);
        let b: Vec<_> = h.get_all("x-b").iter().collect();
        assert_eq!(b, ["new"]);
        assert!(!h.contains_key("x-gone"));
    }

    #[test]
    fn cors_wildcard_origins_and_credentials() {
        let cfg: config::Cors = serde_json::from_str(
            r#"{"allowOrigins": ["https://*.example.com"], "allowCredentials": true, "allowHeaders": ["*"], "maxAge": "10m"}"#,
        )
        .unwrap();
        let cors = Cors::compile(&cfg).unwrap();
        let mut h = HeaderMap::new();
        h.insert(
            header::ORIGIN,
            HeaderValue::from_static("https://app.example.com"),
        );
        h.insert(
            header::ACCESS_CONTROL_REQUEST_METHOD,
            HeaderValue::from_static("PUT"),
        );
        h.insert(
            header::ACCESS_CONTROL_REQUEST_HEADERS,
            HeaderValue::from_static("x-custom"),
        );
        let CorsOutcome::Preflight(resp) = cors.evaluate(&Method::OPTIONS, &h) else {
            panic!("expected preflight")
        };
        let rh = resp.headers();
        assert_eq!(
            rh[header::ACCESS_CONTROL_ALLOW_ORIGIN],
            "https://app.example.com"
        );
        assert_eq!(rh[header::ACCESS_CONTROL_ALLOW_CREDENTIALS], "true");
        assert_eq!(rh[header::ACCESS_CONTROL_ALLOW_HEADERS], "x-custom");
        assert_eq!(rh[header::ACCESS_CONTROL_ALLOW_METHODS], "PUT");
        assert_eq!(rh[header::ACCESS_CONTROL_MAX_AGE], "600");

        h.insert(
            header::ORIGIN,
            HeaderValue::from_static("https://example.com.evil.org"),
        );
        assert!(matches!(
            cors.evaluate(&Method::OPTIONS, &h),
            CorsOutcome::Preflight(r) if r.status() == StatusCode::FORBIDDEN
        ));
    }

    #[test]
    fn retry_delay_grows_with_jitter() {
        let r = Retry {
            attempts: 3,
            backoff: Duration::from_millis(100),
            codes: vec![503],
        };
        let d0 = r.delay(0);
        let d2 = r.delay(2);
        assert!(d0 >= Duration::from_millis(75) && d0 <= Duration::from_millis(125));
        assert!(d2 >= Duration::from_millis(300) && d2 <= Duration::from_millis(500));
    }
}
