use super::*;
use std::sync::Arc;

fn record() -> RequestRecord {
    let mut r = RequestRecord::new(
        http::Method::POST,
        "/v1/chat/completions?x=1".parse().unwrap(),
        http::Version::HTTP_11,
        "10.1.2.3:5555".parse().unwrap(),
        Arc::from("3100"),
    );
    r.status = 200;
    r.route = Some(Arc::from("chat"));
    r.backend = Some(Arc::from("qwen-plus"));
    r.request_id = Some(http::HeaderValue::from_static("req-1"));
    r.llm = Some(LlmRecord {
        provider: "openai",
        operation: "chat",
        request_model: Some("any-model-name".into()),
        response_model: Some("qwen-plus".into()),
        input_tokens: Some(10),
        output_tokens: Some(20),
        prompt: vec![("user".into(), "Hello!".into())],
        completion: vec!["Hi!".into()],
        params: [("temperature".to_string(), serde_json::json!(0.5))]
            .into_iter()
            .collect(),
        ..Default::default()
    });
    r
}

#[test]
fn traceparent_parsing_follows_w3c() {
    let ok = b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let (t, s, sampled) = TraceContext::parse_traceparent(ok).unwrap();
    assert_eq!(t[0], 0x4b);
    assert_eq!(s[7], 0xb7);
    assert!(sampled);
    let unsampled = b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00";
    assert!(!TraceContext::parse_traceparent(unsampled).unwrap().2);
    for bad in [
        &b"00-00000000000000000000000000000000-00f067aa0ba902b7-01"[..],
        b"00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
        b"ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        b"00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
        b"00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
        b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
        b"garbage",
        b"",
    ] {
        assert!(
            TraceContext::parse_traceparent(bad).is_none(),
            "{:?}",
            String::from_utf8_lossy(bad)
        );
    }
    // A later version may carry more fields.
    assert!(TraceContext::parse_traceparent(
        b"01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-later"
    )
    .is_some());
}

#[tokio::test]
async fn sampling_honours_the_caller_and_the_ratio() {
    let cache = ExporterCache::default();
    let cfg =
        |random: Option<config::Sampling>, client: Option<config::Sampling>| config::Tracing {
            otlp_endpoint: "http://127.0.0.1:9".into(),
            otlp_protocol: config::OtlpProtocol::Grpc,
            headers: Default::default(),
            random_sampling: random,
            client_sampling: client,
            fields: None,
        };
    let sampled =
        http::HeaderValue::from_static("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01");
    let unsampled =
        http::HeaderValue::from_static("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00");
    // Defaults: follow the caller, never sample on our own.
    let t = Tracer::compile(&cfg(None, None), &cache).unwrap();
    let ctx = t.start(Some(&sampled));
    assert!(ctx.sampled);
    assert_eq!(ctx.trace_id_hex(), "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_eq!(ctx.parent_span_id.map(|p| p[7]), Some(0xb7));
    assert_ne!(ctx.span_id_hex(), "00f067aa0ba902b7", "a span of our own");
    assert!(!t.start(Some(&unsampled)).sampled);
    assert!(!t.start(None).sampled);
    // randomSampling: true samples new traces; clientSampling: false ignores the caller.
    let t = Tracer::compile(
        &cfg(
            Some(config::Sampling::Enabled(true)),
            Some(config::Sampling::Enabled(false)),
        ),
        &cache,
    )
    .unwrap();
    assert!(t.start(None).sampled);
    assert!(t.start(Some(&unsampled)).sampled);
    let t = Tracer::compile(&cfg(Some(config::Sampling::Ratio(0.0)), None), &cache).unwrap();
    assert!(!t.start(None).sampled);
    let half = Tracer::compile(&cfg(Some(config::Sampling::Ratio(0.5)), None), &cache).unwrap();
    let n = (0..2000).filter(|_| half.start(None).sampled).count();
    assert!((800..1200).contains(&n), "{n} of 2000 at 0.5");
    // The upstream sees this trace with the gateway's span as the parent.
    let ctx = Tracer::compile(&cfg(None, None), &cache)
        .unwrap()
        .start(Some(&sampled));
    let tp = ctx.traceparent();
    let (trace, parent, flag) = TraceContext::parse_traceparent(tp.as_bytes()).unwrap();
    assert_eq!((trace, parent, flag), (ctx.trace_id, ctx.span_id, true));
}

#[test]
fn default_fields_carry_http_and_gen_ai() {
    let rec = record();
    let mut f = std::collections::HashMap::new();
    fields::default_fields(
        &rec,
        std::time::Duration::from_micros(1500),
        &mut |k, v: fields::Field<'_>| {
            assert!(
                f.insert(k, serde_json::to_value(v).unwrap()).is_none(),
                "{k} twice"
            );
        },
    );
    assert_eq!(f["method"], "POST");
    assert_eq!(f["path"], "/v1/chat/completions");
    assert_eq!(f["status"], 200);
    assert_eq!(f["route"], "chat");
    assert_eq!(f["src"], "10.1.2.3:5555");
    assert_eq!(f["gen_ai.provider.name"], "openai");
    assert_eq!(f["gen_ai.request.model"], "any-model-name");
    assert_eq!(f["gen_ai.usage.output_tokens"], 20);
    assert!(f["time"].as_str().unwrap().ends_with('Z'));
    assert_eq!(f["duration_ms"], 1.5);
    assert!(!f.contains_key("trace_id"), "no trace context, no trace id");
    let mut a = std::collections::HashMap::new();
    fields::span_attributes(&rec, &mut |k, v: fields::Field<'_>| {
        assert!(
            a.insert(k, serde_json::to_value(v).unwrap()).is_none(),
            "{k} twice"
        );
    });
    assert_eq!(a["gen_ai.request.temperature"], 0.5);
    assert_eq!(a["http.response.status_code"], 200);
    assert_eq!(a["url.query"], "x=1");
}

