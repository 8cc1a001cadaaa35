//! The simulated vLLM engine: a pure, deterministic state machine driven by an explicit clock.
//!
//! It models what makes routing decisions matter on GPUs, after vLLM's V1 scheduler:
//!
//! * **Continuous batching.** Each [`Engine::step`] schedules running sequences first (one
//!   token each when decoding, the next chunk of the prompt when prefilling), then admits
//!   waiting requests first-come-first-served while fewer than `max_num_seqs` run and the step's
//!   token budget (`max_num_batched_tokens`) lasts. Long prompts are prefilled in chunks across
//!   steps.
//! * **Step cost** ([`EngineConfig::step_cost`]). A step takes `step_base + prefill_per_token ×
//!   prefilled tokens + decode_per_seq × decoding sequences`, plus attention over each
//!   prefill chunk's context (`attention_ns_per_pair × n × (c + n/2)` for `n` new tokens after
//!   `c` cached or computed ones) and the reading of every scheduled sequence's KV
//!   (`kv_read_ns_per_token × context`). So inter-token latency grows with the batch and its
//!   context lengths, and time-to-first-token is queueing plus prefill of the *uncached* prompt
//!   tokens plus (cheaper) attention over the cached ones.
//! * **API server.** Before the engine sees a request, a FIFO single server per pod spends
//!   `request_base + tokenize_per_token × prompt tokens` on it, in parallel with the steps.
//! * **Paged KV cache with automatic prefix caching.** Tokens live in blocks of `block_size`;
//!   a full block is named by a hash chain (its parent's hash and its tokens). On admission the
//!   longest run of cached full blocks is reused and skips prefill. Blocks are reference-counted
//!   while sequences use them; freed blocks keep their hash and sit in an LRU free queue, evicted
//!   (least recently used first, a sequence's tail blocks before its head) only when an
//!   allocation needs room. When a running sequence needs a block and none is free, the most
//!   recently admitted sequence is preempted (its blocks freed, recomputed later).
//!
//! Time is a [`Duration`] since an arbitrary origin: the caller passes `now`, the engine answers
//! with how long the step takes and what it produced at its end. No I/O, no tokio.
//!
//! `kv`: the paged KV cache and block hashes; `stats`: counters, gauges and histograms.

mod kv;
mod stats;
#[cfg(test)]
mod tests;

pub use stats::{Histogram, Stats, ITL_BUCKETS, REQUEST_LATENCY_BUCKETS, TTFT_BUCKETS};

use std::collections::{HashSet, VecDeque};
use std::ops::Range;
use std::time::Duration;

use super::tokenizer;

use kv::{block_hash, BlockId, KvCache, ROOT_HASH};

/// The engine's knobs. Defaults are a mid-size model on one GPU.
#[derive(Clone, Debug, PartialEq)]
pub struct EngineConfig {
    /// Most sequences running at once.
    pub max_num_seqs: usize,
    /// Most tokens (prefill plus decode) one step computes.
    pub max_num_batched_tokens: usize,
    /// Tokens per KV block.
    pub block_size: usize,
    /// KV cache capacity, in blocks.
    pub num_blocks: usize,
    /// Longest prompt plus completion accepted (capped by the KV cache's capacity).
    pub max_model_len: usize,
    /// Most requests waiting; beyond it [`Engine::add`] rejects (the server's 429).
    pub max_waiting: usize,
    /// Fixed cost of every step.
    pub step_base: Duration,
    /// Cost of each prompt token prefilled in a step.
    pub prefill_per_token: Duration,
    /// Cost of each sequence decoding one token in a step.
    pub decode_per_seq: Duration,
    /// Attention compute per (new token, context token) pair of a prefill chunk, in
    /// nanoseconds: a chunk of `n` new tokens after `c` tokens already in the KV cache (computed
    /// earlier or found in the prefix cache) costs `n × (c + n/2)` pairs, so cached tokens are
    /// cheaper than uncached ones but not free, and long contexts prefill slower. 0 = off.
    pub attention_ns_per_pair: f64,
    /// Reading one context token's KV entries, per sequence per step (decode and prefill), in
    /// nanoseconds: a decode step over long contexts is slower than over short ones. 0 = off.
    pub kv_read_ns_per_token: f64,
    /// Fixed cost of each request in the API server before the engine sees it (HTTP, request
    /// parsing, chat template). The API server is a single FIFO server per pod that works in
    /// parallel with the engine's steps; under load requests queue there too.
    pub request_base: Duration,
    /// The API server's cost per prompt token (tokenization).
    pub tokenize_per_token: Duration,
    /// Completion length drawn (seeded) for requests without `max_tokens`.
    pub output_len: Range<u32>,
    /// Whether full blocks are reused across requests.
    pub enable_prefix_caching: bool,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            max_num_seqs: 64,
            max_num_batched_tokens: 2048,
            block_size: 16,
            num_blocks: 2048,
            max_model_len: 8192,
            max_waiting: 256,
            step_base: Duration::from_millis(2),
            prefill_per_token: Duration::from_micros(60),
            decode_per_seq: Duration::from_micros(250),
            attention_ns_per_pair: 0.0,
            kv_read_ns_per_token: 0.0,
            request_base: Duration::ZERO,
            tokenize_per_token: Duration::ZERO,
            output_len: 16..64,
            enable_prefix_caching: true,
        }
    }
}

