//! Request preparation and translation, against golden fixtures.

mod common;

use common::{fixture, json_of};
use llm::{prepare_request, Format, PromptMessage, RequestOptions};
use serde_json::{json, Map, Value};

struct Opts {
    model_override: Option<String>,
    aliases: Vec<(String, String)>,
    defaults: Map<String, Value>,
    overrides: Map<String, Value>,
}

impl Opts {
    fn new() -> Self {
        Opts {
            model_override: None,
            aliases: Vec::new(),
            defaults: Map::new(),
            overrides: Map::new(),
        }
    }
    fn get(&self) -> RequestOptions<'_> {
        RequestOptions {
            model_override: self.model_override.as_deref(),
            model_aliases: &self.aliases,
            defaults: &self.defaults,
            overrides: &self.overrides,
            default_max_tokens: 4096,
        }
    }
}

fn obj(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        _ => panic!("not an object"),
    }
}

#[test]
fn openai_to_anthropic_golden() {
    let mut o = Opts::new();
    o.aliases = vec![("gpt-4o*".into(), "claude-sonnet-4-5".into())];
    let p = prepare_request(
        Format::OpenAiChat,
        Format::AnthropicMessages,
        &fixture("request_openai.json"),
        &o.get(),
    )
    .expect("prepared");
    assert_eq!(
        json_of(&p.body),
        json_of(&fixture("request_openai_to_anthropic.json"))
    );
    assert_eq!(p.request_model.as_deref(), Some("gpt-4o"));
    assert_eq!(p.upstream_model.as_deref(), Some("claude-sonnet-4-5"));
    assert!(p.stream);
    assert_eq!(
        Value::Object(p.params),
        json!({"temperature":0.2,"top_p":0.9,"max_completion_tokens":512,"stop":"END","seed":7})
    );
    assert_eq!(
        p.prompt[0],
        PromptMessage {
            role: "system".into(),
            content: "You are terse.".into()
        }
    );
    assert_eq!(
        p.prompt[4],
        PromptMessage {
            role: "tool".into(),
            content: "18C sunny".into()
        }
    );
    assert_eq!(p.prompt.len(), 7);
}

#[test]
fn anthropic_to_openai_golden() {
    let mut o = Opts::new();
    o.aliases = vec![
        ("claude-3-5-*".into(), "gpt-4.1".into()),
        ("claude-*".into(), "gpt-4o-mini".into()),
    ];
    let p = prepare_request(
        Format::AnthropicMessages,
        Format::OpenAiChat,
        &fixture("request_anthropic.json"),
        &o.get(),
    )
    .expect("prepared");
    assert_eq!(
        json_of(&p.body),
        json_of(&fixture("request_anthropic_to_openai.json"))
    );
    assert_eq!(
        p.upstream_model.as_deref(),
        Some("gpt-4.1"),
        "first matching alias wins"
    );
    assert_eq!(
        Value::Object(p.params),
        json!({"temperature":0.5,"top_p":0.8,"top_k":40,"max_tokens":1024,"stop_sequences":["END","STOP"]})
    );
    assert_eq!(
        p.prompt[0],
        PromptMessage {
            role: "system".into(),
            content: "You are a weather bot.".into()
        }
    );
    assert_eq!(p.prompt[3].content, "18C sunny\n4C snow\nCompare them.");
}