#[test]
fn cel_sees_the_record() {
    let rec = record();
    let e = cel::Expression::compile(
        r#"llm.provider + ":" + string(llm.totalTokens) + ":" + request.method + ":" + string(response.code)"#,
    )
    .unwrap();
    let v = e.eval(&rec.bindings(e.uses())).unwrap();
    assert_eq!(cel::value_to_json(&v), "openai:30:POST:200");
    let e = cel::Expression::compile("llm.prompt[0].content").unwrap();
    assert_eq!(
        cel::value_to_json(&e.eval(&rec.bindings(e.uses())).unwrap()),
        "Hello!"
    );
}

#[test]
fn metrics_have_their_conventional_names_and_cap_model_labels() {
    let m = Metrics::global();
    observe_metrics(&record(), std::time::Duration::from_millis(3));
    let text = m.encode();
    for name in [
        "switchyard_requests_total{",
        "switchyard_request_duration_seconds_bucket{",
        "gen_ai_client_token_usage_token_bucket{",
        "gen_ai_client_operation_duration_seconds_bucket{",
    ] {
        assert!(text.contains(name), "{name} missing in:\n{text}");
    }
    assert!(text.contains(r#"gen_ai_token_type="input""#));
    assert!(text.contains(r#"gen_ai_request_model="any-model-name""#));
    for i in 0..(metrics::MAX_MODELS + 10) {
        m.model_label(Some(&format!("flood-{i}")));
    }
    assert_eq!(m.model_label(Some("flood-never-seen")), "other");
    assert_eq!(m.model_label(Some("any-model-name")), "any-model-name");
}

#[test]
fn log_times_match_humantime() {
    use std::time::{Duration, UNIX_EPOCH};
    // Within one second (the cached part), across seconds, days and years, in any order.
    for ms in [
        1_733_450_000_000u64,
        1_733_450_000_001,
        1_733_450_000_999,
        1_733_450_001_000,
        1_733_450_000_500,
        0,
        86_399_999,
        1_767_225_599_999,
        1_767_225_600_000,
    ] {
        let t = UNIX_EPOCH + Duration::from_millis(ms) + Duration::from_micros(700);
        assert_eq!(
            fields::Inline::rfc3339_millis(t).as_str(),
            humantime::format_rfc3339_millis(t).to_string(),
            "{ms}"
        );
    }
}

#[test]
fn inline_text_holds_any_socket_address_and_cuts_on_a_character() {
    use fields::Inline;
    let widest: std::net::SocketAddr = std::net::SocketAddrV6::new(
        "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff".parse().unwrap(),
        65535,
        0,
        u32::MAX,
    )
    .into();
    assert_eq!(Inline::display(widest).as_str(), widest.to_string());
    for addr in [
        "0.0.0.0:0",
        "127.0.0.1:8080",
        "10.1.20.255:65535",
        "[::1]:443",
        "[fe80::1%7]:9",
    ] {
        let addr: std::net::SocketAddr = addr.parse().unwrap();
        assert_eq!(Inline::socket_addr(addr).as_str(), addr.to_string());
        assert_eq!(Inline::ip(addr.ip()).as_str(), addr.ip().to_string());
    }
    assert_eq!(Inline::socket_addr(widest).as_str(), widest.to_string());
    assert_eq!(Inline::hex(&[0x00, 0xab, 0x7f]).as_str(), "00ab7f");
    // Too long: cut at the capacity, never inside a character.
    let long = "é".repeat(Inline::CAPACITY);
    let cut = Inline::display(&long);
    assert_eq!(cut.as_str(), "é".repeat(Inline::CAPACITY / 2));
    let odd = format!("x{long}");
    assert_eq!(
        Inline::display(&odd).as_str(),
        format!("x{}", "é".repeat(Inline::CAPACITY / 2 - 1))
    );
}

#[test]
fn fields_read_from_the_record_match_cel() {
    let mut with_llm = record();
    with_llm.host = Some("gw.example".into());
    with_llm.backend_kind = Some("ai");
    let mut plain = record();
    plain.llm = None;
    let paths = [
        "llm.provider",
        "llm.operation",
        "llm.streaming",
        "llm.requestModel",
        "llm.responseModel",
        "llm.inputTokens",
        "llm.outputTokens",
        "llm.cachedInputTokens",
        "llm.reasoningTokens",
        "llm.totalTokens",
        "request.method",
        "request.path",
        "request.host",
        "response.code",
        "backend.name",
        "backend.type",
        "backend.address",
    ];
    for rec in [&with_llm, &plain] {
        for src in paths {
            let e = cel::Expression::compile(src).unwrap();
            let (var, path) = e.member_path().expect(src);
            let full = e.eval(&rec.bindings(e.uses())).ok();
            let fast = match rec.member(var, path) {
                record::Member::Found(v) => Some(v.to_value()),
                record::Member::Missing => None,
                record::Member::Unknown => panic!("{src}: not read from the record"),
            };
            assert_eq!(
                fast.as_ref().map(cel::value_to_json),
                full.as_ref().map(cel::value_to_json),
                "{src} (llm: {})",
                rec.llm.is_some()
            );
        }
    }
    assert!(with_llm.llm.is_some() && with_llm.backend.is_some());
    // Not plain selections: left to CEL.
    for src in [
        "has(llm.provider)",
        "llm",
        "llm.provider + 'x'",
        "request.headers['a']",
    ] {
        assert!(
            cel::Expression::compile(src)
                .unwrap()
                .member_path()
                .is_none(),
            "{src}"
        );
    }
    let e = cel::Expression::compile("request.headers.host").unwrap();
    let (var, path) = e.member_path().unwrap();
    assert!(matches!(
        with_llm.member(var, path),
        record::Member::Unknown
    ));
}

#[test]
fn absurd_token_counts_saturate_instead_of_overflowing() {
    let mut rec = record();
    let llm = rec.llm.as_mut().unwrap();
    llm.input_tokens = Some(u64::MAX);
    llm.output_tokens = Some(5);
    for src in ["llm.totalTokens", "llm.inputTokens"] {
        let e = cel::Expression::compile(src).unwrap();
        let (var, path) = e.member_path().unwrap();
        let record::Member::Found(fast) = rec.member(var, path) else {
            panic!("{src}: not found");
        };
        assert_eq!(fast.to_value(), cel::Value::Int(i64::MAX), "{src}");
        assert_eq!(
            e.eval(&rec.bindings(e.uses())).unwrap(),
            cel::Value::Int(i64::MAX),
            "{src}"
        );
    }
}

#[test]
fn a_constant_filter_still_decides() {
    let rec = record();
    let e = cel::Expression::compile("1 == 2").unwrap();
    let t = cel::Expression::compile("true").unwrap();
    let mut evals = Evaluations::new(&rec, e.uses());
    assert!(!evals.matches(&e));
    assert!(evals.matches(&t));
}
