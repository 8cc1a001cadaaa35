//! Scalar config values that validate themselves while being deserialized, so that a bad value
//! is reported by the YAML parser at its own line and column.

use std::borrow::Cow;
use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use schemars::{json_schema, JsonSchema, Schema, SchemaGenerator};
use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::{Deserialize, Serialize, Serializer};

/// A secret: inline (usually `$ENV`-expanded) or read from `{file: path}` at load time.
/// `Debug`, `Display` and `Serialize` never show the value.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret {
    value: Arc<str>,
    source: SecretSource,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SecretSource {
    Inline,
    File(PathBuf),
}

impl Secret {
    pub fn new(value: impl Into<Arc<str>>) -> Self {
        Secret {
            value: value.into(),
            source: SecretSource::Inline,
        }
    }

    /// The secret's value. Callers must not log it.
    pub fn expose(&self) -> &str {
        &self.value
    }

    pub fn source(&self) -> &SecretSource {
        &self.source
    }

    /// Reads a `{file: ...}` secret relative to `base`; trailing newlines are dropped.
    pub(crate) fn load_file(&mut self, base: &std::path::Path) -> Result<(), String> {
        if let SecretSource::File(path) = &self.source {
            let full = base.join(path);
            let text = std::fs::read_to_string(&full)
                .map_err(|e| format!("cannot read secret file {}: {e}", full.display()))?;
            self.value = text.trim_end_matches(['\r', '\n']).into();
        }
        Ok(())
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match &self.source {
            SecretSource::Inline => s.serialize_str("<redacted>"),
            SecretSource::File(path) => {
                use serde::ser::SerializeMap;
                let mut m = s.serialize_map(Some(1))?;
                m.serialize_entry("file", path)?;
                m.end()
            }
        }
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Secret;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a secret string or {file: path}")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Secret, E> {
                Ok(Secret::new(v))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Secret, A::Error> {
                let mut file: Option<PathBuf> = None;
                while let Some(key) = map.next_key::<String>()? {
                    if key != "file" {
                        return Err(de::Error::unknown_field(&key, &["file"]));
                    }
                    file = Some(map.next_value()?);
                }
                let file = file.ok_or_else(|| de::Error::missing_field("file"))?;
                Ok(Secret {
                    value: "".into(),
                    source: SecretSource::File(file),
                })
            }
        }
        d.deserialize_any(V)
    }
}

impl JsonSchema for Secret {
    fn schema_name() -> Cow<'static, str> {
        "Secret".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "A secret value, inline (use $ENV references) or {file: path}",
            "oneOf": [
                {"type": "string"},
                {"type": "object", "properties": {"file": {"type": "string"}}, "required": ["file"], "additionalProperties": false}
            ]
        })
    }
}

/// A duration written as `10s`, `250ms`, `1m30s`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Dur(pub Duration);

impl Serialize for Dur {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(self.0).to_string())
    }
}

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        humantime::parse_duration(&s).map(Dur).map_err(|e| {
            de::Error::custom(format!(
                "invalid duration {s:?}: {e}; expected a duration such as \"10s\" or \"250ms\""
            ))
        })
    }
}

impl JsonSchema for Dur {
    fn schema_name() -> Cow<'static, str> {
        "Duration".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({"type": "string", "description": "A duration such as 10s, 250ms or 1m30s", "examples": ["10s"]})
    }
}

/// A regular expression, compiled when the config loads. Matches the whole input.
#[derive(Clone, Debug)]
pub struct Pattern {
    source: Arc<str>,
    regex: regex::Regex,
}

impl Pattern {
    pub fn as_str(&self) -> &str {
        &self.source
    }
    pub fn is_full_match(&self, input: &str) -> bool {
        self.regex.is_match(input)
    }
}

impl PartialEq for Pattern {
    fn eq(&self, other: &Self) -> bool {
        self.source == other.source
    }
}

impl Serialize for Pattern {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.source)
    }
}

impl<'de> Deserialize<'de> for Pattern {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        let regex = regex::Regex::new(&format!("^(?:{s})$"))
            .map_err(|e| de::Error::custom(format!("invalid regular expression {s:?}: {e}")))?;
        Ok(Pattern {
            source: s.into(),
            regex,
        })
    }
}

impl JsonSchema for Pattern {
    fn schema_name() -> Cow<'static, str> {
        "Regex".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({"type": "string", "format": "regex", "description": "A regular expression (RE2 syntax) that must match the whole value"})
    }
}

/// An HTTP header name, checked and lower-cased at load time.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct HeaderName(Arc<str>);

impl HeaderName {
    pub fn as_str(&self) -> &str {
        &self.0
    }
    /// Header names whose values are credentials and are redacted in config dumps.
    pub fn is_sensitive(&self) -> bool {
        matches!(
            &*self.0,
            "authorization"
                | "proxy-authorization"
                | "cookie"
                | "set-cookie"
                | "x-api-key"
                | "api-key"
                | "x-goog-api-key"
        )
    }
}

