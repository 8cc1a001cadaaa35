use super::*;

const MS: Duration = Duration::from_millis(1);

fn req(id: u64, prompt: Vec<u32>, max_tokens: Option<u32>) -> Request {
    Request {
        id,
        prompt_tokens: prompt,
        max_tokens,
    }
}

/// Distinct tokens `base..base + n`.
fn toks(base: u32, n: usize) -> Vec<u32> {
    (base..base + n as u32).collect()
}

/// Steps until idle; every event with the time it happened. `now` ends at the last step's end.
fn run(engine: &mut Engine, now: &mut Duration) -> Vec<(Duration, Event)> {
    let mut out = Vec::new();
    let mut guard = 0;
    while engine.has_work() {
        let step = engine.step(*now);
        *now += step.duration;
        out.extend(step.events.into_iter().map(|e| (*now, e)));
        guard += 1;
        assert!(guard < 100_000, "engine does not make progress");
    }
    out
}

fn first_token(events: &[(Duration, Event)], id: u64) -> (Duration, usize) {
    events
        .iter()
        .find_map(|(t, e)| match e {
            Event::FirstToken {
                id: i,
                cached_tokens,
                ..
            } if *i == id => Some((*t, *cached_tokens)),
            _ => None,
        })
        .expect("first token")
}

fn token_times(events: &[(Duration, Event)], id: u64) -> Vec<Duration> {
    events
        .iter()
        .filter(|(_, e)| matches!(e, Event::FirstToken { .. } | Event::Token { .. }))
        .filter(|(_, e)| e.id() == id)
        .map(|(t, _)| *t)
        .collect()
}

fn mean_gap(times: &[Duration]) -> Duration {
    (times[times.len() - 1] - times[0]) / (times.len() as u32 - 1)
}

#[test]
fn shared_prefix_is_a_cache_hit_and_cuts_ttft() {
    let mut e = Engine::new(EngineConfig::default());
    let shared = toks(10_000, 1000);
    let mut now = Duration::ZERO;
    let mut p1 = shared.clone();
    p1.extend(toks(1, 24));
    e.add(now, req(1, p1, Some(4))).unwrap();
    let ev1 = run(&mut e, &mut now);
    let (t1, cached1) = first_token(&ev1, 1);
    assert_eq!(cached1, 0);
    let ttft1 = t1;

    let start = now;
    let mut p2 = shared.clone();
    p2.extend(toks(500, 24));
    e.add(now, req(2, p2, Some(4))).unwrap();
    let ev2 = run(&mut e, &mut now);
    let (t2, cached2) = first_token(&ev2, 2);
    let ttft2 = t2 - start;
    assert_eq!(cached2, 1000 / 16 * 16, "every full shared block is reused");
    assert!(ttft2 * 5 < ttft1, "cached TTFT {ttft2:?} vs cold {ttft1:?}");
    let s = e.stats();
    assert_eq!(s.prefix_cache_hits, cached2 as u64);
    assert_eq!(s.prefix_cache_queries, 2 * 1024);
    assert!(matches!(
        ev2.last().unwrap().1,
        Event::Finished {
            cached_tokens: 992,
            completion_tokens: 4,
            reason: FinishReason::Length,
            ..
        }
    ));
}

#[test]
fn unrelated_prompts_get_no_hits() {
    let mut e = Engine::new(EngineConfig::default());
    let mut now = Duration::ZERO;
    e.add(now, req(1, toks(1, 300), Some(2))).unwrap();
    run(&mut e, &mut now);
    e.add(now, req(2, toks(5_000, 300), Some(2))).unwrap();
    let ev = run(&mut e, &mut now);
    assert_eq!(first_token(&ev, 2).1, 0);
    assert_eq!(e.stats().prefix_cache_hits, 0);
    // Same tokens at another position are not a prefix either.
    let mut shifted = vec![7];
    shifted.extend(toks(1, 300));
    assert_eq!(e.probe_prefix(&shifted), 0);
    assert_eq!(e.probe_prefix(&toks(1, 300)), 288);
}