impl EngineConfig {
    /// The cost model calibrated to Llama-3.1-8B-Instruct (BF16) served by vLLM on one
    /// NVIDIA A100 40GB (bench/routing/README.md cites the measurement and the arithmetic):
    /// 13.2 ms per step (reading the 16 GB of weights at the measured ~77% of the memory
    /// roofline), 86 µs per prefilled token (2 × 8.03 GFLOP per token at ~60% of 312 TFLOP/s),
    /// 3.4 ns per attention pair, 109 ns per context token read (128 KiB of KV per token at
    /// 1.2 TB/s), 0.29 ms per decoding sequence, and an API server taking 2 ms + 1.5 µs per
    /// prompt token per request. The other fields (batch limits, KV size) keep their defaults.
    pub fn a100_llama8b() -> Self {
        EngineConfig {
            step_base: Duration::from_micros(13_200),
            prefill_per_token: Duration::from_micros(86),
            decode_per_seq: Duration::from_micros(290),
            attention_ns_per_pair: 3.4,
            kv_read_ns_per_token: 109.0,
            request_base: Duration::from_millis(2),
            tokenize_per_token: Duration::from_nanos(1_500),
            ..EngineConfig::default()
        }
    }

    /// How long one step takes: `step_base`, plus per prefilling sequence `prefill_per_token ×
    /// n` and the attention over its context, plus per decoding sequence `decode_per_seq` and
    /// the reading of its context's KV. `work` is `(context tokens before the step, tokens
    /// computed in the step, decoding)` per scheduled sequence.
    pub fn step_cost(&self, work: impl IntoIterator<Item = (usize, usize, bool)>) -> Duration {
        let mut fixed = self.step_base;
        let mut ns = 0.0f64;
        for (context, new, decoding) in work {
            if new == 0 {
                continue;
            }
            if decoding {
                fixed += self.decode_per_seq;
            } else {
                fixed += self.prefill_per_token * new as u32;
            }
            let (c, n) = (context as f64, new as f64);
            ns += self.attention_ns_per_pair * n * (c + n / 2.0);
            ns += self.kv_read_ns_per_token * (c + n);
        }
        fixed + Duration::from_nanos(ns.max(0.0).round() as u64)
    }

    /// The API server's time for one request with `prompt_tokens` tokens.
    pub fn request_cost(&self, prompt_tokens: usize) -> Duration {
        self.request_base + self.tokenize_per_token * prompt_tokens as u32
    }
}

/// A generation request.
#[derive(Clone, Debug)]
pub struct Request {
    pub id: u64,
    pub prompt_tokens: Vec<u32>,
    /// Exact completion length; `None` draws one from `EngineConfig::output_len`.
    pub max_tokens: Option<u32>,
}

/// Why [`Engine::add`] refused a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Rejected {
    /// `max_waiting` requests are already waiting.
    QueueFull {
        limit: usize,
    },
    /// Prompt plus completion exceed the model's context (or the whole KV cache).
    TooLong {
        prompt_tokens: usize,
        max_tokens: u32,
        limit: usize,
    },
    EmptyPrompt,
    /// A request with this id is still in the engine.
    DuplicateId(u64),
}

