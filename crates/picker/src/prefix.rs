//! Prefix-cache aware routing: send requests that share a prompt prefix to the
//! pod that most likely still holds that prefix in its KV cache.
//!
//! The prompt is cut into fixed-size byte blocks; each block's hash is chained
//! with the previous one, so block *i*'s hash identifies the whole prefix up to
//! and including block *i*. [`Picker::observe`] records the blocks of each
//! routed prompt in a per-pod LRU table; scoring counts how many leading blocks
//! of a new prompt each pod already has.

use rustc_hash::FxHasher;
use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasherDefault, Hash, Hasher};
use std::sync::RwLock;

use crate::strategies::least_request_scores;
use crate::{PickRequest, Picker, PodId, PodState};

/// Prefix-cache parameters.
#[derive(Debug, Clone, PartialEq)]
pub struct PrefixConfig {
    /// Block size in bytes of prompt text (default 128). Only full blocks count.
    pub block_size: usize,
    /// Blocks remembered per pod before least-recently-used ones are evicted
    /// (default 16384, i.e. ~2 MiB of prompt text).
    pub max_blocks_per_pod: usize,
    /// If the best-matching pod has more than this many requests in flight
    /// above the least-loaded pod, affinity is ignored (default 8).
    pub imbalance_threshold: u32,
}

impl Default for PrefixConfig {
    fn default() -> Self {
        PrefixConfig {
            block_size: 128,
            max_blocks_per_pod: 16_384,
            imbalance_threshold: 8,
        }
    }
}

/// Chained block hashes of `prompt` (full blocks only), seeded by the model
/// name so different models never share blocks. Appends to `out`.
///
/// FxHash (`rustc-hash`), not SipHash: hashing the whole prompt is most of a pick's cost, and
/// these hashes only steer affinity (a collision misroutes, it exposes nothing).
pub fn block_hashes(block_size: usize, model: Option<&str>, prompt: &str, out: &mut Vec<u64>) {
    let block_size = block_size.max(1);
    let mut h = FxHasher::default();
    model.hash(&mut h);
    let mut prev = h.finish();
    let chunks = prompt.as_bytes().chunks_exact(block_size);
    out.reserve(chunks.len());
    for chunk in chunks {
        let mut h = FxHasher::default();
        h.write_u64(prev);
        h.write(chunk);
        prev = h.finish();
        out.push(prev);
    }
}

/// Keys are already hashes: use them as-is.
#[derive(Default)]
struct IdentityHasher(u64);

impl Hasher for IdentityHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

type BlockMap = HashMap<u64, u64, BuildHasherDefault<IdentityHasher>>;

/// LRU set of block hashes for one pod: `stamps` holds the last-use tick of
/// every live block, `order` the touches in time order (stale entries are
/// skipped lazily and compacted when the queue grows too long).
#[derive(Default)]
struct PodTable {
    stamps: BlockMap,
    order: VecDeque<(u64, u64)>,
    tick: u64,
}

impl PodTable {
    fn contains(&self, hash: u64) -> bool {
        self.stamps.contains_key(&hash)
    }

    fn touch(&mut self, hash: u64, cap: usize) {
        self.tick += 1;
        self.stamps.insert(hash, self.tick);
        self.order.push_back((hash, self.tick));
        while self.stamps.len() > cap {
            let Some((h, t)) = self.order.pop_front() else {
                break;
            };
            if self.stamps.get(&h) == Some(&t) {
                self.stamps.remove(&h);
            }
        }
        if self.order.len() > 2 * cap + 64 {
            let mut live: Vec<(u64, u64)> = self.stamps.iter().map(|(&h, &t)| (h, t)).collect();
            live.sort_unstable_by_key(|&(_, t)| t);
            self.order = live.into();
        }
    }