#[test]
fn lru_evicts_the_least_recently_used_prefix() {
    let cfg = EngineConfig {
        block_size: 4,
        num_blocks: 16,
        ..EngineConfig::default()
    };
    let mut e = Engine::new(cfg);
    let mut now = Duration::ZERO;
    let a = toks(100, 20);
    let b = toks(200, 20);
    e.add(now, req(1, a.clone(), Some(1))).unwrap();
    run(&mut e, &mut now);
    e.add(now, req(2, b.clone(), Some(1))).unwrap();
    run(&mut e, &mut now);
    assert_eq!(e.probe_prefix(&a), 16);
    assert_eq!(e.probe_prefix(&b), 16);
    // Use A again: it becomes the most recently used prefix.
    e.add(now, req(3, a.clone(), Some(1))).unwrap();
    let ev = run(&mut e, &mut now);
    assert_eq!(first_token(&ev, 3).1, 16);
    // C needs 11 of the 16 blocks: the never-used ones and B's go, A's stay.
    e.add(now, req(4, toks(300, 44), Some(1))).unwrap();
    run(&mut e, &mut now);
    assert_eq!(e.probe_prefix(&b), 0, "B was least recently used");
    assert_eq!(e.probe_prefix(&a), 16, "A was used recently");
    assert_eq!(e.stats().kv_usage, 0.0);
    assert!(e.stats().cached_blocks > 0);
}

#[test]
fn inter_token_latency_grows_with_batch_size() {
    let mut e = Engine::new(EngineConfig::default());
    let mut now = Duration::ZERO;
    e.add(now, req(1, toks(1, 32), Some(20))).unwrap();
    let solo = run(&mut e, &mut now);
    let itl1 = mean_gap(&token_times(&solo, 1));
    assert_eq!(itl1, Duration::from_micros(2250));

    for id in 10..42 {
        e.add(now, req(id, toks(id as u32 * 1000, 32), Some(20)))
            .unwrap();
    }
    let batch = run(&mut e, &mut now);
    let itl32 = mean_gap(&token_times(&batch, 20));
    assert_eq!(itl32, Duration::from_micros(2000 + 32 * 250));
    assert!(itl32 > itl1 * 3);
    assert!(e.stats().itl.mean() > 0.0);
}

#[test]
fn token_budget_chunks_a_long_prefill() {
    let cfg = EngineConfig {
        max_num_batched_tokens: 512,
        ..EngineConfig::default()
    };
    let mut e = Engine::new(cfg);
    e.add(Duration::ZERO, req(1, toks(1, 2000), Some(3)))
        .unwrap();
    let mut now = Duration::ZERO;
    let mut prefills = Vec::new();
    loop {
        let s = e.step(now);
        now += s.duration;
        prefills.push(s.prefill_tokens);
        assert!(s.prefill_tokens <= 512);
        if s.events
            .iter()
            .any(|e| matches!(e, Event::FirstToken { .. }))
        {
            break;
        }
        assert!(s.events.is_empty(), "no token before the prompt is done");
    }
    assert_eq!(prefills, [512, 512, 512, 464]);
    assert_eq!(now, 4 * 2 * MS + 2000 * Duration::from_micros(60));
    // A short request arriving behind it waits for budget, then shares the last chunk's step.
    let mut e = Engine::new(EngineConfig {
        max_num_batched_tokens: 512,
        ..EngineConfig::default()
    });
    e.add(Duration::ZERO, req(1, toks(1, 2000), Some(3)))
        .unwrap();
    e.add(Duration::ZERO, req(2, toks(9000, 10), Some(3)))
        .unwrap();
    let chunks: Vec<usize> = (0..4)
        .map(|_| e.step(Duration::ZERO).prefill_tokens)
        .collect();
    assert_eq!(chunks, [512, 512, 512, 464 + 10]);
    assert_eq!(e.num_running(), 2);
}

#[test]
fn max_num_seqs_caps_running() {
    let cfg = EngineConfig {
        max_num_seqs: 4,
        ..EngineConfig::default()
    };
    let mut e = Engine::new(cfg);
    for id in 0..10 {
        e.add(Duration::ZERO, req(id, toks(id as u32 * 100, 20), Some(5)))
            .unwrap();
    }
    let mut now = Duration::ZERO;
    let s = e.step(now);
    now += s.duration;
    assert_eq!((e.num_running(), e.num_waiting()), (4, 6));
    let mut max_running = 0;
    while e.has_work() {
        let s = e.step(now);
        now += s.duration;
        max_running = max_running.max(e.num_running());
        assert!(s.decode_seqs <= 4);
    }
    assert_eq!(max_running, 4);
    assert_eq!(e.stats().finished_length, 10);
}

