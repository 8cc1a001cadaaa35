//! `$VAR` / `${VAR}` expansion over the raw config text, before YAML parsing.
//!
//! Expansion is textual so that it works in every scalar position, but it is strict about what
//! counts as a reference: `${NAME}` always, `$NAME` only when a letter or `_` follows the `$`.
//! A `$` followed by anything else (a regex anchor such as `^/v1$`) is left alone, and `$$`
//! is an escaped `$`. An unset variable is an error naming where it was referenced.

/// A reference to an unset variable, 1-based position in the original text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnsetVar {
    pub name: String,
    pub line: usize,
    pub column: usize,
}

pub fn expand(text: &str, lookup: impl Fn(&str) -> Option<String>) -> Result<String, UnsetVar> {
    if !text.contains('$') {
        return Ok(text.to_string());
    }
    let mut out = String::with_capacity(text.len());
    for (line_idx, line) in text.split_inclusive('\n').enumerate() {
        // YAML comments may mention `$VARS` freely; only expand before a comment marker.
        let code_end = comment_start(line).unwrap_or(line.len());
        let (code, comment) = line.split_at(code_end);
        let bytes = code.as_bytes();
        let mut i = 0;
        while i < bytes.len() {
            if bytes[i] != b'$' {
                let next = code[i..].find('$').map_or(code.len(), |off| i + off);
                out.push_str(&code[i..next]);
                i = next;
                continue;
            }
            let rest = &code[i + 1..];
            if rest.starts_with('$') {
                out.push('$');
                i += 2;
            } else if let Some(body) = rest.strip_prefix('{') {
                let Some(close) = body.find('}') else {
                    out.push('$');
                    i += 1;
                    continue;
                };
                let name = &body[..close];
                out.push_str(&resolve(name, &lookup, line_idx, i)?);
                i += 3 + close;
            } else if rest.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_') {
                let len = rest
                    .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .unwrap_or(rest.len());
                out.push_str(&resolve(&rest[..len], &lookup, line_idx, i)?);
                i += 1 + len;
            } else {
                out.push('$');
                i += 1;
            }
        }
        out.push_str(comment);
    }
    Ok(out)
}

fn resolve(
    name: &str,
    lookup: &impl Fn(&str) -> Option<String>,
    line_idx: usize,
    byte_col: usize,
) -> Result<String, UnsetVar> {
    lookup(name).ok_or_else(|| UnsetVar {
        name: name.to_string(),
        line: line_idx + 1,
        column: byte_col + 1,
    })
}

/// Byte offset of a YAML comment (`#` at line start or after whitespace, outside quotes).
fn comment_start(line: &str) -> Option<usize> {
    let mut in_single = false;
    let mut in_double = false;
    let mut prev_ws = true;
    for (i, c) in line.char_indices() {
        match c {
            '\'' if !in_double => in_single = !in_single,
            '"' if !in_single => in_double = !in_double,
            '#' if !in_single && !in_double && prev_ws => return Some(i),
            _ => {}
        }
        prev_ws = c.is_whitespace();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "KEY" => Some("sk-123".into()),
            "HOST" => Some("127.0.0.1".into()),
            _ => None,
        }
    }

    #[test]
    fn expands_both_forms() {
        let out = expand("a: $KEY\nb: ${HOST}:80\nc: x${KEY}y\n", env).unwrap();
        assert_eq!(out, "a: sk-123\nb: 127.0.0.1:80\nc: xsk-123y\n");
    }

    #[test]
    fn leaves_regex_anchors_and_escapes() {
        let out = expand("r: '^/v1$'\ns: a$$b\nt: $1\n", env).unwrap();
        assert_eq!(out, "r: '^/v1$'\ns: a$b\nt: $1\n");
    }

    #[test]
    fn ignores_comments() {
        let out = expand("a: 1 # uses $UNSET\n# $ALSO_UNSET\nb: '#$KEY'\n", env).unwrap();
        assert_eq!(out, "a: 1 # uses $UNSET\n# $ALSO_UNSET\nb: '#sk-123'\n");
    }

    #[test]
    fn unset_variable_names_position() {
        let err = expand("a: 1\nkey: \"${NOPE}\"\n", env).unwrap_err();
        assert_eq!(
            err,
            UnsetVar {
                name: "NOPE".into(),
                line: 2,
                column: 7
            }
        );
    }
}
