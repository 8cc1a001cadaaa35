//! What the picker needs from an OpenAI-style request body: the model, the prompt text and
//! the user. Chat messages are rendered in order (`role: content` lines) so that requests
//! sharing a system prompt or earlier turns share a text prefix.

use std::borrow::Cow;
use std::fmt;
use std::sync::OnceLock;

use serde::de::{self, Deserializer, IgnoredAny, SeqAccess, Visitor};
use serde::Deserialize;

/// A request body reduced to what strategies read; borrowed by [`crate::PickRequest`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ParsedRequest {
    pub model: Option<String>,
    pub prompt: String,
    pub user: Option<String>,
    pub stream: bool,
    /// The prompt's prefix-block hashes, computed once per request however many strategy
    /// parts (score, then observe) need them.
    pub block_hashes: OnceLock<Vec<u64>>,
}

impl ParsedRequest {
    /// A pick request over this body, with the session named by the caller's header.
    pub fn pick_request<'a>(&'a self, session: Option<&'a str>) -> crate::PickRequest<'a> {
        crate::PickRequest {
            model: self.model.as_deref(),
            prompt: &self.prompt,
            user: self.user.as_deref(),
            session,
            block_hashes: Some(&self.block_hashes),
        }
    }
}

/// The fields read from a body; everything else is skipped without being built. Strings
/// borrow from the body unless they contain escapes.
#[derive(Deserialize)]
struct Body<'a> {
    #[serde(borrow, default)]
    model: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    user: Option<Cow<'a, str>>,
    #[serde(default)]
    stream: Option<bool>,
    #[serde(default)]
    system: Option<Text>,
    #[serde(default)]
    instructions: Option<Text>,
    #[serde(default)]
    messages: Option<Vec<Message>>,
    #[serde(default)]
    prompt: Option<Prompt>,
    #[serde(default)]
    input: Option<Prompt>,
}

#[derive(Deserialize)]
struct Message {
    #[serde(default)]
    role: Option<String>,
    #[serde(default)]
    content: Option<Text>,
}

/// Message content: a string, or the `text` of each part of an array, concatenated.
#[derive(Default)]
struct Text(String);

impl<'de> Deserialize<'de> for Text {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Text;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string or a list of content parts")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Text, E> {
                Ok(Text(v.to_string()))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Text, E> {
                Ok(Text(v))
            }
            fn visit_unit<E: de::Error>(self) -> Result<Text, E> {
                Ok(Text::default())
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Text, A::Error> {
                let mut out = String::new();
                while let Some(part) = seq.next_element::<Part>()? {
                    out.push_str(&part.0);
                }
                Ok(Text(out))
            }
            fn visit_map<A: de::MapAccess<'de>>(self, map: A) -> Result<Text, A::Error> {
                Part::deserialize(de::value::MapAccessDeserializer::new(map)).map(|p| Text(p.0))
            }
            // Numbers, booleans: not text.
            fn visit_i64<E: de::Error>(self, _: i64) -> Result<Text, E> {
                Ok(Text::default())
            }
            fn visit_u64<E: de::Error>(self, _: u64) -> Result<Text, E> {
                Ok(Text::default())
            }
            fn visit_f64<E: de::Error>(self, _: f64) -> Result<Text, E> {
                Ok(Text::default())
            }
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<Text, E> {
                Ok(Text::default())
            }
        }
        d.deserialize_any(V)
    }
}

/// One content part: its `text` (or the string itself); other fields are skipped.
struct Part(String);

impl<'de> Deserialize<'de> for Part {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Part;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a content part")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Part, E> {
                Ok(Part(v.to_string()))
            }
            fn visit_map<A: de::MapAccess<'de>>(self, mut map: A) -> Result<Part, A::Error> {
                let mut text = String::new();
                while let Some(key) = map.next_key::<Cow<'de, str>>()? {
                    if key == "text" {
                        text = map.next_value::<Text>()?.0;
                    } else {
                        map.next_value::<IgnoredAny>()?;
                    }
                }
                Ok(Part(text))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Part, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(Part(String::new()))
            }
            fn visit_unit<E: de::Error>(self) -> Result<Part, E> {
                Ok(Part(String::new()))
            }
            fn visit_i64<E: de::Error>(self, _: i64) -> Result<Part, E> {
                Ok(Part(String::new()))
            }
            fn visit_u64<E: de::Error>(self, _: u64) -> Result<Part, E> {
                Ok(Part(String::new()))
            }
            fn visit_f64<E: de::Error>(self, _: f64) -> Result<Part, E> {
                Ok(Part(String::new()))
            }
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<Part, E> {
                Ok(Part(String::new()))
            }
        }
        d.deserialize_any(V)
    }
}

/// `prompt` / `input`: a string, or a list of strings or messages.
struct Prompt(Vec<PromptItem>);

enum PromptItem {
    Text(String),
    Message(Message),
}