#[test]
fn full_queue_rejects() {
    let cfg = EngineConfig {
        max_waiting: 3,
        max_num_seqs: 1,
        ..EngineConfig::default()
    };
    let mut e = Engine::new(cfg);
    for id in 0..3 {
        e.add(Duration::ZERO, req(id, toks(1, 8), None)).unwrap();
    }
    assert_eq!(
        e.add(Duration::ZERO, req(3, toks(1, 8), None)),
        Err(Rejected::QueueFull { limit: 3 })
    );
    e.step(Duration::ZERO); // admits one
    assert_eq!(e.num_waiting(), 2);
    e.add(MS, req(3, toks(1, 8), None)).unwrap();
    assert_eq!(
        e.add(MS, req(3, toks(1, 8), None)),
        Err(Rejected::DuplicateId(3))
    );
    assert!(matches!(
        e.add(MS, req(9, toks(1, 8000), Some(500))),
        Err(Rejected::TooLong { limit: 8192, .. })
    ));
    assert_eq!(e.add(MS, req(10, vec![], None)), Err(Rejected::EmptyPrompt));
}

fn scripted_trace(seed: u64) -> (Vec<(Duration, Event)>, Vec<u32>) {
    let mut e = Engine::with_seed(EngineConfig::default(), seed);
    let mut now = Duration::ZERO;
    let mut trace = Vec::new();
    for id in 0..20u64 {
        let prompt = toks((id % 3) as u32 * 10_000, 40 + (id as usize * 7) % 50);
        e.add(now, req(id, prompt, None)).unwrap();
        for _ in 0..3 {
            let s = e.step(now);
            now += s.duration;
            trace.extend(s.events.into_iter().map(|ev| (now, ev)));
        }
    }
    trace.extend(run(&mut e, &mut now));
    let lengths = trace
        .iter()
        .filter_map(|(_, e)| match e {
            Event::Finished {
                completion_tokens, ..
            } => Some(*completion_tokens),
            _ => None,
        })
        .collect();
    (trace, lengths)
}

#[test]
fn deterministic_for_a_seed() {
    let (a, la) = scripted_trace(42);
    let (b, lb) = scripted_trace(42);
    assert_eq!(a, b);
    assert_eq!(la, lb);
    assert_eq!(la.len(), 20);
    assert!(la.iter().all(|l| (16..64).contains(l)));
    let (_, lc) = scripted_trace(43);
    assert_ne!(la, lc, "another seed draws other lengths");
}

#[test]
fn kv_usage_returns_to_zero_and_preemption_recovers() {
    // 40 blocks of 16 = 640 tokens; eight requests that need ~7 blocks each at the end.
    let cfg = EngineConfig {
        num_blocks: 40,
        ..EngineConfig::default()
    };
    let mut e = Engine::new(cfg);
    for id in 0..8u64 {
        e.add(
            Duration::ZERO,
            req(id, toks(id as u32 * 1000, 40), Some(60)),
        )
        .unwrap();
    }
    let mut now = Duration::ZERO;
    let mut peak: f64 = 0.0;
    let mut steps = 0;
    while e.has_work() {
        let s = e.step(now);
        now += s.duration;
        let st = e.stats();
        assert!(st.used_blocks <= 40);
        peak = peak.max(st.kv_usage);
        steps += 1;
        assert!(steps < 10_000);
    }
    let st = e.stats();
    assert!(peak > 0.9, "peak usage {peak}");
    assert!(st.preemptions > 0, "the cache was too small for all eight");
    assert_eq!(st.finished_length, 8);
    assert_eq!(st.generation_tokens, 8 * 60);
    assert_eq!(st.kv_usage, 0.0);
    assert_eq!(st.used_blocks, 0);
    assert_eq!((st.running, st.waiting), (0, 0));
    assert_eq!(st.ttft.count, 8);
    assert_eq!(st.e2e.count, 8);
    assert_eq!(st.itl.count, 8 * 59);
}

#[test]
fn abort_releases_blocks() {
    let mut e = Engine::new(EngineConfig::default());
    e.add(Duration::ZERO, req(1, toks(1, 100), Some(50)))
        .unwrap();
    e.add(Duration::ZERO, req(2, toks(500, 100), Some(50)))
        .unwrap();
    e.step(Duration::ZERO);
    assert!(e.stats().used_blocks > 0);
    assert!(e.abort(1));
    assert!(e.abort(2));
    assert!(!e.abort(2));
    assert_eq!(e.stats().used_blocks, 0);
    assert!(!e.has_work());
}