    /// How many leading blocks of `hashes` this pod holds. A prompt's blocks are recorded
    /// tail first, so the head is always the more recent: a table holding block i holds the
    /// blocks before it, and the boundary can be found by binary search (about 7 lookups for
    /// a 100-block prompt instead of one per block — each a likely cache miss in a large
    /// table).
    fn leading_matches(&self, hashes: &[u64]) -> usize {
        if hashes.first().is_none_or(|&h| !self.contains(h)) {
            return 0;
        }
        let (mut lo, mut hi) = (1, hashes.len());
        while lo < hi {
            let mid = (lo + hi).div_ceil(2);
            if self.contains(hashes[mid - 1]) {
                lo = mid;
            } else {
                hi = mid - 1;
            }
        }
        lo
    }
}

/// The `prefix-cache` strategy.
///
/// Score = matched leading blocks / total blocks. When no pod matches (or the
/// prompt is shorter than one block), or the best-matching pod is overloaded
/// (load-imbalance guard), pods are scored by least-request instead.
pub struct PrefixCachePicker {
    cfg: PrefixConfig,
    tables: RwLock<HashMap<PodId, PodTable>>,
}

impl PrefixCachePicker {
    pub fn new(cfg: PrefixConfig) -> Self {
        PrefixCachePicker {
            cfg,
            tables: RwLock::new(HashMap::new()),
        }
    }

    pub fn config(&self) -> &PrefixConfig {
        &self.cfg
    }

    /// Blocks currently remembered for `pod`.
    pub fn blocks_for(&self, pod: &PodId) -> usize {
        let tables = self.tables.read().unwrap_or_else(|e| e.into_inner());
        tables.get(pod).map_or(0, |t| t.stamps.len())
    }

    fn hashes<'r>(&self, req: &PickRequest<'r>) -> std::borrow::Cow<'r, [u64]> {
        let compute = || {
            let mut v = Vec::new();
            block_hashes(self.cfg.block_size, req.model, req.prompt, &mut v);
            v
        };
        match req.block_hashes {
            Some(memo) => std::borrow::Cow::Borrowed(memo.get_or_init(compute).as_slice()),
            None => std::borrow::Cow::Owned(compute()),
        }
    }
}

