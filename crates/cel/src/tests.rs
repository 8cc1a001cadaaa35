use super::*;
use serde_json::json;

fn llm_bindings() -> Bindings {
    let mut b = Bindings::default();
    b.set(
        Var::Llm,
        json_to_value(&json!({
            "provider": "openai",
            "prompt": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": "Hello!"}
            ],
            "completion": ["Hi there."],
            "params": {"temperature": 0.2, "max_tokens": 64},
            "inputTokens": 12
        })),
    );
    b
}

fn eval(src: &str, b: &Bindings) -> serde_json::Value {
    let e = Expression::compile(src).unwrap_or_else(|e| panic!("{src}: {e}"));
    value_to_json(&e.eval(b).unwrap_or_else(|e| panic!("{src}: {e}")))
}

fn fields(name: &str, src: &str, b: &Bindings) -> Vec<(String, serde_json::Value)> {
    let e = Expression::compile(src).unwrap();
    let mut out = Vec::new();
    expand_field(name, e.eval(b).unwrap(), &mut out);
    out.into_iter()
        .map(|(k, v)| (k.into_owned(), v.to_json()))
        .collect()
}

#[test]
fn the_seeds_fields_flatten_into_dotted_keys() {
    let b = llm_bindings();
    let out = fields(
        "llm.input_messages",
        r#"flattenRecursive(llm.prompt.map(c, {"message": c}))"#,
        &b,
    );
    assert_eq!(
        out,
        vec![
            (
                "llm.input_messages.0.message.content".into(),
                json!("Be brief.")
            ),
            ("llm.input_messages.0.message.role".into(), json!("system")),
            (
                "llm.input_messages.1.message.content".into(),
                json!("Hello!")
            ),
            ("llm.input_messages.1.message.role".into(), json!("user")),
        ]
    );
    let out = fields(
        "llm.output_messages",
        r#"flattenRecursive(llm.completion.map(c, {"role":"assistant", "content": c}))"#,
        &b,
    );
    assert_eq!(
        out,
        vec![
            ("llm.output_messages.0.content".into(), json!("Hi there.")),
            ("llm.output_messages.0.role".into(), json!("assistant")),
        ]
    );
    assert_eq!(
        fields("gen_ai.prompt", "flattenRecursive(llm.prompt)", &b).len(),
        4
    );
    assert_eq!(eval("llm.params.temperature", &b), json!(0.2));
    assert_eq!(eval("llm.provider", &b), json!("openai"));
    assert_eq!(eval(r#""openai.chat""#, &b), json!("openai.chat"));
}

#[test]
fn flatten_is_one_level_and_recursive_is_all() {
    let mut b = Bindings::default();
    b.set(
        Var::Mcp,
        json_to_value(&json!({"a": {"b": {"c": 1}}, "l": [1, 2]})),
    );
    assert_eq!(
        eval("flatten(mcp)", &b),
        json!({"a": {"b": {"c": 1}}, "l": [1, 2]})
    );
    let out = fields("x", "flatten(mcp)", &b);
    assert_eq!(out[0], ("x.a".into(), json!({"b": {"c": 1}})));
    let out = fields("x", "flattenRecursive(mcp)", &b);
    assert_eq!(
        out,
        vec![
            ("x.a.b.c".into(), json!(1)),
            ("x.l.0".into(), json!(1)),
            ("x.l.1".into(), json!(2)),
        ]
    );
}

#[test]
fn string_fields_keep_their_cel_string_and_the_rest_become_json() {
    let b = llm_bindings();
    let field = |src: &str| {
        let mut out = Vec::new();
        expand_field(
            "f",
            Expression::compile(src).unwrap().eval(&b).unwrap(),
            &mut out,
        );
        assert_eq!(out.len(), 1, "{src}");
        out.pop().unwrap().1
    };
    assert!(matches!(field("llm.provider"), FieldValue::Str(s) if s.as_str() == "openai"));
    assert_eq!(field("-3"), FieldValue::Json(json!(-3)));
    assert_eq!(field("1.5"), FieldValue::Json(json!(1.5)));
    assert_eq!(field("true"), FieldValue::Json(json!(true)));
    // A non-finite number has no JSON form: null, which a span leaves out.
    assert!(field("double('NaN')").is_null());
    assert!(field("null").is_null());
    assert_eq!(field("[1, 'a']"), FieldValue::Json(json!([1, "a"])));
    assert_eq!(field("{'k': true}").to_json(), json!({"k": true}));
}

#[test]
fn a_missing_variable_is_an_empty_map_and_default_guards_missing_fields() {
    let b = Bindings::default();
    assert_eq!(eval("has(llm.inputTokens)", &b), json!(false));
    assert_eq!(eval("default(llm.inputTokens, 0)", &b), json!(0));
    assert_eq!(
        eval("default(llm.usage.deep.field, 'none')", &b),
        json!("none")
    );
    let b = llm_bindings();
    assert_eq!(eval("default(llm.inputTokens, 0)", &b), json!(12));
    assert_eq!(eval("default(llm.params.temperature, 1.0)", &b), json!(0.2));
    let mut b = Bindings::default();
    b.set(Var::Jwt, json_to_value(&json!({"sub": null})));
    assert_eq!(
        eval("default(jwt.sub, 'anonymous')", &b),
        json!("anonymous")
    );
    // Without `default`, a missing key is an error, not a silent null.
    let e = Expression::compile("llm.inputTokens").unwrap();
    assert!(e.eval(&Bindings::default()).is_err());
}

#[test]
fn json_to_json_coalesce_regex_uuid_base64() {
    let b = Bindings::default();
    assert_eq!(
        eval(r#"json('{"model": "m", "n": [1, 2]}').n[1]"#, &b),
        json!(2)
    );
    assert_eq!(
        eval(r#"toJson({"a": [1, true, null]})"#, &b),
        json!(r#"{"a":[1,true,null]}"#)
    );
    assert_eq!(eval("coalesce(null, null, 'x', 'y')", &b), json!("x"));
    assert_eq!(eval("coalesce(null)", &b), json!(null));
    assert_eq!(
        eval(
            r#"regexReplace("sk-12345 and sk-999", "sk-[0-9]+", "sk-***")"#,
            &b
        ),
        json!("sk-*** and sk-***")
    );
    assert_eq!(
        eval(r#"regexReplace("a=1", "(\\w)=(\\d)", "$2=$1")"#, &b),
        json!("1=a")
    );
    let id = eval("uuid()", &b);
    let id = id.as_str().unwrap();
    assert_eq!(id.len(), 36);
    assert_eq!(&id[14..15], "4", "version 4: {id}");
    assert_ne!(eval("uuid()", &b), eval("uuid()", &b));
    assert_eq!(eval("base64.encode(b'hello')", &b), json!("aGVsbG8="));
    assert_eq!(
        eval("string(base64.decode('aGVsbG8='))", &b),
        json!("hello")
    );
    assert_eq!(eval("'Hello'.lowerAscii()", &b), json!("hello"));
    let bad = Expression::compile("json('{not json')").unwrap();
    assert!(bad.eval(&b).unwrap_err().contains("json"));
}

#[test]
fn request_headers_are_lower_case_joined_and_redacted() {
    let mut h = http::HeaderMap::new();
    h.insert("Authorization", "Bearer sk-secret".parse().unwrap());
    h.insert("x-api-key", "sk-secret-2".parse().unwrap());
    h.append("X-Tag", "a".parse().unwrap());
    h.append("X-Tag", "b".parse().unwrap());
    let mut req = MapBuilder::new();
    req.insert("headers", headers_value(&h));
    let mut b = Bindings::default();
    b.set(Var::Request, req.build());
    assert_eq!(eval("request.headers['x-tag']", &b), json!("a, b"));
    let all = eval("request.headers", &b).to_string();
    assert!(!all.contains("sk-secret"), "{all}");
    assert_eq!(
        eval("request.headers.authorization", &b),
        json!("<redacted>")
    );
}

#[test]
fn uses_name_the_variables_and_bodies_read() {
    let u = |s: &str| Expression::compile(s).unwrap().uses();
    assert!(u("request.path").var(Var::Request));
    assert!(!u("request.path").request_body());
    assert!(u("request.body").request_body());
    assert!(u("json(request.body).model").request_body());
    assert!(u("request['body']").request_body());
    assert!(
        u("toJson(request)").request_body(),
        "the whole request includes its body"
    );
    assert!(!u("request.bodyless").request_body());
    assert!(!u("request.headers").response_body());
    assert!(u("request.headers['x']").request_headers());
    assert!(!u("request.path").request_headers());
    assert!(u("toJson(response)").response_headers());
    assert!(!u("response.code").response_headers());
    assert!(u("response.body").response_body());
    assert!(!u("response.code").response_body());
    assert!(!u("llm.provider").var(Var::Request));
    assert!(u("llm.provider").var(Var::Llm));
    assert!(!u("llm.provider").llm_text());
    assert!(u("flattenRecursive(llm.prompt)").llm_text());
    assert!(u("llm.params.temperature").llm_text());
    assert!(u("toJson(llm)").llm_text());
    let both = u("request.path").union(u("llm.provider"));
    assert!(both.var(Var::Request) && both.var(Var::Llm) && !both.var(Var::Mcp));
}

#[test]
fn a_bad_expression_says_where() {
    let err = Expression::compile("request.path ==").unwrap_err();
    assert!(err.contains("1:"), "{err}");
    assert!(err.contains("request.path =="), "{err}");
    assert!(Expression::compile("flattenRecursive(llm.prompt.map(c, {\"message\": c})").is_err());
}

#[test]
fn one_scope_serves_several_expressions() {
    let b = llm_bindings();
    let a = Expression::compile("llm.provider").unwrap();
    let c = Expression::compile("size(llm.prompt) == 2").unwrap();
    let scope = b.scope(a.uses().union(c.uses()));
    assert_eq!(value_to_json(&a.eval_in(&scope).unwrap()), json!("openai"));
    assert!(c.matches(&scope));
    let not_bool = Expression::compile("llm.provider").unwrap();
    assert!(!not_bool.matches(&scope), "only `true` matches");
}
