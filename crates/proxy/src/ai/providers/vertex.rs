//! Google Vertex AI: Gemini models under a project and location, OAuth access tokens for a
//! service account (or a fixed token from `backendAuth`).

use llm::Format;

use super::{bearer_or_none, need_model, path_segment, ProviderApi, Setup};
use crate::ai::{google, Credentials};
use crate::error::{CompileError, ProxyError};

pub(super) fn host(v: &config::VertexProvider) -> String {
    match v.region.as_deref() {
        None | Some("global") => "aiplatform.googleapis.com".to_string(),
        Some(r) => format!("{r}-aiplatform.googleapis.com"),
    }
}

struct Vertex {
    project: String,
    location: String,
}

impl ProviderApi for Vertex {
    fn name(&self) -> &'static str {
        "gcp.vertex_ai"
    }
    fn egress(&self) -> Format {
        Format::Gemini
    }
    fn chat_path(
        &self,
        prefix: &str,
        model: Option<&str>,
        stream: bool,
    ) -> Result<String, ProxyError> {
        let model = path_segment(need_model(self.name(), model)?);
        Ok(format!(
            "{prefix}/v1/projects/{}/locations/{}/publishers/google/models/{model}:{}",
            self.project,
            self.location,
            super::gemini::method(stream)
        ))
    }
}

pub(super) fn setup(
    v: &config::VertexProvider,
    key: Option<&config::BackendAuth>,
    limits: &config::Limits,
) -> Result<Setup, CompileError> {
    let credentials = match key {
        Some(_) => bearer_or_none(key)?,
        None => {
            let json = match &v.credentials {
                Some(secret) => secret.expose().to_string(),
                None => {
                    let path = std::env::var_os("GOOGLE_APPLICATION_CREDENTIALS").ok_or(
                        "vertex needs `credentials` (a service-account key), GOOGLE_APPLICATION_CREDENTIALS, or backendAuth.key (an access token)",
                    )?;
                    std::fs::read_to_string(&path).map_err(|e| {
                        format!(
                            "GOOGLE_APPLICATION_CREDENTIALS ({}): {e}",
                            path.to_string_lossy()
                        )
                    })?
                }
            };
            Credentials::Google(google::GoogleTokenSource::from_json(&json, limits)?)
        }
    };
    Ok(Setup {
        api: Box::new(Vertex {
            project: v.project_id.clone(),
            location: v
                .region
                .clone()
                .unwrap_or_else(|| "us-central1".to_string()),
        }),
        model: v.model.clone(),
        credentials,
    })
}
