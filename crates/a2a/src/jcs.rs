//! The JSON Canonicalization Scheme (RFC 8785), which A2A v1.0 agent-card signatures cover:
//!
//! - object members sorted by their names as UTF-16 code units (§3.2.3), recursively;
//! - no whitespace;
//! - strings with only `"`, `\` and the C0 controls escaped (the short forms `\b \f \n \r \t`,
//!   else `\u00xx` in lowercase hex), everything else as literal UTF-8 (§3.2.2.2);
//! - numbers as IEEE 754 doubles written by ECMAScript's `Number.prototype.toString`
//!   (§3.2.2.3): shortest round-trip digits, plain notation for exponents in [-6, 21),
//!   `1e+21` style beyond; `-0` is `0`; NaN and infinities have no canonical form.
//!
//! Integers that serde_json keeps as `u64`/`i64` are canonicalized through `f64`, as RFC 8785
//! prescribes (JSON numbers are doubles to an I-JSON consumer): past 2^53 they may change.

use serde_json::Value;

/// Objects and arrays nested deeper than this are refused (a card is never this deep; a
/// hostile one must not exhaust the stack).
pub const MAX_DEPTH: usize = 128;

/// Why a value has no canonical form.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum JcsError {
    /// NaN or an infinity (serde_json does not produce them from text, but a `Value` built
    /// in code may hold one through `f64`).
    NotFinite,
    TooDeep,
}

impl std::fmt::Display for JcsError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            JcsError::NotFinite => f.write_str("a number is not finite"),
            JcsError::TooDeep => write!(f, "nesting deeper than {MAX_DEPTH}"),
        }
    }
}

impl std::error::Error for JcsError {}

/// The canonical form of `value`, as UTF-8 text.
pub fn canonicalize(value: &Value) -> Result<String, JcsError> {
    let mut out = String::with_capacity(256);
    write_value(&mut out, value, 0)?;
    Ok(out)
}

fn write_value(out: &mut String, value: &Value, depth: usize) -> Result<(), JcsError> {
    match value {
        Value::Null => out.push_str("null"),
        Value::Bool(true) => out.push_str("true"),
        Value::Bool(false) => out.push_str("false"),
        Value::Number(n) => {
            let f = n.as_f64().ok_or(JcsError::NotFinite)?;
            write_number(out, f)?;
        }
        Value::String(s) => write_string(out, s),
        Value::Array(items) => {
            if depth >= MAX_DEPTH {
                return Err(JcsError::TooDeep);
            }
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_value(out, item, depth + 1)?;
            }
            out.push(']');
        }
        Value::Object(map) => {
            if depth >= MAX_DEPTH {
                return Err(JcsError::TooDeep);
            }
            let mut members: Vec<(&String, &Value)> = map.iter().collect();
            members.sort_by(|a, b| a.0.encode_utf16().cmp(b.0.encode_utf16()));
            out.push('{');
            for (i, (k, v)) in members.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_string(out, k);
                out.push(':');
                write_value(out, v, depth + 1)?;
            }
            out.push('}');
        }
    }
    Ok(())
}

