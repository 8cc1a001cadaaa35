//! GitHub Copilot: OpenAI's API at the root of its host; a GitHub token (`backendAuth.key`)
//! traded for short-lived Copilot tokens.

use super::{Operation, ProviderApi, Setup};
use crate::ai::{github, Credentials};
use crate::error::CompileError;

pub(super) const HOST: &str = "api.githubcopilot.com";

struct Copilot;

impl ProviderApi for Copilot {
    fn name(&self) -> &'static str {
        "github.copilot"
    }
    fn operation_path(&self, prefix: &str, op: Operation) -> String {
        format!("{prefix}/{}", op.openai_segment())
    }
}

pub(super) fn setup(
    c: &config::CopilotProvider,
    key: Option<&config::BackendAuth>,
    limits: &config::Limits,
) -> Result<Setup, CompileError> {
    let Some(k) = key else {
        return Err(
            "copilot needs backendAuth.key: a GitHub OAuth token with Copilot access".into(),
        );
    };
    Ok(Setup {
        api: Box::new(Copilot),
        model: c.model.clone(),
        credentials: Credentials::Copilot(Box::new(github::CopilotTokenSource::new(
            k.key.expose(),
            c.token_url.as_deref().unwrap_or(github::DEFAULT_TOKEN_URL),
            limits,
        )?)),
    })
}
