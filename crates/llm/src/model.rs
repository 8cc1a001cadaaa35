//! What a request says before it is parsed in full: the model it names and the dialect its
//! path speaks. Routing by model reads these, once, before any translation.

use std::borrow::Cow;

use serde::Deserialize;

use crate::Format;

impl Format {
    /// The dialect a client speaks on this path, by its well-known suffix (Anthropic
    /// Messages, OpenAI Responses; OpenAI Chat otherwise), for answers written before a
    /// backend is chosen.
    pub fn of_path(path: &str) -> Format {
        if path.ends_with("/messages") || path.ends_with("/messages/count_tokens") {
            Format::AnthropicMessages
        } else if path.ends_with("/responses") {
            Format::OpenAiResponses
        } else {
            Format::OpenAiChat
        }
    }
}

/// Gemini's model, named in the path: `.../models/{model}:generateContent` (or
/// `:streamGenerateContent`, `:countTokens`, ...). Percent-encoding is left as sent.
pub fn model_in_path(path: &str) -> Option<&str> {
    let (_, rest) = path.rsplit_once("/models/")?;
    let (model, method) = rest.split_once(':')?;
    (!model.is_empty() && !model.contains('/') && !method.is_empty()).then_some(model)
}

/// The top-level `model` of a JSON request body (Chat Completions, Completions, Responses,
/// Embeddings, Anthropic Messages), read without building the rest of the document.
pub fn model_in_body(body: &[u8]) -> Option<String> {
    #[derive(Deserialize)]
    struct ModelOnly<'a> {
        #[serde(borrow, default)]
        model: Option<Cow<'a, str>>,
    }
    serde_json::from_slice::<ModelOnly<'_>>(body)
        .ok()?
        .model
        .map(Cow::into_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_model_comes_from_the_body_or_geminis_path() {
        assert_eq!(
            model_in_body(
                br#"{"messages": [{"role": "user", "content": "x"}], "model": "gpt-4o"}"#
            )
            .as_deref(),
            Some("gpt-4o")
        );
        assert_eq!(
            model_in_body(br#"{"model": "a\u002fb", "input": "x"}"#).as_deref(),
            Some("a/b")
        );
        assert_eq!(model_in_body(br#"{"messages": []}"#), None);
        assert_eq!(model_in_body(br#"{"model": 7}"#), None);
        assert_eq!(model_in_body(b"not json"), None);
        assert_eq!(
            model_in_path("/v1beta/models/gemini-2.0-flash:generateContent"),
            Some("gemini-2.0-flash")
        );
        assert_eq!(
            model_in_path(
                "/v1/projects/p/locations/l/publishers/google/models/g:streamGenerateContent"
            ),
            Some("g")
        );
        assert_eq!(model_in_path("/v1/models"), None);
        assert_eq!(model_in_path("/v1/models/gpt-4o"), None);
        assert_eq!(
            Format::of_path("/anthropic/v1/messages"),
            Format::AnthropicMessages
        );
        assert_eq!(Format::of_path("/v1/responses"), Format::OpenAiResponses);
        assert_eq!(Format::of_path("/v1/chat/completions"), Format::OpenAiChat);
    }
}