fn write_string(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                out.push_str(&format!("\\u{:04x}", c as u32));
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// ECMAScript `Number::toString(x)` for a finite double (ECMA-262 7.1.12.1).
fn write_number(out: &mut String, x: f64) -> Result<(), JcsError> {
    if !x.is_finite() {
        return Err(JcsError::NotFinite);
    }
    if x == 0.0 {
        // Both zeros.
        out.push('0');
        return Ok(());
    }
    if x < 0.0 {
        out.push('-');
    }
    // Rust's `{:e}` writes the shortest digits that round-trip: `d[.ddd]e<exp>`.
    let (digits, exp) = shortest_digits(x.abs());
    let k = digits.len() as i32;
    // The decimal point sits after `n` digits: x = 0.d1d2...dk × 10^n.
    let n = exp + 1;
    if k <= n && n <= 21 {
        out.push_str(&digits);
        out.extend(std::iter::repeat_n('0', (n - k) as usize));
    } else if 0 < n && n <= 21 {
        out.push_str(&digits[..n as usize]);
        out.push('.');
        out.push_str(&digits[n as usize..]);
    } else if -6 < n && n <= 0 {
        out.push_str("0.");
        out.extend(std::iter::repeat_n('0', (-n) as usize));
        out.push_str(&digits);
    } else {
        out.push_str(&digits[..1]);
        if k > 1 {
            out.push('.');
            out.push_str(&digits[1..]);
        }
        out.push('e');
        out.push(if n > 0 { '+' } else { '-' });
        out.push_str(&(n - 1).abs().to_string());
    }
    Ok(())
}

/// The shortest decimal digits that read back as `x` (> 0), and the exponent of the first
/// one; among several of that length, the one closest to `x` (as ECMAScript requires; Rust's
/// shortest form does not always pick it).
fn shortest_digits(x: f64) -> (String, i32) {
    let split = |sci: &str| -> (String, i32) {
        let (mantissa, exp) = sci.split_once('e').unwrap_or((sci, "0"));
        let digits: String = mantissa.chars().filter(char::is_ascii_digit).collect();
        (digits, exp.parse().unwrap_or(0))
    };
    let (digits, exp) = split(&format!("{x:e}"));
    if digits.len() > 1 {
        // The correctly rounded value with as many digits: the closest candidate.
        let closest = format!("{:.*e}", digits.len() - 1, x);
        if closest.parse::<f64>() == Ok(x) {
            return split(&closest);
        }
    }
    (digits, exp)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn num(bits: u64) -> String {
        let mut out = String::new();
        write_number(&mut out, f64::from_bits(bits))
            .map(|_| out)
            .unwrap()
    }

    /// RFC 8785 Appendix B: IEEE 754 doubles and their canonical text.
    #[test]
    fn rfc8785_appendix_b_numbers() {
        let cases: &[(u64, &str)] = &[
            (0x0000000000000000, "0"),
            (0x8000000000000000, "0"),
            (0x0000000000000001, "5e-324"),
            (0x8000000000000001, "-5e-324"),
            (0x7fefffffffffffff, "1.7976931348623157e+308"),
            (0xffefffffffffffff, "-1.7976931348623157e+308"),
            (0x4340000000000000, "9007199254740992"),
            (0xc340000000000000, "-9007199254740992"),
            (0x4430000000000000, "295147905179352830000"),
            (0x44b52d02c7e14af5, "9.999999999999997e+22"),
            (0x44b52d02c7e14af6, "1e+23"),
            (0x44b52d02c7e14af7, "1.0000000000000001e+23"),
            (0x444b1ae4d6e2ef4e, "999999999999999700000"),
            (0x444b1ae4d6e2ef4f, "999999999999999900000"),
            (0x444b1ae4d6e2ef50, "1e+21"),
            (0x3eb0c6f7a0b5ed8c, "9.999999999999997e-7"),
            (0x3eb0c6f7a0b5ed8d, "0.000001"),
            (0x41b3de4355555553, "333333333.3333332"),
            (0x41b3de4355555554, "333333333.33333325"),
            (0x41b3de4355555555, "333333333.3333333"),
            (0x41b3de4355555556, "333333333.3333334"),
            (0x41b3de4355555557, "333333333.33333343"),
            (0xbecbf647612f3696, "-0.0000033333333333333333"),
            (0x43143ff3c1cb0959, "1424953923781206.2"),
        ];
        for (bits, want) in cases {
            assert_eq!(num(*bits), *want, "{bits:#018x}");
        }
        let mut out = String::new();
        assert_eq!(
            write_number(&mut out, f64::NAN),
            Err(JcsError::NotFinite),
            "0x7fffffffffffffff"
        );
        assert_eq!(
            write_number(&mut out, f64::INFINITY),
            Err(JcsError::NotFinite)
        );
    }

    /// RFC 8785 §3.2.2: the sample input and its canonical form.
    #[test]
    fn rfc8785_sample() {
        let input = r#"{
            "numbers": [333333333.33333329, 1E30, 4.50, 2e-3, 0.000000000000000000000000001],
            "string": "\u20ac$\u000F\u000aA'\u0042\u0022\u005c\\\"\/",
            "literals": [null, true, false]
        }"#;
        let v: Value = serde_json::from_str(input).unwrap();
        assert_eq!(
            canonicalize(&v).unwrap(),
            "{\"literals\":[null,true,false],\"numbers\":[333333333.3333333,1e+30,4.5,0.002,1e-27],\"string\":\"€$\\u000f\\nA'B\\\"\\\\\\\\\\\"/\"}"
        );
    }

    /// RFC 8785 §3.2.3: members sorted by UTF-16 code units, not by code points or bytes.
    #[test]
    fn rfc8785_sorting() {
        let input = r#"{
            "\u20ac": "Euro Sign",
            "\r": "Carriage Return",
            "\ufb33": "Hebrew Letter Dalet With Dagesh",
            "1": "One",
            "\ud83d\ude00": "Emoji: Grinning Face",
            "\u0080": "Control",
            "\u00f6": "Latin Small Letter O With Diaeresis"
        }"#;
        let v: Value = serde_json::from_str(input).unwrap();
        let out = canonicalize(&v).unwrap();
        let order: Vec<&str> = [
            "Carriage Return",
            "One",
            "Control",
            "Latin Small Letter O With Diaeresis",
            "Euro Sign",
            "Emoji: Grinning Face",
            "Hebrew Letter Dalet With Dagesh",
        ]
        .to_vec();
        let mut at = 0;
        for name in order {
            let i = out[at..]
                .find(name)
                .unwrap_or_else(|| panic!("{name} out of order: {out}"));
            at += i;
        }
        assert!(
            out.starts_with("{\"\\r\":\"Carriage Return\",\"1\":\"One\""),
            "{out}"
        );
    }

    #[test]
    fn nesting_escapes_and_integers() {
        let v = json!({"b": [1, {"z": 1, "a": "\u{7f}\u{2028}<>"}], "a": {}, "c": []});
        assert_eq!(
            canonicalize(&v).unwrap(),
            "{\"a\":{},\"b\":[1,{\"a\":\"\u{7f}\u{2028}<>\",\"z\":1}],\"c\":[]}"
        );
        assert_eq!(canonicalize(&json!(-17)).unwrap(), "-17");
        assert_eq!(canonicalize(&json!(1.0)).unwrap(), "1");
        assert_eq!(
            canonicalize(&json!(u64::MAX)).unwrap(),
            "18446744073709552000"
        );
        let mut deep = json!(1);
        for _ in 0..MAX_DEPTH + 1 {
            deep = json!([deep]);
        }
        assert_eq!(canonicalize(&deep), Err(JcsError::TooDeep));
    }
}
