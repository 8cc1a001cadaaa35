//! What the picker needs from an OpenAI-style request body: the model, the prompt text and
//! the user. Chat messages are rendered in order (`role: content` lines) so that requests
//! sharing a system prompt or earlier turns share a text prefix.

use serde_json::Value;

/// A request body reduced to what strategies read; borrowed by [`crate::PickRequest`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ParsedRequest {
    pub model: Option<String>,
    pub prompt: String,
    pub user: Option<String>,
    pub stream: bool,
}

impl ParsedRequest {
    /// A pick request over this body, with the session named by the caller's header.
    pub fn pick_request<'a>(&'a self, session: Option<&'a str>) -> crate::PickRequest<'a> {
        crate::PickRequest {
            model: self.model.as_deref(),
            prompt: &self.prompt,
            user: self.user.as_deref(),
            session,
        }
    }
}

/// Parses a Chat Completions, Completions, Responses or Anthropic Messages body. An empty
/// body (a GET, say) gives an empty prompt; anything that is not a JSON object is an error.
pub fn parse_request(body: &[u8]) -> Result<ParsedRequest, String> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(ParsedRequest::default());
    }
    let v: Value =
        serde_json::from_slice(body).map_err(|e| format!("request body is not valid JSON: {e}"))?;
    let Value::Object(o) = &v else {
        return Err("request body must be a JSON object".into());
    };
    let text = |k: &str| o.get(k).and_then(Value::as_str).map(str::to_string);
    let mut prompt = String::new();
    if let Some(system) = o.get("system").or_else(|| o.get("instructions")) {
        push_line(&mut prompt, "system", system);
    }
    if let Some(Value::Array(messages)) = o.get("messages") {
        for m in messages {
            let role = m.get("role").and_then(Value::as_str).unwrap_or("user");
            if let Some(c) = m.get("content") {
                push_line(&mut prompt, role, c);
            }
        }
    }
    match o.get("prompt").or_else(|| o.get("input")) {
        Some(Value::String(s)) => prompt.push_str(s),
        Some(Value::Array(items)) => {
            for item in items {
                match item {
                    Value::String(s) => prompt.push_str(s),
                    Value::Object(_) => {
                        let role = item.get("role").and_then(Value::as_str).unwrap_or("user");
                        if let Some(c) = item.get("content") {
                            push_line(&mut prompt, role, c);
                        }
                    }
                    _ => {}
                }
            }
        }
        _ => {}
    }
    Ok(ParsedRequest {
        model: text("model"),
        prompt,
        user: text("user"),
        stream: o.get("stream").and_then(Value::as_bool).unwrap_or(false),
    })
}

/// `role: text\n`, where content is a string or an array of parts with `text`.
fn push_line(out: &mut String, role: &str, content: &Value) {
    out.push_str(role);
    out.push_str(": ");
    match content {
        Value::String(s) => out.push_str(s),
        Value::Array(parts) => {
            for p in parts {
                match p {
                    Value::String(s) => out.push_str(s),
                    _ => {
                        if let Some(t) = p.get("text").and_then(Value::as_str) {
                            out.push_str(t);
                        }
                    }
                }
            }
        }
        _ => {}
    }
    out.push('\n');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chat_messages_render_in_order_so_turns_share_a_prefix() {
        let one = br#"{"model":"m","user":"u1","messages":[
            {"role":"system","content":"policy"},
            {"role":"user","content":[{"type":"text","text":"hi"}]}]}"#;
        let two = br#"{"model":"m","stream":true,"messages":[
            {"role":"system","content":"policy"},
            {"role":"user","content":"hi"},
            {"role":"assistant","content":"hello"},
            {"role":"user","content":"more"}]}"#;
        let a = parse_request(one).unwrap();
        let b = parse_request(two).unwrap();
        assert_eq!(a.prompt, "system: policy\nuser: hi\n");
        assert!(b.prompt.starts_with(&a.prompt), "{:?}", b.prompt);
        assert_eq!(a.model.as_deref(), Some("m"));
        assert_eq!(a.user.as_deref(), Some("u1"));
        assert!(!a.stream && b.stream);
    }

    #[test]
    fn completions_anthropic_and_errors() {
        let c = parse_request(br#"{"model":"m","prompt":["ab","cd"]}"#).unwrap();
        assert_eq!(c.prompt, "abcd");
        let a = parse_request(
            br#"{"model":"claude","system":"be brief","messages":[{"role":"user","content":"q"}]}"#,
        )
        .unwrap();
        assert_eq!(a.prompt, "system: be brief\nuser: q\n");
        assert_eq!(parse_request(b"  ").unwrap(), ParsedRequest::default());
        assert!(parse_request(b"{not json")
            .unwrap_err()
            .contains("not valid JSON"));
        assert!(parse_request(b"[1]").unwrap_err().contains("JSON object"));
    }
}