impl std::fmt::Display for Rejected {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Rejected::QueueFull { limit } => write!(
                f,
                "The server is overloaded: {limit} requests are already waiting. Please try again later."
            ),
            Rejected::TooLong {
                prompt_tokens,
                max_tokens,
                limit,
            } => write!(
                f,
                "This model's maximum context length is {limit} tokens. However, you requested {} \
                 tokens ({prompt_tokens} in the messages, {max_tokens} in the completion). Please \
                 reduce the length of the messages or completion.",
                *prompt_tokens as u64 + u64::from(*max_tokens)
            ),
            Rejected::EmptyPrompt => write!(f, "The prompt cannot be empty."),
            Rejected::DuplicateId(id) => write!(f, "Request id {id} is already in use."),
        }
    }
}

/// Why a request stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FinishReason {
    /// The drawn length was reached (the model "chose" to stop).
    Stop,
    /// The request's `max_tokens` was reached.
    Length,
}

impl FinishReason {
    pub fn as_str(self) -> &'static str {
        match self {
            FinishReason::Stop => "stop",
            FinishReason::Length => "length",
        }
    }
}

/// What a step produced for one request, at the step's end.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// The first generated token; `cached_tokens` prompt tokens were prefix-cache hits.
    FirstToken {
        id: u64,
        token: u32,
        cached_tokens: usize,
    },
    /// A later generated token.
    Token { id: u64, token: u32 },
    /// The request is done (after its last token's event) and its blocks are released.
    Finished {
        id: u64,
        prompt_tokens: usize,
        completion_tokens: u32,
        cached_tokens: usize,
        reason: FinishReason,
    },
}

impl Event {
    pub fn id(&self) -> u64 {
        match self {
            Event::FirstToken { id, .. } | Event::Token { id, .. } | Event::Finished { id, .. } => {
                *id
            }
        }
    }
}

/// The result of one [`Engine::step`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StepOutcome {
    /// How long the step takes; its events happen at `now + duration`.
    pub duration: Duration,
    pub events: Vec<Event>,
    /// Prompt (or recomputed) tokens prefilled in this step.
    pub prefill_tokens: usize,
    /// Sequences that decoded one token in this step.
    pub decode_seqs: usize,
}

#[derive(Clone, Debug)]
struct Seq {
    id: u64,
    /// Prompt, then generated tokens.
    tokens: Vec<u32>,
    prompt_len: usize,
    target: u32,
    reason: FinishReason,
    generated: u32,
    /// Tokens whose KV is computed.
    computed: usize,
    blocks: Vec<BlockId>,
    /// Hash chain of the full blocks of `tokens` computed so far.
    hashes: Vec<u64>,
    /// Blocks registered in the prefix cache (a prefix of `blocks`).
    registered: usize,
    output_seed: u64,
    arrival: Duration,
    /// When the API server hands the request to the engine (`arrival` + its wait and cost
    /// there); not schedulable before.
    ready_at: Duration,
    /// Prefix-cache hits at first admission (`None` until admitted).
    cached_tokens: Option<usize>,
    last_token_at: Option<Duration>,
}

impl Seq {
    fn extend_hashes(&mut self, block_size: usize, upto_tokens: usize) {
        while (self.hashes.len() + 1) * block_size <= upto_tokens {
            let i = self.hashes.len();
            let parent = if i == 0 {
                ROOT_HASH
            } else {
                self.hashes[i - 1]
            };
            let h = block_hash(parent, &self.tokens[i * block_size..(i + 1) * block_size]);
            self.hashes.push(h);
        }
    }

    fn is_decode(&self) -> bool {
        self.generated > 0 && self.tokens.len() - self.computed == 1
    }
}

/// The simulated engine. See the module documentation for the model.
#[derive(Clone, Debug)]
pub struct Engine {
    cfg: EngineConfig,
    kv: KvCache,
    waiting: VecDeque<Seq>,
    running: Vec<Seq>,
    live: HashSet<u64>,
    rng: fastrand::Rng,
    stats: Stats,
    /// When the API server (a FIFO single server) finishes the requests it has accepted.
    frontend_free_at: Duration,
}

impl Engine {
    /// An engine with RNG seed 0.
    pub fn new(cfg: EngineConfig) -> Self {
        Self::with_seed(cfg, 0)
    }