#[test]
fn translated_requests_keep_message_order_and_key_order() {
    let o = Opts::new();
    let p = prepare_request(
        Format::OpenAiChat,
        Format::AnthropicMessages,
        &fixture("request_openai.json"),
        &o.get(),
    )
    .expect("prepared");
    let text = String::from_utf8(p.body).expect("utf8");
    assert!(text.starts_with(r#"{"model":"gpt-4o","system":"#), "{text}");
}

#[test]
fn same_format_preserves_key_order_and_unknown_fields() {
    let body = br#"{"zeta":1,"model":"gpt-4o","messages":[{"role":"user","content":"hi","x_custom":true}],"alpha":{"b":1,"a":2}}"#;
    let mut o = Opts::new();
    o.model_override = Some("gpt-4o-mini".into());
    let p =
        prepare_request(Format::OpenAiChat, Format::OpenAiChat, body, &o.get()).expect("prepared");
    assert_eq!(
        String::from_utf8(p.body).expect("utf8"),
        r#"{"zeta":1,"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi","x_custom":true}],"alpha":{"b":1,"a":2}}"#
    );
    assert!(!p.stream);
}

#[test]
fn malformed_json_is_400_with_position() {
    let o = Opts::new();
    let err = prepare_request(
        Format::OpenAiChat,
        Format::OpenAiChat,
        b"{\"model\": \"x\",\n  \"messages\": [}",
        &o.get(),
    )
    .expect_err("error");
    assert_eq!(err.status, 400);
    assert!(err.message.contains("line 2 column 16"), "{}", err.message);
    assert_eq!(
        err.message.matches("line").count(),
        1,
        "position stated once: {}",
        err.message
    );

    let err = prepare_request(Format::OpenAiChat, Format::OpenAiChat, b"[1,2]", &o.get())
        .expect_err("error");
    assert_eq!(
        (err.status, err.message.as_str()),
        (400, "request body must be a JSON object")
    );
    let err = prepare_request(
        Format::AnthropicMessages,
        Format::OpenAiChat,
        br#"{"model":"m"}"#,
        &o.get(),
    )
    .expect_err("error");
    assert_eq!(err.status, 400);
    assert!(err.message.contains("messages"));
    let err = prepare_request(Format::OpenAiChat, Format::AnthropicMessages, br#"{"messages":[{"role":"user","content":[{"type":"image_url","image_url":{"url":"data:image/png,abc"}}]}]}"#, &o.get())
        .expect_err("error");
    assert!(
        err.message.contains("messages[0].content[0]"),
        "{}",
        err.message
    );
}

#[test]
fn model_override_wins_over_aliases_and_overrides() {
    let mut o = Opts::new();
    o.model_override = Some("forced".into());
    o.aliases = vec![("*".into(), "aliased".into())];
    o.overrides = obj(json!({"model": "overridden"}));
    let body = br#"{"model":"asked","messages":[{"role":"user","content":"hi"}]}"#;
    let p = prepare_request(
        Format::OpenAiChat,
        Format::AnthropicMessages,
        body,
        &o.get(),
    )
    .expect("prepared");
    assert_eq!(p.request_model.as_deref(), Some("asked"));
    assert_eq!(p.upstream_model.as_deref(), Some("forced"));
    assert_eq!(json_of(&p.body)["model"], "forced");

    o.model_override = None;
    let p = prepare_request(
        Format::OpenAiChat,
        Format::AnthropicMessages,
        body,
        &o.get(),
    )
    .expect("prepared");
    assert_eq!(
        p.upstream_model.as_deref(),
        Some("aliased"),
        "aliases apply to the overridden model"
    );

    o.aliases = vec![("gpt-*".into(), "never".into())];
    o.overrides = Map::new();
    let p = prepare_request(
        Format::OpenAiChat,
        Format::AnthropicMessages,
        body,
        &o.get(),
    )
    .expect("prepared");
    assert_eq!(
        p.upstream_model.as_deref(),
        Some("asked"),
        "no alias matches: model unchanged"
    );
}

#[test]
fn overrides_beat_client_which_beats_defaults_in_ingress_format() {
    let mut o = Opts::new();
    o.overrides = obj(json!({"temperature": 0.1, "max_completion_tokens": 99}));
    o.defaults = obj(json!({"temperature": 0.9, "top_p": 0.5, "user": "default-user"}));
    let body = br#"{"model":"m","temperature":0.7,"user":"client-user","messages":[{"role":"user","content":"hi"}]}"#;
    let p = prepare_request(
        Format::OpenAiChat,
        Format::AnthropicMessages,
        body,
        &o.get(),
    )
    .expect("prepared");
    let out = json_of(&p.body);
    assert_eq!(out["temperature"], 0.1, "override beats client and default");
    assert_eq!(out["top_p"], 0.5, "default fills a gap");
    assert_eq!(
        out["metadata"]["user_id"], "client-user",
        "client beats default"
    );
    assert_eq!(
        out["max_tokens"], 99,
        "override written in OpenAI spelling is translated"
    );
    assert_eq!(p.params["temperature"], 0.1);
}

#[test]
fn default_max_tokens_when_client_gives_none() {
    let o = Opts::new();
    let body = br#"{"model":"m","messages":[{"role":"user","content":"hi"}],"max_tokens":null}"#;
    let p = prepare_request(
        Format::OpenAiChat,
        Format::AnthropicMessages,
        body,
        &o.get(),
    )
    .expect("prepared");
    assert_eq!(json_of(&p.body)["max_tokens"], 4096);
}

#[test]
fn tool_choice_and_parallel_mappings() {
    let o = Opts::new();
    let tools = r#"[{"type":"function","function":{"name":"f","parameters":{"type":"object"}}}]"#;
    let cases = [
        (r#""auto""#, json!({"type":"auto"}), r#""auto""#),
        (r#""none""#, json!({"type":"none"}), r#""none""#),
        (r#""required""#, json!({"type":"any"}), r#""required""#),
    ];
    for (oa, an, back) in cases {
        let body = format!(
            r#"{{"model":"m","messages":[{{"role":"user","content":"x"}}],"tools":{tools},"tool_choice":{oa}}}"#
        );
        let p = prepare_request(
            Format::OpenAiChat,
            Format::AnthropicMessages,
            body.as_bytes(),
            &o.get(),
        )
        .expect("p");
        let out = json_of(&p.body);
        assert_eq!(out["tool_choice"], an);
        // And back again.
        let p2 = prepare_request(
            Format::AnthropicMessages,
            Format::OpenAiChat,
            &p.body,
            &o.get(),
        )
        .expect("p2");
        assert_eq!(json_of(&p2.body)["tool_choice"], json_of(back.as_bytes()));
    }
    // parallel_tool_calls:false without tool_choice.
    let body = format!(
        r#"{{"model":"m","messages":[{{"role":"user","content":"x"}}],"tools":{tools},"parallel_tool_calls":false}}"#
    );
    let p = prepare_request(
        Format::OpenAiChat,
        Format::AnthropicMessages,
        body.as_bytes(),
        &o.get(),
    )
    .expect("p");
    assert_eq!(
        json_of(&p.body)["tool_choice"],
        json!({"type":"auto","disable_parallel_tool_use":true})
    );
}

#[test]
fn invalid_tool_arguments_are_a_precise_400() {
    let o = Opts::new();
    let body = br#"{"model":"m","messages":[{"role":"assistant","content":null,"tool_calls":[{"id":"c","type":"function","function":{"name":"f","arguments":"{not json"}}]}]}"#;
    let err = prepare_request(
        Format::OpenAiChat,
        Format::AnthropicMessages,
        body,
        &o.get(),
    )
    .expect_err("err");
    assert_eq!(err.status, 400);
    assert!(
        err.message
            .contains("messages[0].tool_calls[0].function.arguments"),
        "{}",
        err.message
    );
}

#[test]
fn cache_control_kept_for_anthropic_to_anthropic() {
    let o = Opts::new();
    let body = fixture("request_anthropic.json");
    let p = prepare_request(
        Format::AnthropicMessages,
        Format::AnthropicMessages,
        &body,
        &o.get(),
    )
    .expect("p");
    let out = json_of(&p.body);
    assert_eq!(out, json_of(&body));
    assert_eq!(out["system"][0]["cache_control"]["type"], "ephemeral");
}