#[test]
fn generated_tokens_are_cached_for_the_next_turn() {
    let mut e = Engine::new(EngineConfig::default());
    let mut now = Duration::ZERO;
    let prompt = toks(1, 40);
    e.add(now, req(1, prompt.clone(), Some(40))).unwrap();
    let ev = run(&mut e, &mut now);
    let mut next = prompt;
    next.extend(ev.iter().filter_map(|(_, e)| match e {
        Event::FirstToken { token, .. } | Event::Token { token, .. } => Some(*token),
        _ => None,
    }));
    next.extend(toks(900, 10));
    // 79 computed tokens (the last sampled token never gets KV) = 4 full blocks.
    assert_eq!(e.probe_prefix(&next), 64);
}

// ---- cost model -----------------------------------------------------------------------------

/// Inter-token latency of `batch` requests of `prompt` tokens decoding together: the mean
/// duration of the steps in which all of them decode (and nothing prefills), under `cfg`.
fn batch_itl(cfg: &EngineConfig, batch: usize, prompt: usize, out: u32) -> Duration {
    let mut e = Engine::new(cfg.clone());
    let mut now = Duration::ZERO;
    for id in 0..batch as u64 {
        e.add(
            now,
            req(id, toks(id as u32 * 100_000 + 1, prompt), Some(out)),
        )
        .unwrap();
    }
    let mut steps = Vec::new();
    while e.has_work() {
        let s = e.step(now);
        now += s.duration;
        if s.decode_seqs == batch && s.prefill_tokens == 0 {
            steps.push(s.duration);
        }
    }
    assert!(steps.len() >= 5, "too few full-batch decode steps");
    steps.iter().sum::<Duration>() / steps.len() as u32
}

#[test]
fn legacy_defaults_keep_the_old_step_cost() {
    let cfg = EngineConfig::default();
    // 2 ms + 60 µs × 100 prefilled + 250 µs × 3 decoding, whatever the contexts.
    let cost = cfg.step_cost([
        (0, 100, false),
        (5000, 1, true),
        (10, 1, true),
        (1, 1, true),
    ]);
    assert_eq!(cost, Duration::from_micros(2000 + 6000 + 750));
    assert_eq!(cfg.request_cost(10_000), Duration::ZERO);
}

#[test]
fn a_longer_context_decodes_slower() {
    let cfg = EngineConfig {
        num_blocks: 4096,
        max_model_len: 16_384,
        ..EngineConfig::a100_llama8b()
    };
    let short = batch_itl(&cfg, 4, 200, 40);
    let long = batch_itl(&cfg, 4, 6000, 40);
    // 4 sequences × ~5,800 more context tokens × 109 ns ≈ 2.5 ms more per step.
    let extra = long - short;
    assert!(
        extra > Duration::from_micros(2300) && extra < Duration::from_micros(2800),
        "short {short:?}, long {long:?}"
    );
    // The legacy model ignores context length.
    let legacy = EngineConfig {
        num_blocks: 4096,
        max_model_len: 16_384,
        ..EngineConfig::default()
    };
    assert_eq!(
        batch_itl(&legacy, 4, 200, 40),
        batch_itl(&legacy, 4, 6000, 40)
    );
}

#[test]
fn a_cached_prefix_is_cheaper_than_an_uncached_one_but_not_free() {
    let cfg = EngineConfig::a100_llama8b();
    // The step cost alone: 24 new tokens after 4,000 cached ones.
    let uncached = cfg.step_cost([(0, 4024, false)]);
    let cached = cfg.step_cost([(4000, 24, false)]);
    let no_prefix = cfg.step_cost([(0, 24, false)]);
    assert!(cached * 10 < uncached, "{cached:?} vs {uncached:?}");
    // 24 × 4,012 pairs × 3.4 ns + 4,000 KV reads × 109 ns ≈ 0.76 ms more than no prefix.
    let extra = cached - no_prefix;
    assert!(
        extra > Duration::from_micros(700) && extra < Duration::from_micros(820),
        "{extra:?}"
    );

    // And end to end: TTFT of a request whose 4,000-token prefix is cached grows with the
    // prefix it reuses.
    let ttft_after = |prefix: usize| {
        let mut e = Engine::new(EngineConfig {
            max_num_batched_tokens: 8192,
            ..cfg.clone()
        });
        let mut now = Duration::ZERO;
        let shared = toks(10_000, prefix);
        let mut p1 = shared.clone();
        p1.extend(toks(1, 24));
        e.add(now, req(1, p1, Some(1))).unwrap();
        let cold = first_token(&run(&mut e, &mut now), 1).0;
        let start = now;
        let mut p2 = shared;
        p2.extend(toks(500, 24));
        e.add(now, req(2, p2, Some(1))).unwrap();
        let (t, hit) = first_token(&run(&mut e, &mut now), 2);
        assert_eq!(hit, prefix / 16 * 16);
        (cold, t - start)
    };
    let (cold_1k, warm_1k) = ttft_after(1008);
    let (cold_4k, warm_4k) = ttft_after(4000);
    assert!(warm_4k * 5 < cold_4k, "{warm_4k:?} vs cold {cold_4k:?}");
    assert!(
        warm_1k < warm_4k,
        "a longer cached prefix costs more: {warm_1k:?} vs {warm_4k:?}"
    );
    assert!(cold_1k < cold_4k);
}