    pub fn with_seed(mut cfg: EngineConfig, seed: u64) -> Self {
        cfg.max_num_seqs = cfg.max_num_seqs.max(1);
        cfg.max_num_batched_tokens = cfg.max_num_batched_tokens.max(1);
        cfg.block_size = cfg.block_size.max(1);
        cfg.num_blocks = cfg.num_blocks.max(1);
        cfg.max_model_len = cfg.max_model_len.min(cfg.num_blocks * cfg.block_size);
        if cfg.output_len.is_empty() {
            cfg.output_len = cfg.output_len.start..cfg.output_len.start.saturating_add(1);
        }
        cfg.output_len.start = cfg.output_len.start.max(1);
        cfg.output_len.end = cfg.output_len.end.max(cfg.output_len.start + 1);
        let stats = Stats {
            running: 0,
            waiting: 0,
            kv_usage: 0.0,
            used_blocks: 0,
            cached_blocks: 0,
            num_blocks: cfg.num_blocks,
            block_size: cfg.block_size,
            prefix_cache_queries: 0,
            prefix_cache_hits: 0,
            prompt_tokens: 0,
            generation_tokens: 0,
            preemptions: 0,
            finished_stop: 0,
            finished_length: 0,
            aborted: 0,
            steps: 0,
            ttft: Histogram::new(TTFT_BUCKETS),
            itl: Histogram::new(ITL_BUCKETS),
            e2e: Histogram::new(REQUEST_LATENCY_BUCKETS),
            queue_time: Histogram::new(REQUEST_LATENCY_BUCKETS),
        };
        Engine {
            kv: KvCache::new(cfg.num_blocks),
            cfg,
            waiting: VecDeque::new(),
            running: Vec::new(),
            live: HashSet::new(),
            rng: fastrand::Rng::with_seed(seed),
            stats,
            frontend_free_at: Duration::ZERO,
        }
    }

    pub fn config(&self) -> &EngineConfig {
        &self.cfg
    }

    /// Queues a request that arrived at `now`.
    pub fn add(&mut self, now: Duration, req: Request) -> Result<(), Rejected> {
        if req.prompt_tokens.is_empty() {
            return Err(Rejected::EmptyPrompt);
        }
        if self.live.contains(&req.id) {
            return Err(Rejected::DuplicateId(req.id));
        }
        let limit = self.cfg.max_model_len;
        let prompt_len = req.prompt_tokens.len();
        let too_long = |max_tokens: u32| Rejected::TooLong {
            prompt_tokens: prompt_len,
            max_tokens,
            limit,
        };
        match req.max_tokens {
            Some(m) if prompt_len + m.max(1) as usize > limit => return Err(too_long(m.max(1))),
            None if prompt_len >= limit => return Err(too_long(1)),
            _ => {}
        }
        if self.waiting.len() >= self.cfg.max_waiting {
            return Err(Rejected::QueueFull {
                limit: self.cfg.max_waiting,
            });
        }
        let (target, reason) = match req.max_tokens {
            Some(m) => (m.max(1), FinishReason::Length),
            None => {
                let room = u32::try_from(limit - prompt_len).unwrap_or(u32::MAX);
                match self.rng.u32(self.cfg.output_len.clone()) {
                    drawn if drawn > room => (room, FinishReason::Length),
                    drawn => (drawn, FinishReason::Stop),
                }
            }
        };
        self.live.insert(req.id);
        let output_seed = tokenizer::prompt_seed(&req.prompt_tokens);
        let cost = self.cfg.request_cost(prompt_len);
        let ready_at = if cost.is_zero() {
            // No API-server cost: schedulable at once, even by a step whose start (the engine's
            // clock) is a little behind the clock `now` was read from.
            Duration::ZERO
        } else {
            let ready = now.max(self.frontend_free_at) + cost;
            self.frontend_free_at = ready;
            ready
        };
        self.waiting.push_back(Seq {
            id: req.id,
            tokens: req.prompt_tokens,
            prompt_len,
            target,
            reason,
            generated: 0,
            computed: 0,
            blocks: Vec::new(),
            hashes: Vec::new(),
            registered: 0,
            output_seed,
            arrival: now,
            ready_at,
            cached_tokens: None,
            last_token_at: None,
        });
        Ok(())
    }

    /// Removes a request (the client went away), releasing its blocks. False if unknown.
    pub fn abort(&mut self, id: u64) -> bool {
        if let Some(i) = self.waiting.iter().position(|s| s.id == id) {
            let seq = self.waiting.remove(i).expect("index is in range");
            self.release_blocks(&seq);
        } else if let Some(i) = self.running.iter().position(|s| s.id == id) {
            let seq = self.running.remove(i);
            self.release_blocks(&seq);
        } else {
            return false;
        }
        self.live.remove(&id);
        self.stats.aborted += 1;
        true
    }