impl Picker for PrefixCachePicker {
    fn name(&self) -> &'static str {
        "prefix-cache"
    }

    fn needs_prompt(&self) -> bool {
        true
    }

    fn score(&self, req: &PickRequest, pods: &[PodState]) -> Vec<Option<f64>> {
        let hashes = self.hashes(req);
        if hashes.is_empty() {
            return least_request_scores(pods);
        }
        let matched: Vec<usize> = {
            let tables = self.tables.read().unwrap_or_else(|e| e.into_inner());
            pods.iter()
                .map(|p| match tables.get(&p.id) {
                    Some(t) if p.healthy => t.leading_matches(&hashes),
                    _ => 0,
                })
                .collect()
        };
        // Best match; among equal matches the least-loaded pod.
        let best = pods
            .iter()
            .zip(&matched)
            .filter(|(p, &m)| p.healthy && m > 0)
            .max_by(|(a, ma), (b, mb)| ma.cmp(mb).then(b.in_flight.cmp(&a.in_flight)));
        let Some((best, _)) = best else {
            return least_request_scores(pods);
        };
        let min_load = pods
            .iter()
            .filter(|p| p.healthy)
            .map(|p| p.in_flight)
            .min()
            .unwrap_or(0);
        if best.in_flight > min_load.saturating_add(self.cfg.imbalance_threshold) {
            return least_request_scores(pods);
        }
        let total = hashes.len() as f64;
        pods.iter()
            .zip(matched)
            .map(|(p, m)| p.healthy.then(|| m as f64 / total))
            .collect()
    }

    fn observe(&self, req: &PickRequest, chosen: &PodId) {
        let hashes = self.hashes(req);
        if hashes.is_empty() {
            return;
        }
        let cap = self.cfg.max_blocks_per_pod.max(1);
        let mut tables = self.tables.write().unwrap_or_else(|e| e.into_inner());
        let table = match tables.get_mut(chosen) {
            Some(t) => t,
            None => tables.entry(chosen.clone()).or_default(),
        };
        // Touch from the last block to the first so that, under eviction
        // pressure, the tail of a prefix goes before its head.
        for &h in hashes.iter().rev() {
            table.touch(h, cap);
        }
    }

    fn forget(&self, pod: &PodId) {
        self.tables
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(pod);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{parse_strategy, pick, rank};
    use std::time::Instant;

    fn pods(n: usize) -> Vec<PodState> {
        (0..n)
            .map(|i| PodState::new(&format!("10.0.1.{i}:8000")))
            .collect()
    }

    fn system_prompt() -> String {
        "You are a meticulous assistant for Switchyard. Follow the policy below, \
         answer concisely, cite sources, never reveal secrets. "
            .repeat(14)
    }

    #[test]
    fn hashes_are_chained_and_full_blocks_only() {
        let mut a = Vec::new();
        block_hashes(4, None, "abcdabcdab", &mut a);
        assert_eq!(a.len(), 2, "partial tail block ignored");
        assert_ne!(
            a[0], a[1],
            "same bytes at another position hash differently"
        );
        let mut b = Vec::new();
        block_hashes(4, None, "abcdabcdXYZW", &mut b);
        assert_eq!(&b[..2], &a[..]);
        let mut c = Vec::new();
        block_hashes(4, None, "Xbcdabcd", &mut c);
        assert_ne!(c[1], a[1], "a changed first block changes every later hash");
        let mut d = Vec::new();
        block_hashes(4, Some("llama"), "abcdabcd", &mut d);
        assert_ne!(d[0], a[0], "model seeds the chain");
        let mut e = Vec::new();
        block_hashes(128, None, "short", &mut e);
        assert!(e.is_empty());
    }

    #[test]
    fn shared_system_prompt_sticks_to_one_pod_until_overloaded() {
        let picker = PrefixCachePicker::new(PrefixConfig::default());
        let mut ps = pods(8);
        let sys = system_prompt();
        assert!(sys.len() > 1500);
        let prompt = |q: usize| format!("{sys}\nuser: question number {q}, please help?");

        let first = prompt(0);
        let req = PickRequest {
            model: Some("llama-3-8b"),
            prompt: &first,
            ..Default::default()
        };
        let home = pick(&picker, &req, &ps).unwrap();
        picker.observe(&req, &home);
        let home_idx = ps.iter().position(|p| p.id == home).unwrap();

        for q in 1..30 {
            let text = prompt(q);
            let req = PickRequest {
                model: Some("llama-3-8b"),
                prompt: &text,
                ..Default::default()
            };
            let chosen = pick(&picker, &req, &ps).unwrap();
            assert_eq!(chosen, home, "request {q} left the cached pod");
            picker.observe(&req, &chosen);
            ps[home_idx].in_flight += 1; // the gateway counts it in flight
            if ps[home_idx].in_flight == 8 {
                break;
            }
        }
        // Other model: no affinity.
        let text = prompt(99);
        let other = PickRequest {
            model: Some("mistral-7b"),
            prompt: &text,
            ..Default::default()
        };
        assert_ne!(pick(&picker, &other, &ps).unwrap(), home);

        // At exactly threshold (8 over the least-loaded 0) affinity still holds.
        let req = PickRequest {
            model: Some("llama-3-8b"),
            prompt: &text,
            ..Default::default()
        };
        assert_eq!(ps[home_idx].in_flight, 8);
        assert_eq!(pick(&picker, &req, &ps).unwrap(), home);
        // One more and the guard routes to the least-loaded pods instead.
        ps[home_idx].in_flight = 9;
        ps[(home_idx + 1) % 8].in_flight = 1;
        for _ in 0..50 {
            let chosen = pick(&picker, &req, &ps).unwrap();
            assert_ne!(chosen, home);
            let c = ps.iter().find(|p| p.id == chosen).unwrap();
            assert_eq!(c.in_flight, 0);
        }
        // The home pod is ranked last (least-request order).
        assert_eq!(rank(&picker, &req, &ps).unwrap().last(), Some(&home));
    }

    #[test]
    fn partial_matches_score_proportionally() {
        let picker = PrefixCachePicker::new(PrefixConfig {
            block_size: 8,
            ..Default::default()
        });
        let ps = pods(3);
        let seen = "0123456701234567abcdefgh"; // 3 blocks
        picker.observe(
            &PickRequest {
                prompt: seen,
                ..Default::default()
            },
            &ps[1].id,
        );
        let req = PickRequest {
            prompt: "0123456701234567ZZZZZZZZzzzzzzzz", // 4 blocks, 2 shared
            ..Default::default()
        };
        assert_eq!(
            picker.score(&req, &ps),
            vec![Some(0.0), Some(0.5), Some(0.0)]
        );
        picker.forget(&ps[1].id);
        // No match anywhere: least-request scores (all idle -> all 1).
        assert_eq!(picker.score(&req, &ps), vec![Some(1.0); 3]);
    }

    #[test]
    fn lru_eviction_caps_blocks_per_pod() {
        let picker = PrefixCachePicker::new(PrefixConfig {
            block_size: 4,
            max_blocks_per_pod: 4,
            ..Default::default()
        });
        let ps = pods(2);
        let a = PickRequest {
            prompt: "aaaabbbbccccdddd",
            ..Default::default()
        };
        let b = PickRequest {
            prompt: "eeeeffff",
            ..Default::default()
        };
        picker.observe(&a, &ps[0].id);
        assert_eq!(picker.score(&a, &ps)[0], Some(1.0));
        picker.observe(&b, &ps[0].id);
        assert_eq!(picker.blocks_for(&ps[0].id), 4);
        // The two oldest-used blocks of `a` were its tail: the head still matches.
        assert_eq!(picker.score(&a, &ps)[0], Some(0.5));
        assert_eq!(picker.score(&b, &ps)[0], Some(1.0));
        // Many touches keep the lazy queue bounded.
        for _ in 0..1000 {
            picker.observe(&b, &ps[0].id);
        }
        let tables = picker.tables.read().unwrap();
        assert!(tables[&ps[0].id].order.len() <= 2 * 4 + 64 + 1);
    }

    #[test]
    fn unhealthy_pods_never_score() {
        let picker = PrefixCachePicker::new(PrefixConfig::default());
        let mut ps = pods(2);
        let sys = system_prompt();
        let req = PickRequest {
            prompt: &sys,
            ..Default::default()
        };
        picker.observe(&req, &ps[0].id);
        ps[0].healthy = false;
        assert_eq!(picker.score(&req, &ps), vec![None, Some(1.0)]);
    }

    #[test]
    fn pick_cost_for_8_pods_and_2kb_prompt() {
        let picker = parse_strategy("prefix-cache:2,least-request:1", &PrefixConfig::default())
            .expect("valid spec");
        let mut ps = pods(8);
        let sys = system_prompt();
        let prompts: Vec<String> = (0..16)
            .map(|i| {
                let mut p = format!("{i:04} {sys}{sys}");
                p.truncate(2048 - 64);
                p + &format!("user: question {i} with some extra text to fill")
            })
            .collect();
        let n = 1000;
        let start = Instant::now();
        for i in 0..n {
            let req = PickRequest {
                model: Some("llama-3-8b"),
                prompt: &prompts[i % prompts.len()],
                ..Default::default()
            };
            let chosen = pick(picker.as_ref(), &req, &ps).unwrap();
            picker.observe(&req, &chosen);
            ps[i % 8].in_flight = (i % 5) as u32;
        }
        let per = start.elapsed() / n as u32;
        eprintln!(
            "prefix-cache:2,least-request:1 over 8 pods, 2 KB prompt: {per:?} per pick+observe"
        );
        assert!(prompts.iter().all(|p| p.len() >= 2000));
        // Every distinct prompt was recorded somewhere: 15 full blocks each.
        let p = PrefixCachePicker::new(PrefixConfig::default());
        let req = PickRequest {
            prompt: &prompts[0],
            ..Default::default()
        };
        p.observe(&req, &ps[3].id);
        assert_eq!(p.blocks_for(&ps[3].id), prompts[0].len() / 128);
    }
}
