//! `requestRedirect` (route phase, request headers): answers with a redirect; nothing is
//! sent upstream.

use http::header::{self, HeaderValue};
use http::request::Parts;
use http::{Response, StatusCode};

use config::{AuthorityRewrite, PathRewrite};

use super::url_rewrite::{rewrite_authority, rewrite_path};
use crate::body::{self, Body};
use crate::context::RequestCtx;
use crate::pipeline::{Flow, Phase};

#[derive(Debug)]
pub struct Redirect {
    scheme: Option<String>,
    authority: Option<AuthorityRewrite>,
    path: Option<PathRewrite>,
    status: StatusCode,
}

impl Redirect {
    pub(crate) fn compile(r: &config::RequestRedirect) -> Redirect {
        Redirect {
            scheme: r.scheme.clone(),
            authority: r.authority.clone(),
            path: r.path.clone(),
            status: r
                .status
                .and_then(|s| StatusCode::from_u16(s.0).ok())
                .unwrap_or(StatusCode::FOUND),
        }
    }

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

impl Phase for Redirect {
    fn request_headers(&self, ctx: &mut RequestCtx<'_>, req: &Parts) -> Flow {
        let authority = original_authority(req).unwrap_or_default();
        let scheme = if ctx.conn.tls { "https" } else { "http" };
        Flow::Respond(self.respond(
            scheme,
            &authority,
            req.uri.path(),
            req.uri.query(),
            ctx.matched_prefix,
        ))
    }
}

/// The Host the client asked for: the URI authority (HTTP/2, absolute-form) or `Host`.
fn original_authority(parts: &Parts) -> Option<String> {
    parts
        .uri
        .authority()
        .map(|a| a.as_str().to_string())
        .or_else(|| {
            parts
                .headers
                .get(header::HOST)
                .and_then(|h| h.to_str().ok())
                .map(str::to_string)
        })
}