    /// Whether a step would do anything.
    pub fn has_work(&self) -> bool {
        !self.running.is_empty() || !self.waiting.is_empty()
    }

    pub fn num_running(&self) -> usize {
        self.running.len()
    }

    pub fn num_waiting(&self) -> usize {
        self.waiting.len()
    }

    /// Tokens of `prompt` an admission right now would find in the prefix cache (no side
    /// effects).
    pub fn probe_prefix(&self, prompt: &[u32]) -> usize {
        if !self.cfg.enable_prefix_caching || prompt.is_empty() {
            return 0;
        }
        let bs = self.cfg.block_size;
        let max_blocks = (prompt.len() - 1) / bs;
        let mut parent = ROOT_HASH;
        let mut hits = 0;
        for chunk in prompt.chunks_exact(bs).take(max_blocks) {
            parent = block_hash(parent, chunk);
            if !self.kv.cached.contains_key(&parent) {
                break;
            }
            hits += 1;
        }
        hits * bs
    }

    /// Counters, histograms and gauges.
    pub fn stats(&self) -> Stats {
        let mut s = self.stats.clone();
        s.running = self.running.len();
        s.waiting = self.waiting.len();
        s.used_blocks = self.kv.used;
        s.kv_usage = self.kv.used as f64 / self.cfg.num_blocks as f64;
        s.cached_blocks = self.kv.cached_free_blocks();
        s
    }

    fn blocks_for(&self, tokens: usize) -> usize {
        tokens.div_ceil(self.cfg.block_size)
    }

    fn release_blocks(&mut self, seq: &Seq) {
        // Tail first, so a sequence's tail is evicted before its (more shareable) head.
        for b in seq.blocks.iter().rev() {
            self.kv.release(*b);
        }
    }

    /// Moves the most recently admitted running sequence back to the front of the queue.
    fn preempt_last(&mut self) -> Option<u64> {
        let mut seq = self.running.pop()?;
        self.release_blocks(&seq);
        seq.blocks.clear();
        seq.computed = 0;
        seq.registered = 0;
        self.stats.preemptions += 1;
        let id = seq.id;
        self.waiting.push_front(seq);
        Some(id)
    }

    /// Runs one engine step starting at `now`.
    pub fn step(&mut self, now: Duration) -> StepOutcome {
        if !self.has_work() {
            return StepOutcome {
                duration: Duration::ZERO,
                events: Vec::new(),
                prefill_tokens: 0,
                decode_seqs: 0,
            };
        }
        // Nothing running and the next request still in the API server: idle until it is ready.
        if self.running.is_empty() {
            if let Some(front) = self.waiting.front().filter(|s| s.ready_at > now) {
                return StepOutcome {
                    duration: front.ready_at - now,
                    events: Vec::new(),
                    prefill_tokens: 0,
                    decode_seqs: 0,
                };
            }
        }
        self.stats.steps += 1;
        let bs = self.cfg.block_size;
        let mut budget = self.cfg.max_num_batched_tokens;
        // Tokens scheduled for running[i], for the first `scheduled.len()` running sequences.
        let mut scheduled: Vec<usize> = Vec::new();
        let mut preempted = false;

        // 1. Running sequences, in admission order.
        'running: while scheduled.len() < self.running.len() && budget > 0 {
            let i = scheduled.len();
            let seq = &self.running[i];
            let num_new = (seq.tokens.len() - seq.computed).min(budget);
            let need = self.blocks_for(seq.computed + num_new) - seq.blocks.len();
            while self.kv.num_free() < need {
                let victim = self.preempt_last();
                preempted = true;
                if victim.is_none() || self.running.len() <= i {
                    // The sequence preempted itself: nothing more fits this step.
                    break 'running;
                }
            }
            for _ in 0..need {
                let b = self.kv.allocate().expect("checked free blocks");
                self.running[i].blocks.push(b);
            }
            scheduled.push(num_new);
            budget -= num_new;
        }

