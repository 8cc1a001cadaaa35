//! Bedrock credentials: AWS Signature Version 4 over the final request (method, URI, headers
//! and body hash), with the `aws-sigv4` crate. Reference: "Signature Version 4 signing process"
//! (docs.aws.amazon.com/IAM/latest/UserGuide/reference_aws-signing.html); Bedrock's signing
//! name is `bedrock`.

use std::time::SystemTime;

use aws_credential_types::Credentials;
use aws_sigv4::http_request::{sign, SignableBody, SignableRequest, SigningSettings};
use aws_sigv4::sign::v4;
use aws_smithy_runtime_api::client::identity::Identity;
use http::Request;

use config::{BedrockProvider, Secret};

use crate::body::Body;

pub struct AwsSigner {
    identity: Identity,
    region: String,
}

impl AwsSigner {
    /// Static keys from the config, else the standard environment variables.
    pub fn new(p: &BedrockProvider) -> Result<Self, String> {
        let from_env = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        let pick = |configured: &Option<Secret>, env: &str| {
            configured
                .as_ref()
                .map(|s| s.expose().to_string())
                .or_else(|| from_env(env))
        };
        let access_key = pick(&p.access_key_id, "AWS_ACCESS_KEY_ID").ok_or(
            "no AWS credentials: set bedrock.accessKeyId/secretAccessKey or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY",
        )?;
        let secret_key = pick(&p.secret_access_key, "AWS_SECRET_ACCESS_KEY")
            .ok_or("bedrock: an access key id needs a secret access key (secretAccessKey or AWS_SECRET_ACCESS_KEY)")?;
        let session_token = pick(&p.session_token, "AWS_SESSION_TOKEN");
        let credentials =
            Credentials::new(access_key, secret_key, session_token, None, "switchyard");
        Ok(AwsSigner {
            identity: credentials.into(),
            region: p.region.clone(),
        })
    }

    /// Adds `authorization`, `x-amz-date` (and `x-amz-security-token`) for this exact request.
    /// The Host signed is the URI's authority, which is what hyper sends.
    pub fn sign(&self, req: &mut Request<Body>, payload: &[u8]) -> Result<(), String> {
        let params = v4::SigningParams::builder()
            .identity(&self.identity)
            .region(&self.region)
            .name("bedrock")
            .time(SystemTime::now())
            .settings(SigningSettings::default())
            .build()
            .map_err(|e| format!("SigV4 parameters: {e}"))?
            .into();
        let host = req
            .uri()
            .authority()
            .map(|a| a.as_str().to_string())
            .unwrap_or_default();
        let uri = req.uri().to_string();
        let mut headers: Vec<(&str, &str)> = req
            .headers()
            .iter()
            .filter_map(|(k, v)| v.to_str().ok().map(|v| (k.as_str(), v)))
            .collect();
        headers.push(("host", &host));
        let signable = SignableRequest::new(
            req.method().as_str(),
            &uri,
            headers.into_iter(),
            SignableBody::Bytes(payload),
        )
        .map_err(|e| format!("cannot sign this request: {e}"))?;
        let (instructions, _signature) = sign(signable, &params)
            .map_err(|e| format!("SigV4 signing failed: {e}"))?
            .into_parts();
        instructions.apply_to_request_http1x(req);
        if let Some(v) = req.headers_mut().get_mut(http::header::AUTHORIZATION) {
            v.set_sensitive(true);
        }
        // hyper derives Host from the URI; a signed copy in the map would be sent twice.
        req.headers_mut().remove(http::header::HOST);
        Ok(())
    }
}
