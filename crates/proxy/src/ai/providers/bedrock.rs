//! Amazon Bedrock: the Converse API with the model in the URL, SigV4 over every request.

use llm::Format;

use super::{need_model, path_segment, ProviderApi, Setup};
use crate::ai::{aws, Credentials};
use crate::error::{CompileError, ProxyError};

pub(super) fn host(b: &config::BedrockProvider) -> String {
    format!("bedrock-runtime.{}.amazonaws.com", b.region)
}

struct Bedrock;

impl ProviderApi for Bedrock {
    fn name(&self) -> &'static str {
        "aws.bedrock"
    }
    fn egress(&self) -> Format {
        Format::Bedrock
    }
    fn chat_path(
        &self,
        prefix: &str,
        model: Option<&str>,
        stream: bool,
    ) -> Result<String, ProxyError> {
        let model = path_segment(need_model(self.name(), model)?);
        let action = if stream {
            "converse-stream"
        } else {
            "converse"
        };
        Ok(format!("{prefix}/model/{model}/{action}"))
    }
}

pub(super) fn setup(b: &config::BedrockProvider) -> Result<Setup, CompileError> {
    Ok(Setup {
        api: Box::new(Bedrock),
        model: b.model.clone(),
        credentials: Credentials::Aws(Box::new(aws::AwsSigner::new(b)?)),
    })
}