        // 2. Waiting requests, first come first served, unless this step had to preempt.
        while !preempted && budget > 0 && self.running.len() < self.cfg.max_num_seqs {
            let Some(seq) = self.waiting.front_mut() else {
                break;
            };
            if seq.ready_at > now {
                break; // still in the API server (the queue is in API-server order)
            }
            let len = seq.tokens.len();
            seq.extend_hashes(bs, len);
            // At least one token is always computed, so a fully cached prompt recomputes its
            // last block.
            let max_cached = (len - 1) / bs;
            let hits = if self.cfg.enable_prefix_caching {
                self.kv
                    .lookup(&seq.hashes[..max_cached.min(seq.hashes.len())])
            } else {
                Vec::new()
            };
            let cached = hits.len() * bs;
            let num_new = (len - cached).min(budget);
            let need = self.blocks_for(cached + num_new) - hits.len();
            let hits_in_free = hits
                .iter()
                .filter(|b| self.kv.blocks[**b].refs == 0)
                .count();
            if self.kv.num_free() - hits_in_free < need {
                break;
            }
            let mut seq = self.waiting.pop_front().expect("front exists");
            for b in &hits {
                self.kv.touch(*b);
            }
            seq.blocks = hits;
            for _ in 0..need {
                let b = self.kv.allocate().expect("checked free blocks");
                seq.blocks.push(b);
            }
            seq.computed = cached;
            seq.registered = seq.blocks.len().min(cached / bs);
            self.stats.prefix_cache_queries += len as u64;
            self.stats.prefix_cache_hits += cached as u64;
            if seq.cached_tokens.is_none() {
                seq.cached_tokens = Some(cached);
                self.stats
                    .queue_time
                    .observe(now.saturating_sub(seq.arrival).as_secs_f64());
            }
            self.running.push(seq);
            scheduled.push(num_new);
            budget -= num_new;
        }

        // 3. Cost of the batch.
        let mut prefill_tokens = 0;
        let mut decode_seqs = 0;
        for (seq, n) in self.running.iter().zip(&scheduled) {
            if seq.is_decode() {
                decode_seqs += 1;
            } else {
                prefill_tokens += n;
            }
        }
        let duration = self.cfg.step_cost(
            self.running
                .iter()
                .zip(&scheduled)
                .map(|(seq, n)| (seq.computed, *n, seq.is_decode())),
        );
        let end = now + duration;

        // 4. Apply the step: computed KV, new full blocks, sampled tokens, finished requests.
        let mut events = Vec::new();
        let mut finished = Vec::new();
        for (i, n) in scheduled.iter().enumerate() {
            let seq = &mut self.running[i];
            seq.computed += n;
            let full = seq.computed / bs;
            if full > seq.registered {
                seq.extend_hashes(bs, seq.computed);
                for j in seq.registered..full {
                    if self.cfg.enable_prefix_caching {
                        self.kv.register(seq.blocks[j], seq.hashes[j]);
                    }
                }
                seq.registered = full;
            }
            if seq.computed < seq.tokens.len() {
                continue; // mid-prefill
            }
            let token = tokenizer::filler_token(seq.output_seed, seq.generated);
            seq.tokens.push(token);
            seq.generated += 1;
            self.stats.generation_tokens += 1;
            match seq.last_token_at {
                None => {
                    let cached_tokens = seq.cached_tokens.unwrap_or(0);
                    self.stats.prompt_tokens += seq.prompt_len as u64;
                    self.stats
                        .ttft
                        .observe(end.saturating_sub(seq.arrival).as_secs_f64());
                    events.push(Event::FirstToken {
                        id: seq.id,
                        token,
                        cached_tokens,
                    });
                }
                Some(last) => {
                    self.stats
                        .itl
                        .observe(end.saturating_sub(last).as_secs_f64());
                    events.push(Event::Token { id: seq.id, token });
                }
            }
            seq.last_token_at = Some(end);
            if seq.generated >= seq.target {
                events.push(Event::Finished {
                    id: seq.id,
                    prompt_tokens: seq.prompt_len,
                    completion_tokens: seq.generated,
                    cached_tokens: seq.cached_tokens.unwrap_or(0),
                    reason: seq.reason,
                });
                finished.push(i);
            }
        }
        for i in finished.into_iter().rev() {
            let seq = self.running.remove(i);
            self.release_blocks(&seq);
            self.live.remove(&seq.id);
            self.stats
                .e2e
                .observe(end.saturating_sub(seq.arrival).as_secs_f64());
            match seq.reason {
                FinishReason::Stop => self.stats.finished_stop += 1,
                FinishReason::Length => self.stats.finished_length += 1,
            }
        }
        StepOutcome {
            duration,
            events,
            prefill_tokens,
            decode_seqs,
        }
    }
}
