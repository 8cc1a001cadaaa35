//! `cors` (route phase): answers allowed preflights at the request headers and decorates the
//! response of an allowed actual request.

use http::header::{self, HeaderMap, HeaderValue};
use http::request::Parts;
use http::{Method, Response, StatusCode};

use super::PolicyError;
use crate::backend::Adapter as _;
use crate::body::{self, Body};
use crate::context::RequestCtx;
use crate::pipeline::{Flow, Phase};

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
    pub(crate) fn compile(c: &config::Cors) -> Result<Self, PolicyError> {
        let join = |v: &[String]| -> Result<Option<HeaderValue>, PolicyError> {
            if v.is_empty() {
                return Ok(None);
            }
            HeaderValue::from_str(&v.join(", "))
                .map(Some)
                .map_err(|_| PolicyError::new(format!("invalid CORS list {v:?}")))
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

impl Phase for Cors {
    fn request_headers(&self, ctx: &mut RequestCtx<'_>, req: &Parts) -> Flow {
        match self.evaluate(&req.method, &req.headers) {
            CorsOutcome::Preflight(resp) => Flow::Respond(resp),
            CorsOutcome::Actual(h) => {
                ctx.cors = Some(h);
                Flow::Continue
            }
            CorsOutcome::NotCors => Flow::Continue,
        }
    }

    fn response_headers(&self, ctx: &RequestCtx<'_>, resp: &mut Response<Body>) {
        let Some(h) = &ctx.cors else { return };
        for (k, v) in h {
            resp.headers_mut().insert(k.clone(), v.clone());
        }
        // What the backend's clients must read (an MCP client's session id), unless the
        // policy names its own list.
        let exposed = ctx.backend.and_then(|b| b.adapter.cors_expose());
        if let Some(e) = exposed {
            if !resp
                .headers()
                .contains_key(header::ACCESS_CONTROL_EXPOSE_HEADERS)
            {
                resp.headers_mut()
                    .insert(header::ACCESS_CONTROL_EXPOSE_HEADERS, e);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