impl<'de> Deserialize<'de> for Prompt {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Prompt;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a prompt")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Prompt, E> {
                Ok(Prompt(vec![PromptItem::Text(v.to_string())]))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Prompt, A::Error> {
                let mut items = Vec::new();
                while let Some(item) = seq.next_element::<Item>()? {
                    if let Some(i) = item.0 {
                        items.push(i);
                    }
                }
                Ok(Prompt(items))
            }
            fn visit_map<A: de::MapAccess<'de>>(self, map: A) -> Result<Prompt, A::Error> {
                map_ignored(map)?;
                Ok(Prompt(Vec::new()))
            }
            fn visit_unit<E: de::Error>(self) -> Result<Prompt, E> {
                Ok(Prompt(Vec::new()))
            }
            fn visit_i64<E: de::Error>(self, _: i64) -> Result<Prompt, E> {
                Ok(Prompt(Vec::new()))
            }
            fn visit_u64<E: de::Error>(self, _: u64) -> Result<Prompt, E> {
                Ok(Prompt(Vec::new()))
            }
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<Prompt, E> {
                Ok(Prompt(Vec::new()))
            }
        }
        struct Item(Option<PromptItem>);
        impl<'de> Deserialize<'de> for Item {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                struct IV;
                impl<'de> Visitor<'de> for IV {
                    type Value = Item;
                    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                        f.write_str("a prompt item")
                    }
                    fn visit_str<E: de::Error>(self, v: &str) -> Result<Item, E> {
                        Ok(Item(Some(PromptItem::Text(v.to_string()))))
                    }
                    fn visit_map<A: de::MapAccess<'de>>(self, map: A) -> Result<Item, A::Error> {
                        Message::deserialize(de::value::MapAccessDeserializer::new(map))
                            .map(|m| Item(Some(PromptItem::Message(m))))
                    }
                    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Item, A::Error> {
                        while seq.next_element::<IgnoredAny>()?.is_some() {}
                        Ok(Item(None))
                    }
                    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Item, E> {
                        Ok(Item(None))
                    }
                    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Item, E> {
                        Ok(Item(None))
                    }
                    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Item, E> {
                        Ok(Item(None))
                    }
                    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Item, E> {
                        Ok(Item(None))
                    }
                    fn visit_unit<E: de::Error>(self) -> Result<Item, E> {
                        Ok(Item(None))
                    }
                }
                d.deserialize_any(IV)
            }
        }
        d.deserialize_any(V)
    }
}

fn map_ignored<'de, A: de::MapAccess<'de>>(mut map: A) -> Result<(), A::Error> {
    while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
    Ok(())
}

/// Parses a Chat Completions, Completions, Responses or Anthropic Messages body. An empty
/// body (a GET, say) gives an empty prompt; anything that is not a JSON object is an error.
pub fn parse_request(body: &[u8]) -> Result<ParsedRequest, String> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(ParsedRequest::default());
    }
    let first = body.iter().find(|b| !b.is_ascii_whitespace());
    if first != Some(&b'{') {
        // Still say whether it was JSON at all.
        return Err(match serde_json::from_slice::<IgnoredAny>(body) {
            Ok(_) => "request body must be a JSON object".into(),
            Err(e) => format!("request body is not valid JSON: {e}"),
        });
    }
    let b: Body<'_> = serde_json::from_slice(body).map_err(|e| match e.classify() {
        serde_json::error::Category::Data => {
            format!("request body has an unexpected field type: {e}")
        }
        _ => format!("request body is not valid JSON: {e}"),
    })?;
    let mut prompt = String::new();
    if let Some(Text(system)) = b.system.or(b.instructions) {
        push_line(&mut prompt, "system", &system);
    }
    for m in b.messages.iter().flatten() {
        if let Some(Text(c)) = &m.content {
            push_line(&mut prompt, m.role.as_deref().unwrap_or("user"), c);
        }
    }
    for item in b.prompt.or(b.input).into_iter().flat_map(|p| p.0) {
        match item {
            PromptItem::Text(t) => prompt.push_str(&t),
            PromptItem::Message(m) => {
                if let Some(Text(c)) = &m.content {
                    push_line(&mut prompt, m.role.as_deref().unwrap_or("user"), c);
                }
            }
        }
    }
    Ok(ParsedRequest {
        model: b.model.map(Cow::into_owned),
        prompt,
        user: b.user.map(Cow::into_owned),
        stream: b.stream.unwrap_or(false),
        block_hashes: OnceLock::new(),
    })
}

/// `role: text\n`.
fn push_line(out: &mut String, role: &str, content: &str) {
    out.push_str(role);
    out.push_str(": ");
    out.push_str(content);
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
    fn odd_but_valid_shapes_are_read_not_refused() {
        // Escapes, null content, image parts, tool calls, unknown fields, token-id prompts.
        let body = br#"{"model":"m","temperature":0.2,"tools":[{"type":"function"}],
            "messages":[
              {"role":"system","content":"line\none \"quoted\""},
              {"role":"assistant","content":null,"tool_calls":[{"id":"c1"}]},
              {"role":"user","content":[{"type":"image_url","image_url":{"url":"x"}},
                                        {"type":"text","text":"look"}]}]}"#;
        let p = parse_request(body).unwrap();
        assert_eq!(p.prompt, "system: line\none \"quoted\"\nuser: look\n");
        let tokens = parse_request(br#"{"prompt":[[1,2,3]],"input":null}"#).unwrap();
        assert_eq!(tokens.prompt, "");
        let resp = parse_request(
            br#"{"model":"m","instructions":"be brief","input":[{"role":"user","content":[{"type":"input_text","text":"hi"}]}]}"#,
        )
        .unwrap();
        assert_eq!(resp.prompt, "system: be brief\nuser: hi\n");
        // A wrongly typed field the picker reads is a clear error.
        let e = parse_request(br#"{"model":7}"#).unwrap_err();
        assert!(
            e.starts_with("request body has an unexpected field type: invalid type: integer `7`"),
            "{e}"
        );
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