fn is_token_char(c: u8) -> bool {
    c.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&c)
}

impl TryFrom<String> for HeaderName {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        if s.is_empty() || !s.bytes().all(is_token_char) {
            return Err(format!(
                "invalid header name {s:?}: expected a token of letters, digits and !#$%&'*+-.^_`|~"
            ));
        }
        Ok(HeaderName(s.to_ascii_lowercase().into()))
    }
}

impl<'de> Deserialize<'de> for HeaderName {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        HeaderName::try_from(String::deserialize(d)?).map_err(de::Error::custom)
    }
}

impl Serialize for HeaderName {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl JsonSchema for HeaderName {
    fn schema_name() -> Cow<'static, str> {
        "HeaderName".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({"type": "string", "pattern": "^[!#$%&'*+.^_`|~0-9A-Za-z-]+$"})
    }
}

/// An HTTP header value: visible ASCII, spaces and tabs (no CR/LF).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HeaderValue(pub Arc<str>);

impl<'de> Deserialize<'de> for HeaderValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        if s.bytes().any(|b| (b < 0x20 && b != b'\t') || b == 0x7f) {
            return Err(de::Error::custom(
                "invalid header value: control characters (CR, LF, ...) are not allowed",
            ));
        }
        Ok(HeaderValue(s.into()))
    }
}

impl JsonSchema for HeaderValue {
    fn schema_name() -> Cow<'static, str> {
        "HeaderValue".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({"type": "string"})
    }
}

/// An HTTP status code, 100..=599.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Status(pub u16);

impl<'de> Deserialize<'de> for Status {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let n = u16::deserialize(d)?;
        if !(100..=599).contains(&n) {
            return Err(de::Error::custom(format!(
                "invalid HTTP status {n}: expected 100..=599"
            )));
        }
        Ok(Status(n))
    }
}

impl JsonSchema for Status {
    fn schema_name() -> Cow<'static, str> {
        "HttpStatus".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({"type": "integer", "minimum": 100, "maximum": 599})
    }
}

/// `host:port`, where host is a DNS name, an IPv4 address or a bracketed IPv6 address.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct HostPort(pub Arc<str>);

impl HostPort {
    pub fn host(&self) -> &str {
        self.split().0
    }
    pub fn port(&self) -> u16 {
        self.split().1
    }
    fn split(&self) -> (&str, u16) {
        // Checked at load time, so the split cannot fail here.
        let (h, p) = self.0.rsplit_once(':').unwrap_or((&self.0, "0"));
        (
            h.trim_start_matches('[').trim_end_matches(']'),
            p.parse().unwrap_or(0),
        )
    }
}

impl TryFrom<String> for HostPort {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        let bad = || format!("invalid address {s:?}: expected host:port, e.g. \"127.0.0.1:8080\"");
        let (host, port) = s.rsplit_once(':').ok_or_else(bad)?;
        port.parse::<u16>().map_err(|_| bad())?;
        let host_ok = if let Some(v6) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
            v6.parse::<std::net::Ipv6Addr>().is_ok()
        } else {
            !host.is_empty()
                && host
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-' || b == b'_')
        };
        if !host_ok {
            return Err(bad());
        }
        Ok(HostPort(s.into()))
    }
}

impl<'de> Deserialize<'de> for HostPort {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        HostPort::try_from(String::deserialize(d)?).map_err(de::Error::custom)
    }
}

impl JsonSchema for HostPort {
    fn schema_name() -> Cow<'static, str> {
        "HostPort".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({"type": "string", "description": "host:port", "examples": ["127.0.0.1:8080"]})
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_never_prints() {
        let s = Secret::new("sk-live-123");
        assert_eq!(format!("{s:?} {s}"), "Secret(<redacted>) <redacted>");
        assert_eq!(serde_json::to_string(&s).unwrap(), "\"<redacted>\"");
        assert_eq!(s.expose(), "sk-live-123");
    }

    #[test]
    fn host_port_parsing() {
        let hp = HostPort::try_from("[::1]:8080".to_string()).unwrap();
        assert_eq!((hp.host(), hp.port()), ("::1", 8080));
        assert!(HostPort::try_from("nohost".to_string()).is_err());
        assert!(HostPort::try_from("a b:80".to_string()).is_err());
        assert!(HostPort::try_from("h:99999".to_string()).is_err());
    }

    #[test]
    fn header_name_is_lowercased_and_checked() {
        assert_eq!(
            HeaderName::try_from("X-Foo".to_string()).unwrap().as_str(),
            "x-foo"
        );
        assert!(HeaderName::try_from("bad header".to_string()).is_err());
    }

    #[test]
    fn pattern_matches_whole_input() {
        let p: Pattern = serde_json::from_str("\"/v[0-9]+\"").unwrap();
        assert!(p.is_full_match("/v12"));
        assert!(!p.is_full_match("/v12/x"));
    }
}