#[test]
fn the_api_server_adds_a_queued_per_request_cost() {
    let cfg = EngineConfig {
        step_base: MS,
        prefill_per_token: Duration::ZERO,
        decode_per_seq: Duration::ZERO,
        request_base: 10 * MS,
        tokenize_per_token: Duration::from_micros(10),
        ..EngineConfig::default()
    };
    assert_eq!(cfg.request_cost(100), 11 * MS);
    let mut e = Engine::new(cfg);
    let mut now = Duration::ZERO;
    // Two requests arrive together: the API server takes them one after the other.
    e.add(now, req(1, toks(1, 100), Some(1))).unwrap();
    e.add(now, req(2, toks(1000, 100), Some(1))).unwrap();
    let ev = run(&mut e, &mut now);
    let (t1, _) = first_token(&ev, 1);
    let (t2, _) = first_token(&ev, 2);
    assert_eq!(t1, 11 * MS + MS, "API server, then one step");
    assert_eq!(t2, 22 * MS + MS, "behind request 1 in the API server");
    // A request arriving later while the API server is idle pays only its own cost.
    let start = now + 100 * MS;
    let mut now = start;
    e.add(now, req(3, toks(5000, 100), Some(1))).unwrap();
    let ev = run(&mut e, &mut now);
    assert_eq!(first_token(&ev, 3).0 - start, 12 * MS);
    assert_eq!(
        e.stats().steps,
        3,
        "waiting for the API server is not a step"
    );
}

#[test]
fn the_calibrated_model_reproduces_the_cited_measurement() {
    // Llama-3.1-8B-Instruct on an A100 40GB, 1024-token prompts, 128-token outputs
    // (bench/routing/README.md): ~75 tokens/s for one request, and 8 concurrent requests
    // give ~6.6x the throughput of one.
    let cfg = EngineConfig::a100_llama8b();
    let itl1 = batch_itl(&cfg, 1, 1024, 128);
    let itl8 = batch_itl(&cfg, 8, 1024, 128);
    let tps1 = 1.0 / itl1.as_secs_f64();
    let gain8 = 8.0 * itl1.as_secs_f64() / itl8.as_secs_f64();
    assert!(
        (72.0..78.0).contains(&tps1),
        "batch-1 decode {tps1:.1} tok/s"
    );
    assert!((6.3..6.9).contains(&gain8), "batch-8 gain {gain8:.2}x");
    // Prefill of a cold 1024-token prompt: ~86 µs a token plus attention, ~11.6k tokens/s.
    let cold = cfg.step_cost([(0, 1024, false)]) - cfg.step_base;
    let prefill_tps = 1024.0 / cold.as_secs_f64();
    assert!(
        (11_000.0..12_000.0).contains(&prefill_tps),
        "{prefill_tps:.0} tok/s"
    );
}

#[test]
fn without_api_server_cost_a_request_is_schedulable_at_once() {
    // The server reads `now` for `add` from the wall clock and the engine steps on its own
    // clock, which may be a little behind: with no API-server cost that must not delay it.
    let mut e = Engine::new(EngineConfig::default());
    e.add(10 * MS, req(1, toks(1, 100), Some(1))).unwrap();
    let s = e.step(9 * MS);
    assert_eq!(s.prefill_tokens, 100);
    // With a cost, the first step only waits for the API server.
    let mut e = Engine::new(EngineConfig {
        request_base: 5 * MS,
        ..EngineConfig::default()
    });
    e.add(Duration::ZERO, req(1, toks(1, 100), Some(1)))
        .unwrap();
    let s = e.step(Duration::ZERO);
    assert_eq!((s.prefill_tokens, s.duration), (0, 5 * MS));
    assert_eq!(e.step(5 * MS).prefill_tokens, 100);
}
