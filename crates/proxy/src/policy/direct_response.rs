//! `directResponse` (route phase, request headers): the gateway answers with a fixed status
//! and body; nothing is sent upstream.

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::request::Parts;
use http::{Response, StatusCode};

use super::PolicyError;
use crate::body::{self, Body};
use crate::context::RequestCtx;
use crate::pipeline::{Flow, Phase};

#[derive(Debug)]
pub struct DirectResponse {
    status: StatusCode,
    body: Bytes,
    content_type: HeaderValue,
}

impl DirectResponse {
    pub(crate) fn compile(d: &config::DirectResponse) -> Result<Self, PolicyError> {
        let status =
            StatusCode::from_u16(d.status.0).map_err(|e| PolicyError::new(e.to_string()))?;
        let is_json = serde_json::from_str::<serde_json::Value>(&d.body)
            .is_ok_and(|v| v.is_object() || v.is_array());
        Ok(DirectResponse {
            status,
            body: Bytes::copy_from_slice(d.body.as_bytes()),
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

impl Phase for DirectResponse {
    fn request_headers(&self, _ctx: &mut RequestCtx<'_>, _req: &Parts) -> Flow {
        Flow::Respond(self.respond())
    }
}
