//! Switchyard configuration: one YAML schema (the seeds' format), loaded with `$ENV` expansion,
//! validated with errors that name the file, line, column and key, and exportable as JSON Schema.

mod env;
#[macro_use]
mod single_key;
mod schema;
mod values;

use std::fmt;
use std::path::{Path, PathBuf};

pub use schema::*;
pub use values::{Dur, HeaderName, HeaderValue, HostPort, Pattern, Secret, SecretSource, Status};

/// A config problem, located as precisely as the source allows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub file: PathBuf,
    /// 1-based; 0 when the problem has no single position (e.g. an unreadable file).
    pub line: usize,
    pub column: usize,
    /// Dotted path of the offending key, e.g. `binds[0].listeners[0].routes[1].backends[0]`.
    pub key: String,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if self.line > 0 {
            write!(f, ":{}:{}", self.line, self.column)?;
        }
        if !self.key.is_empty() {
            write!(f, ": {}", self.key)?;
        }
        write!(f, ": {}", self.message)
    }
}

impl std::error::Error for ConfigError {}

/// A loaded, validated config and where it came from.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub config: Config,
    /// Directory relative paths in the config are resolved against.
    pub base_dir: PathBuf,
    pub file: PathBuf,
}

/// Reads, expands, parses and validates a config file.
pub fn load_file(path: &Path) -> Result<Loaded, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
        file: path.to_path_buf(),
        line: 0,
        column: 0,
        key: String::new(),
        message: format!("cannot read config file: {e}"),
    })?;
    let base_dir = path
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."));
    load_str(&text, path, &base_dir, |name| std::env::var(name).ok())
}

/// Parses config text. `file` is only used to name the source in errors.
pub fn load_str(
    text: &str,
    file: &Path,
    base_dir: &Path,
    env: impl Fn(&str) -> Option<String>,
) -> Result<Loaded, ConfigError> {
    let mut config: Config = parse_yaml(text, file, &env)?.unwrap_or_default();
    validate::check(&mut config, base_dir).map_err(|p| located(p, text, file))?;
    Ok(Loaded {
        config,
        base_dir: base_dir.to_path_buf(),
        file: file.to_path_buf(),
    })
}

/// `$ENV`-expanded YAML parsed as `T` (`None` for an empty text); errors located in `file`.
fn parse_yaml<T: serde::de::DeserializeOwned>(
    text: &str,
    file: &Path,
    env: &impl Fn(&str) -> Option<String>,
) -> Result<Option<T>, ConfigError> {
    let err = |line, column, key: String, message: String| ConfigError {
        file: file.to_path_buf(),
        line,
        column,
        key,
        message,
    };
    let expanded = env::expand(text, env).map_err(|u| {
        err(
            u.line,
            u.column,
            String::new(),
            format!("environment variable {} is not set", u.name),
        )
    })?;
    if expanded.trim().is_empty() {
        return Ok(None);
    }
    let de = serde_yaml_ng::Deserializer::from_str(&expanded);
    serde_path_to_error::deserialize(de).map(Some).map_err(|e| {
        let key = display_path(e.path());
        let inner = e.into_inner();
        let (line, column) = inner
            .location()
            .map(|l| (l.line(), l.column()))
            .unwrap_or((0, 0));
        err(line, column, key, strip_location(&inner.to_string()))
    })
}

/// Reads an `apiKeyAuth.keysFile`: a YAML list of keys (the shape of `apiKeyAuth.keys`),
/// `$ENV`-expanded and checked like the config's own keys.
pub fn load_api_keys(path: &Path) -> Result<Vec<ApiKey>, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
        file: path.to_path_buf(),
        line: 0,
        column: 0,
        key: String::new(),
        message: format!("cannot read keys file: {e}"),
    })?;
    let base = path.parent().unwrap_or(Path::new("."));
    let mut keys: Vec<ApiKey> =
        parse_yaml(&text, path, &|name| std::env::var(name).ok())?.unwrap_or_default();
    validate::check_api_keys(&mut keys, base).map_err(|p| located(p, &text, path))?;
    Ok(keys)
}

/// A validation problem as a config error, at the first place its needle (or fallback
/// needle) appears in `text`.
fn located(p: validate::Problem, text: &str, file: &Path) -> ConfigError {
    let (line, column) = p
        .needle
        .as_deref()
        .and_then(|n| locate(text, n))
        .or_else(|| p.fallback_needle.as_deref().and_then(|n| locate(text, n)))
        .unwrap_or((0, 0));
    ConfigError {
        file: file.to_path_buf(),
        line,
        column,
        key: p.key,
        message: p.message,
    }
}

/// The JSON Schema of the config file.
pub fn json_schema() -> serde_json::Value {
    serde_json::to_value(schemars::schema_for!(Config)).unwrap_or_default()
}

/// The config as JSON with every secret and credential header redacted.
pub fn redacted_dump(config: &Config) -> serde_json::Value {
    serde_json::to_value(config).unwrap_or_default()
}

fn display_path(path: &serde_path_to_error::Path) -> String {
    let s = path.to_string();
    if s == "." {
        String::new()
    } else {
        s
    }
}

/// serde_yaml prefixes the key path and appends " at line L column C"; both are reported
/// separately.
fn strip_location(msg: &str) -> String {
    let msg = match msg.rfind(" at line ") {
        Some(i) => &msg[..i],
        None => msg,
    };
    match msg.split_once(": ") {
        Some((path, rest)) if !path.contains(char::is_whitespace) => rest.to_string(),
        _ => msg.to_string(),
    }
}

/// First position of `needle` in `text`, 1-based.
fn locate(text: &str, needle: &str) -> Option<(usize, usize)> {
    let off = text.find(needle)?;
    let before = &text[..off];
    let line = before.matches('\n').count() + 1;
    let column = off - before.rfind('\n').map_or(0, |i| i + 1) + 1;
    Some((line, column))
}

mod validate;

#[cfg(test)]
mod tests;
