//! Regex guards: the built-in detectors, user patterns, and the scan that finds their matches,
//! whole or as text streams in.
//!
//! Every detector is a `regex` (linear time, compiled once per config) with an optional
//! post-check (Luhn, IBAN mod-97, SSN rules, an IPv6 parse). [`Scanner::next_match`] is the one
//! definition of a match: from a position, the candidate that starts first, the longest of
//! those, the first listed on a tie; the scan resumes after it. [`Stream`] runs the same scan on
//! text that arrives in pieces and emits only what no later text can change: a lazy DFA of
//! each detector, run anchored from each position of the tail, says whether a match could
//! still start there; the text before the first such position is final and sent at once. The
//! hold-back never exceeds the detector's longest match (plus one character). Positions whose
//! first byte already kills a detector's DFA are ruled out by a table, and positions found
//! closed stay closed, so each piece costs about its own length. All the detectors also make
//! one DFA, walked once per position instead of each detector's (those only where it cannot
//! tell: non-ASCII text next to a `\b`); when its walks pass no match, the sent text needs no
//! search either.

use config::{Builtin, GuardAction};
use regex::Regex;
use regex_automata::hybrid::dfa::{Cache, DFA};
use regex_automata::hybrid::LazyStateID;
use regex_automata::{Anchored, Input, MatchKind};

/// What a stream holds back for a pattern whose matches have no length bound (`.+`, `\w*`): a
/// longer match of such a pattern may be split and missed when it streams.
pub const MAX_UNBOUNDED_MATCH: usize = 256;
/// The largest hold-back a bounded user pattern gets (`.{0,100000}` holds back this much).
pub const MAX_BOUNDED_MATCH: usize = 64 * 1024;
/// Room after a match for the look-ahead of `\b` (one character, at most 4 bytes).
const LOOKAHEAD: usize = 4;

type Check = fn(&str) -> bool;

/// One compiled detector of one guard.
pub struct Detector {
    /// The guard it belongs to (index in the side's guard list).
    pub guard: usize,
    /// `email`, `creditCard`, ..., or `pattern`.
    pub kind: &'static str,
    pub placeholder: String,
    pub action: GuardAction,
    regex: Regex,
    check: Option<Check>,
    /// The longest match, in bytes.
    max_len: usize,
    /// Every match contains this literal within `.1` bytes of its start: lets a stream emit
    /// text sooner when the literal is absent.
    anchor: Option<(&'static str, usize)>,
    /// The same pattern as a lazy DFA (`None` if it cannot be built: then only the length
    /// bound and the anchor decide the hold-back).
    dfa: Option<DFA>,
    /// Which first bytes the DFA survives after which ASCII byte before them.
    firsts: Option<Firsts>,
}

/// Per ASCII byte before a start: the bytes a match can begin with there (bit sets). Most
/// starts of a text are ruled out by their first byte alone, without running the DFA.
struct Firsts {
    row_of: [u8; 128],
    rows: Vec<[u64; 4]>,
}

impl Firsts {
    /// Reads the DFA's first step from every (byte before, first byte) pair; a step it cannot
    /// say (a quit byte, an error) counts as possible.
    fn of(dfa: &DFA) -> Option<Firsts> {
        let mut cache = dfa.create_cache();
        let clears = cache.clear_count();
        let mut row_of = [0u8; 128];
        // One row per distinct start state (the byte before only picks one of a few).
        let mut starts: Vec<(Option<LazyStateID>, [u64; 4])> = Vec::new();
        for prev in 0..128u8 {
            let before = [prev];
            let input = Input::new(&before).range(1..).anchored(Anchored::Yes);
            let start = dfa.start_state_forward(&mut cache, &input).ok();
            let at = match starts.iter().position(|(s, _)| *s == start) {
                Some(at) => at,
                None => {
                    let mut row = [u64::MAX; 4];
                    if let Some(sid) = start.filter(|s| !s.is_quit()) {
                        for b in 0..=255u8 {
                            let dead = sid.is_dead()
                                || dfa
                                    .next_state(&mut cache, sid, b)
                                    .is_ok_and(|n| n.is_dead());
                            if dead {
                                row[(b >> 6) as usize] &= !(1 << (b & 63));
                            }
                        }
                    }
                    starts.push((start, row));
                    starts.len() - 1
                }
            };
            row_of[prev as usize] = u8::try_from(at).ok()?;
        }
        // A cleared cache may have renamed the states compared above.
        if cache.clear_count() != clears {
            return None;
        }
        let rows = starts.into_iter().map(|(_, row)| row).collect();
        Some(Firsts { row_of, rows })
    }

    /// The bytes any of `all` allows.
    fn union(all: &[&Firsts]) -> Option<Firsts> {
        let mut row_of = [0u8; 128];
        let mut rows: Vec<[u64; 4]> = Vec::new();
        for (prev, row_at) in row_of.iter_mut().enumerate() {
            let mut row = [0u64; 4];
            for f in all {
                let r = &f.rows[f.row_of[prev] as usize];
                for (w, x) in row.iter_mut().zip(r) {
                    *w |= x;
                }
            }
            let at = rows.iter().position(|r| *r == row).unwrap_or_else(|| {
                rows.push(row);
                rows.len() - 1
            });
            *row_at = u8::try_from(at).ok()?;
        }
        Some(Firsts { row_of, rows })
    }

    /// Whether a match may start at `p` (`false`: the DFA dies on its first byte).
    fn may_start(&self, text: &[u8], p: usize) -> bool {
        let (Some(&prev), Some(&b)) = (p.checked_sub(1).and_then(|i| text.get(i)), text.get(p))
        else {
            return true;
        };
        if !prev.is_ascii() {
            return true;
        }
        let row = &self.rows[self.row_of[prev as usize] as usize];
        row[(b >> 6) as usize] >> (b & 63) & 1 == 1
    }
}

/// Where starts end that `lit` may still begin within `pre` bytes of (text yet to come).
fn unseen(len: usize, lit: &str, pre: usize) -> usize {
    len.saturating_sub(pre + lit.len() - 1)
}

/// The first `lit` in `hay` (a literal of a few bytes in a short tail: a scan for its first
/// byte beats setting up a substring search).
fn find_lit(hay: &[u8], lit: &[u8]) -> Option<usize> {
    let (&first, rest) = lit.split_first()?;
    let mut at = 0;
    while let Some(i) = hay[at..].iter().position(|&b| b == first) {
        let p = at + i;
        if hay[p + 1..].starts_with(rest) {
            return Some(p);
        }
        at = p + 1;
    }
    None
}

/// The lazy DFA of a pattern; Unicode `\b` gives up on non-ASCII text (held back then).
fn lazy_dfa(pattern: &str) -> Option<DFA> {
    DFA::builder()
        .configure(DFA::config().unicode_word_boundary(true))
        .build(pattern)
        .ok()
}

/// DFA steps one hold-back decision may take per detector; past it the rest of the tail is
/// held (never less safe, and the work per chunk stays linear).
const DFA_BUDGET: usize = 1 << 18;

/// Every detector's pattern as one lazy DFA that keeps all their threads (`MatchKind::All`:
/// no thread is dropped for a match of another pattern), so it dies at a start exactly when
/// every detector's DFA would (or later: never sooner).
fn union_dfa(patterns: &[&str]) -> Option<DFA> {
    let config = DFA::config()
        .unicode_word_boundary(true)
        .match_kind(MatchKind::All);
    DFA::builder().configure(config).build_many(patterns).ok()
}

/// What a walk of a DFA from a start says.
enum Walk {
    /// No match can start there, whatever text follows.
    Closed,
    /// A match may still start there.
    Open,
    /// The DFA could not tell (a quit byte, an error, the budget spent).
    Unsure,
}

/// Walks `dfa` anchored at `p` over the rest of `text`: whether a match could still start
/// there given more text. `matched` is set when the walk passes a match (of any pattern,
/// ending anywhere in `text`).
fn walk_at(
    dfa: &DFA,
    cache: &mut Cache,
    text: &str,
    p: usize,
    budget: &mut usize,
    matched: &mut bool,
) -> Walk {
    let input = Input::new(text).range(p..).anchored(Anchored::Yes);
    let Ok(mut sid) = dfa.start_state_forward(cache, &input) else {
        return Walk::Unsure;
    };
    for &b in &text.as_bytes()[p..] {
        if sid.is_dead() {
            return Walk::Closed;
        }
        if sid.is_quit() || *budget == 0 {
            return Walk::Unsure;
        }
        *budget -= 1;
        match dfa.next_state(cache, sid, b) {
            Ok(s) => sid = s,
            Err(_) => return Walk::Unsure,
        }
        *matched |= sid.is_match();
    }
    if sid.is_dead() {
        Walk::Closed
    } else {
        Walk::Open
    }
}

/// Whether a match of `dfa` could start at `p` given more text than `text` has (a start the
/// DFA cannot decide counts as open).
fn open_at(dfa: &DFA, cache: &mut Cache, text: &str, p: usize, budget: &mut usize) -> bool {
    !matches!(
        walk_at(dfa, cache, text, p, budget, &mut false),
        Walk::Closed
    )
}

/// A built-in detector's parts, before it joins a guard.
struct Spec {
    kind: &'static str,
    placeholder: &'static str,
    pattern: &'static str,
    check: Option<Check>,
    anchor: Option<(&'static str, usize)>,
}

const fn spec(
    kind: &'static str,
    placeholder: &'static str,
    pattern: &'static str,
    check: Option<Check>,
    anchor: Option<(&'static str, usize)>,
) -> Spec {
    Spec {
        kind,
        placeholder,
        pattern,
        check,
        anchor,
    }
}

fn specs(b: Builtin) -> Vec<Spec> {
    match b {
        Builtin::Email => vec![spec(
            "email",
            "<EMAIL>",
            r"(?i)\b[a-z0-9][a-z0-9._%+-]{0,63}@(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.){1,4}[a-z]{2,24}\b",
            None,
            Some(("@", 64)),
        )],
        Builtin::Phone => vec![spec(
            "phone",
            "<PHONE>",
            concat!(
                // E.164 and international: +CC then groups (spaces, dots, dashes, parentheses).
                r"\+[1-9][0-9]{0,2}(?:[ .-]?\(?[0-9]{1,4}\)?){2,5}\b",
                // North American: (415) 555-2671, 415-555-2671, 415.555.2671.
                r"|(?:\([2-9][0-9]{2}\)[ ]?|\b[2-9][0-9]{2}[ .-])[2-9][0-9]{2}[ .-][0-9]{4}\b",
                // National with a trunk 0: 020 7946 0958, 030-1234-5678, 06 12 34 56 78.
                r"|\b0[1-9][0-9]{0,3}(?:[ -][0-9]{2,4}){2,4}\b",
            ),
            Some(phone_digits),
            None,
        )],
        Builtin::CreditCard => vec![spec(
            "creditCard",
            "<CREDIT_CARD>",
            r"\b[2-6][0-9](?:[ -]?[0-9]){11,17}\b",
            Some(card),
            None,
        )],
        Builtin::Ssn => vec![spec(
            "ssn",
            "<SSN>",
            r"\b[0-9]{3}[- ][0-9]{2}[- ][0-9]{4}\b",
            Some(ssn),
            None,
        )],
        Builtin::Iban => vec![spec(
            "iban",
            "<IBAN>",
            r"\b[A-Z]{2}[0-9]{2}(?:[ ]?[A-Z0-9]){11,30}\b",
            Some(iban),
            None,
        )],
        Builtin::Ip => vec![
            spec(
                "ip",
                "<IP>",
                r"\b(?:(?:25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])\.){3}(?:25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])\b",
                None,
                None,
            ),
            spec(
                "ip",
                "<IP>",
                r"(?:\b[0-9A-Fa-f]{1,4}|\B:)(?::[0-9A-Fa-f]{0,4}){1,7}\b",
                Some(ipv6),
                Some((":", 5)),
            ),
        ],
        Builtin::Secrets => vec![
            spec(
                "secrets",
                "<SECRET>",
                r"\b(?:AKIA|ASIA|ABIA|ACCA)[0-9A-Z]{16}\b",
                None,
                None,
            ),
            spec(
                "secrets",
                "<SECRET>",
                r"\bgh[pousr]_[A-Za-z0-9]{36,255}\b",
                None,
                Some(("gh", 0)),
            ),
            spec(
                "secrets",
                "<SECRET>",
                r"\bgithub_pat_[A-Za-z0-9_]{22,255}\b",
                None,
                Some(("github_pat_", 0)),
            ),
            // OpenAI (sk-, sk-proj-, sk-svcacct-) and Anthropic (sk-ant-api03-...) keys.
            spec(
                "secrets",
                "<SECRET>",
                r"\bsk-[A-Za-z0-9_-]{20,200}",
                None,
                Some(("sk-", 0)),
            ),
            spec(
                "secrets",
                "<SECRET>",
                r"\bxox[abposr]-[A-Za-z0-9-]{10,200}",
                None,
                Some(("xox", 0)),
            ),
            spec(
                "secrets",
                "<SECRET>",
                r"-----BEGIN [A-Z ]{0,20}PRIVATE KEY-----[A-Za-z0-9+/=\s:,-]{0,4096}?-----END [A-Z ]{0,20}PRIVATE KEY-----",
                None,
                Some(("-----BEGIN ", 0)),
            ),
            spec(
                "secrets",
                "<SECRET>",
                r"\beyJ[A-Za-z0-9_-]{5,2048}\.eyJ[A-Za-z0-9_-]{5,4096}\.[A-Za-z0-9_-]{10,1024}",
                None,
                Some(("eyJ", 0)),
            ),
        ],
    }
}

/// The longest match of a pattern in bytes, `None` when unbounded.
fn max_len(pattern: &str) -> Option<usize> {
    regex_syntax::Parser::new()
        .parse(pattern)
        .ok()
        .and_then(|h| h.properties().maximum_len())
}

/// The detectors of one side (`request` or `response`), every guard's, in guard order.
pub struct Scanner {
    pub detectors: Vec<Detector>,
    /// Lazy DFA caches, lent to a stream for one hold-back decision: the states a DFA built
    /// for one answer serve the others (building them again per answer cost more than the
    /// scan).
    pool: std::sync::Mutex<Vec<Vec<Option<Cache>>>>,
    /// Every detector's pattern in one set: one pass says whether any detector matches at all
    /// past a position (most text streams by matching none), instead of one search each.
    any: Option<regex::RegexSet>,
    /// The first bytes any detector's DFA allows (`None`: some DFA has no table).
    firsts: Option<Firsts>,
    /// Every detector in one DFA (`None` when some detector has none, or it cannot be
    /// built): a hold-back decision walks it once per start instead of each detector's; its
    /// cache is the last of a stream's caches.
    union: Option<DFA>,
}

/// Cache sets the pool keeps at most (one per answer streaming at once is plenty).
const POOLED_CACHES: usize = 64;

/// Where a detector's search stands (see [`Scanner::next_match`]).
#[derive(Debug, Clone, Copy)]
pub enum Next {
    /// No valid match starts before this offset; search from here.
    From(usize),
    /// Its next valid match.
    At(Match),
    /// No more matches in this text.
    Never,
}

/// One match: where, and which detector.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Match {
    pub start: usize,
    pub end: usize,
    pub detector: usize,
}

impl Scanner {
    pub fn compile(guards: &[config::Guard]) -> Result<Self, String> {
        let mut detectors = Vec::new();
        for (gi, g) in guards.iter().enumerate() {
            // Remote guards (webhook, moderation) are not detectors.
            let Some(rx) = &g.regex else {
                continue;
            };
            let placeholder = |default: &str| g.placeholder.clone().unwrap_or(default.into());
            for b in &rx.builtins {
                for s in specs(*b) {
                    detectors.push(Detector {
                        guard: gi,
                        kind: s.kind,
                        placeholder: placeholder(s.placeholder),
                        action: g.action,
                        regex: Regex::new(s.pattern).map_err(|e| e.to_string())?,
                        check: s.check,
                        max_len: max_len(s.pattern).unwrap_or(MAX_UNBOUNDED_MATCH),
                        anchor: s.anchor,
                        dfa: None,
                        firsts: None,
                    });
                }
            }
            for p in &rx.patterns {
                let regex =
                    Regex::new(p).map_err(|e| format!("guard {:?}: pattern {p:?}: {e}", g.name))?;
                detectors.push(Detector {
                    guard: gi,
                    kind: "pattern",
                    placeholder: placeholder("<REDACTED>"),
                    action: g.action,
                    regex,
                    check: None,
                    max_len: max_len(p)
                        .unwrap_or(MAX_UNBOUNDED_MATCH)
                        .min(MAX_BOUNDED_MATCH),
                    anchor: None,
                    dfa: None,
                    firsts: None,
                });
            }
        }
        for d in &mut detectors {
            d.dfa = lazy_dfa(d.regex.as_str());
            d.firsts = d.dfa.as_ref().and_then(Firsts::of);
        }
        // Without the set (too large to build), each detector searches on its own: the same
        // answers, slower.
        let any = regex::RegexSetBuilder::new(detectors.iter().map(|d| d.regex.as_str()))
            .size_limit(256 << 20)
            .dfa_size_limit(8 << 20)
            .build()
            .ok();
        let with_dfa = || detectors.iter().filter(|d| d.dfa.is_some());
        let firsts = with_dfa()
            .map(|d| d.firsts.as_ref())
            .collect::<Option<Vec<_>>>()
            .and_then(|all| Firsts::union(&all));
        let union = match detectors.iter().all(|d| d.dfa.is_some()) && !detectors.is_empty() {
            true => union_dfa(
                &detectors
                    .iter()
                    .map(|d| d.regex.as_str())
                    .collect::<Vec<_>>(),
            ),
            false => None,
        };
        Ok(Scanner {
            detectors,
            pool: std::sync::Mutex::new(Vec::new()),
            any,
            firsts,
            union,
        })
    }

    /// The first match starting at or after `from` (see the module docs for which one).
    /// `next` remembers, per detector, where its search got to: a scan over one text calls
    /// this with growing `from` and the same `next`, so each detector reads the text once.
    pub fn next_match(&self, text: &str, from: usize, next: &mut Vec<Next>) -> Option<Match> {
        next.resize(self.detectors.len(), Next::From(0));
        // No detector matches anywhere past `from`, and none has a match found already there.
        if let Some(set) = &self.any {
            let found = next
                .iter()
                .any(|n| matches!(n, Next::At(m) if m.start >= from));
            if !found && from <= text.len() && !set.is_match_at(text, from) {
                next.iter_mut().for_each(|n| *n = Next::Never);
                return None;
            }
        }
        let mut best: Option<Match> = None;
        for (di, d) in self.detectors.iter().enumerate() {
            loop {
                match next[di] {
                    Next::Never => break,
                    Next::At(m) if m.start >= from => {
                        let better = match best {
                            None => true,
                            Some(b) => m.start < b.start || (m.start == b.start && m.end > b.end),
                        };
                        if better {
                            best = Some(m);
                        }
                        break;
                    }
                    Next::At(_) => next[di] = Next::From(from),
                    Next::From(at) => {
                        let at = at.max(from);
                        if at > text.len() || best.is_some_and(|b| at > b.start) {
                            // Cannot start early enough to win: look later, if ever.
                            next[di] = Next::From(at);
                            break;
                        }
                        next[di] = match d.regex.find_at(text, at) {
                            None => Next::Never,
                            // Not this one: look again from the next character.
                            Some(m) if m.is_empty() || d.check.is_some_and(|c| !c(m.as_str())) => {
                                Next::From(
                                    m.start()
                                        + text[m.start()..]
                                            .chars()
                                            .next()
                                            .map_or(1, char::len_utf8),
                                )
                            }
                            Some(m) => Next::At(Match {
                                start: m.start(),
                                end: m.end(),
                                detector: di,
                            }),
                        };
                    }
                }
            }
        }
        best
    }

    /// Bytes of `text` (from `from`) known to decide nothing more: every match starting before
    /// the returned offset is final whatever text follows. `true` with it: no match starts
    /// between `from` and that offset (the combined DFA walked every start there, and passed
    /// no match), so there is none to look for.
    fn settled(&self, s: &mut Stream) -> (usize, bool) {
        let Stream {
            buf,
            pos: from,
            caches,
            drained,
            closed,
            starts,
            ..
        } = s;
        let (text, from, drained) = (buf.as_str(), *from, *drained);
        let bytes = text.as_bytes();
        let len = text.len();
        let mut settled = len;
        if caches.is_empty() {
            if let Some(pooled) = self.pool.lock().unwrap_or_else(|p| p.into_inner()).pop() {
                *caches = pooled;
            }
        }
        caches.resize_with(self.detectors.len() + 1, || None);
        closed.resize(self.detectors.len(), 0);
        // Starts no detector has closed yet that some detector's first byte allows: found once
        // for all detectors (in prose, the starts of some words).
        let lo = match self.union {
            // Every detector has a DFA (and the detectors are not read).
            Some(_) => closed.iter().min(),
            None => (self.detectors.iter().zip(closed.iter()))
                .filter(|(d, _)| d.dfa.is_some())
                .map(|(_, c)| c)
                .min(),
        };
        let lo = lo.map_or(len, |c| c.saturating_sub(drained));
        starts.clear();
        starts.extend((lo.max(from)..len).filter(|&p| {
            text.is_char_boundary(p) && self.firsts.as_ref().is_none_or(|f| f.may_start(bytes, p))
        }));
        // The combined DFA: the first start it leaves open is the first start some detector's
        // DFA leaves open (the length bounds and anchors only spare DFA steps: a DFA alive at
        // a start is within them). A start it cannot decide (non-ASCII text next to a `\b`)
        // takes the per-detector read below, whose bounds settle such starts.
        let (caches, union_cache) = caches.split_at_mut(self.detectors.len());
        if let (Some(dfa), Some(cache)) = (&self.union, union_cache.first_mut()) {
            let cache = cache.get_or_insert_with(|| dfa.create_cache());
            let mut budget = DFA_BUDGET;
            let mut first_open = Some(len);
            let mut matched = false;
            for &p in starts.iter() {
                // Only the closed starts before the first open one count: matches starting
                // there or later are not acted on yet.
                let mut here = false;
                match walk_at(dfa, cache, text, p, &mut budget, &mut here) {
                    Walk::Closed => {
                        matched |= here;
                        continue;
                    }
                    Walk::Open => first_open = Some(p),
                    Walk::Unsure => first_open = None,
                }
                break;
            }
            if let Some(first_open) = first_open {
                for c in closed.iter_mut() {
                    *c = (*c).max(drained + first_open);
                }
                // Starts below `lo` were closed by an earlier decision, not walked here.
                return (first_open, lo <= from && !matched);
            }
        }
        let iter = self.detectors.iter().zip(caches.iter_mut());
        for ((d, cache), closed) in iter.zip(closed.iter_mut()) {
            // Starts found closed on an earlier piece stay closed (the DFA died on text that
            // is still there): only the first open start and later ones are read again.
            let known = closed.saturating_sub(drained).min(len);
            let window = len.saturating_sub(d.max_len + LOOKAHEAD);
            let s = match d.anchor {
                // Past `known` and `from` the anchor cannot move the DFA's first start.
                Some((lit, pre))
                    if !(d.dfa.is_some()
                        && unseen(len, lit, pre).max(window) <= known.max(from)) =>
                {
                    // A start p is undecided only if `lit` may begin in [p, p + pre].
                    let unseen = unseen(len, lit, pre);
                    let search = window.max(from);
                    let first = bytes
                        .get(search..)
                        .and_then(|t| find_lit(t, lit.as_bytes()))
                        .map(|i| (search + i).saturating_sub(pre));
                    match first {
                        Some(q) => q.min(unseen).max(window),
                        None => unseen.max(window),
                    }
                }
                _ => window,
            };
            // Past the bounds, the first position a match could still start at.
            let s = match &d.dfa {
                Some(dfa) if s < len => {
                    let cache = cache.get_or_insert_with(|| dfa.create_cache());
                    let mut budget = DFA_BUDGET;
                    let lower = s.max(from).max(known);
                    let open = starts[starts.partition_point(|&p| p < lower)..]
                        .iter()
                        .copied()
                        .filter(|&p| d.firsts.as_ref().is_none_or(|f| f.may_start(bytes, p)))
                        .find(|&p| open_at(dfa, cache, text, p, &mut budget));
                    let first_open = open.unwrap_or(len);
                    *closed = (*closed).max(drained + first_open);
                    first_open
                }
                _ => s,
            };
            settled = settled.min(s);
        }
        (settled, false)
    }

    /// Masks a whole text: `(masked, hits)`. A hit of a `reject` guard stops the scan.
    pub fn apply(&self, text: &str) -> Outcome {
        self.whole(Stream::default(), text)
    }

    /// [`Scanner::apply`] on JSON text (tool-call arguments): placeholders are escaped.
    pub fn apply_json(&self, text: &str) -> Outcome {
        self.whole(Stream::json(), text)
    }

    /// A whole text is its stream's last piece: scanned to its end at once, with no decision
    /// on what to hold back.
    fn whole(&self, mut s: Stream, text: &str) -> Outcome {
        let mut out = Outcome::default();
        s.buf.push_str(text);
        self.step(&mut s, true, &mut out);
        out
    }

    /// More text of a stream: what can be sent now.
    pub fn feed(&self, s: &mut Stream, text: &str) -> Outcome {
        let mut out = Outcome::default();
        self.feed_to(s, text, &mut out);
        out
    }

    /// [`Scanner::feed`] into `out`: the text to send is appended to `out.text`, hits to
    /// `out.hits` (so a caller streaming many pieces reuses one buffer).
    pub fn feed_to(&self, s: &mut Stream, text: &str, out: &mut Outcome) {
        s.buf.push_str(text);
        self.step(s, false, out);
    }

    /// The stream's end: what it held back.
    pub fn finish(&self, s: &mut Stream) -> Outcome {
        let mut out = Outcome::default();
        self.step(s, true, &mut out);
        self.give_back(&mut s.caches);
        out
    }

    /// Returns a stream's DFA caches to the pool (if it has any and the pool has room).
    fn give_back(&self, caches: &mut Vec<Option<Cache>>) {
        if !caches.is_empty() {
            let mut pool = self.pool.lock().unwrap_or_else(|p| p.into_inner());
            if pool.len() < POOLED_CACHES {
                pool.push(std::mem::take(caches));
            }
        }
    }

    fn step(&self, s: &mut Stream, last: bool, out: &mut Outcome) {
        // `quiet`: no match starts before `limit`, none to look for.
        let (limit, quiet) = match last {
            true => (s.buf.len(), false),
            false => {
                let settled = self.settled(s);
                // Back to the pool at once: the few sets in use at a time stay in the CPU's
                // caches, where one set per open stream would not.
                self.give_back(&mut s.caches);
                settled
            }
        };
        let mut pos = s.pos;
        // Only matches starting before `limit` are acted on: with nothing settled past the
        // sent text there is none to look for.
        let mut next = std::mem::take(&mut s.next);
        next.clear();
        while let Some(m) = (pos < limit && !quiet)
            .then(|| self.next_match(&s.buf, pos, &mut next))
            .flatten()
            .filter(|m| m.start < limit)
        {
            let d = &self.detectors[m.detector];
            out.hits.push(m.detector);
            if d.action == GuardAction::Reject {
                out.rejected = Some(m.detector);
                s.next = next;
                return;
            }
            out.text.push_str(&s.buf[pos..m.start]);
            match d.action {
                // Inside JSON text (tool-call arguments) a placeholder is written as JSON
                // string content, so quotes or backslashes in it keep the arguments valid.
                GuardAction::Mask if s.json => {
                    let q = serde_json::to_string(&d.placeholder).unwrap_or_default();
                    out.text.push_str(&q[1..q.len().saturating_sub(1).max(1)]);
                }
                GuardAction::Mask => out.text.push_str(&d.placeholder),
                _ => out.text.push_str(&s.buf[m.start..m.end]),
            }
            pos = m.end;
        }
        let mut upto = limit.max(pos);
        while !s.buf.is_char_boundary(upto) {
            upto -= 1;
        }
        out.text.push_str(&s.buf[pos..upto]);
        // Keep one character before the resume point for `\b`.
        let mut keep = upto.saturating_sub(LOOKAHEAD);
        while !s.buf.is_char_boundary(keep) {
            keep -= 1;
        }
        s.buf.drain(..keep);
        s.drained += keep;
        s.pos = upto - keep;
        s.next = next;
    }

    /// The longest hold-back any of these detectors may need, in bytes.
    pub fn max_hold(&self) -> usize {
        self.detectors
            .iter()
            .map(|d| d.max_len + LOOKAHEAD)
            .max()
            .unwrap_or(0)
    }
}

/// A text in the making: what is not yet sent, after a little context.
#[derive(Default, Debug, Clone)]
pub struct Stream {
    buf: String,
    /// Where the unsent text starts in `buf`.
    pos: usize,
    /// The starts a hold-back decision reads (kept for its allocation).
    starts: Vec<usize>,
    /// Each detector's lazy DFA cache, taken from the scanner's pool for one hold-back
    /// decision.
    caches: Vec<Option<Cache>>,
    /// The text is JSON (tool-call arguments): placeholders are escaped as string content.
    json: bool,
    /// Bytes dropped from the front of `buf` so far (offsets below are of the whole text).
    drained: usize,
    /// Per detector: every match starting before this offset is final (its DFA died there).
    closed: Vec<usize>,
    /// The scan's per-detector progress, kept for its allocation.
    next: Vec<Next>,
}

impl Stream {
    /// A stream of JSON text (tool-call arguments, `partial_json`).
    pub fn json() -> Self {
        Stream {
            json: true,
            ..Default::default()
        }
    }
}

/// What a scan produced.
#[derive(Default, Debug)]
pub struct Outcome {
    /// The text to send (masked).
    pub text: String,
    /// Detectors that matched (audit and mask hits), in order.
    pub hits: Vec<usize>,
    /// A `reject` guard's detector matched: nothing more is sent.
    pub rejected: Option<usize>,
}

fn digits(s: &str) -> Vec<u8> {
    s.bytes()
        .filter(u8::is_ascii_digit)
        .map(|b| b - b'0')
        .collect()
}

fn phone_digits(s: &str) -> bool {
    (7..=15).contains(&digits(s).len())
}

/// 13–19 digits with a valid Luhn check digit, separators used consistently.
fn card(s: &str) -> bool {
    let d = digits(s);
    if !(13..=19).contains(&d.len()) {
        return false;
    }
    let seps: Vec<u8> = s.bytes().filter(|b| !b.is_ascii_digit()).collect();
    if seps.windows(2).any(|w| w[0] != w[1]) {
        return false;
    }
    let sum: u32 = d
        .iter()
        .rev()
        .enumerate()
        .map(|(i, &x)| {
            let x = x as u32;
            if i % 2 == 1 {
                let y = x * 2;
                if y > 9 {
                    y - 9
                } else {
                    y
                }
            } else {
                x
            }
        })
        .sum();
    matches!(sum % 10, 0)
}

/// US SSN: area not 000, 666 or 9xx; group not 00; serial not 0000; one separator kind.
fn ssn(s: &str) -> bool {
    let b = s.as_bytes();
    if b[3] != b[6] {
        return false;
    }
    let d = digits(s);
    let area = d[0] as u32 * 100 + d[1] as u32 * 10 + d[2] as u32;
    area != 0 && area != 666 && area < 900 && d[3..5] != [0, 0] && d[5..9] != [0, 0, 0, 0]
}

/// IBAN: 15–34 characters, mod-97 of the rearranged number is 1.
fn iban(s: &str) -> bool {
    let compact: Vec<u8> = s.bytes().filter(|b| *b != b' ').collect();
    if !(15..=34).contains(&compact.len()) {
        return false;
    }
    let rearranged = compact[4..].iter().chain(&compact[..4]);
    let mut rem: u32 = 0;
    for &c in rearranged {
        let v = match c {
            b'0'..=b'9' => (c - b'0') as u32,
            b'A'..=b'Z' => (c - b'A') as u32 + 10,
            _ => return false,
        };
        rem = if v >= 10 {
            (rem * 100 + v) % 97
        } else {
            (rem * 10 + v) % 97
        };
    }
    rem == 1
}

/// A real IPv6 address (not a time like 12:30:45 or a path like `Vec::new`), in full or `::`
/// form, ending in a group.
fn ipv6(s: &str) -> bool {
    s.ends_with(|c: char| c.is_ascii_hexdigit())
        && s.parse::<std::net::Ipv6Addr>().is_ok()
        && (s.contains("::") || s.matches(':').count() == 7)
}

#[cfg(test)]
mod tests {
    use super::*;
    use config::{Guard, RegexGuard};

    fn guard(builtins: &[Builtin], patterns: &[&str], action: GuardAction) -> Guard {
        Guard {
            name: "g".into(),
            regex: Some(RegexGuard {
                builtins: builtins.to_vec(),
                patterns: patterns.iter().map(|p| p.to_string()).collect(),
            }),
            webhook: None,
            moderation: None,
            action,
            placeholder: None,
        }
    }

    fn masked(b: Builtin, text: &str) -> String {
        Scanner::compile(&[guard(&[b], &[], GuardAction::Mask)])
            .unwrap()
            .apply(text)
            .text
    }

    const EVERY_BUILTIN: [Builtin; 7] = [
        Builtin::Email,
        Builtin::Phone,
        Builtin::CreditCard,
        Builtin::Ssn,
        Builtin::Iban,
        Builtin::Ip,
        Builtin::Secrets,
    ];

    #[test]
    fn every_builtin_is_bounded() {
        for b in EVERY_BUILTIN {
            for s in specs(b) {
                assert!(max_len(s.pattern).is_some(), "{}", s.pattern);
            }
        }
    }

    #[test]
    fn email() {
        assert_eq!(
            masked(Builtin::Email, "mail jane.doe+x@mail.example.co.uk now"),
            "mail <EMAIL> now"
        );
        assert_eq!(
            masked(Builtin::Email, "a@b, x@localhost"),
            "a@b, x@localhost"
        );
    }

    #[test]
    fn phone() {
        for t in [
            "+14155552671",
            "+44 20 7946 0958",
            "(415) 555-2671",
            "415-555-2671",
            "415.555.2671",
            "020 7946 0958",
            "06 12 34 56 78",
        ] {
            assert_eq!(
                masked(Builtin::Phone, &format!("call {t}.")),
                "call <PHONE>.",
                "{t}"
            );
        }
        for t in ["version 1.2.3", "in 2024 we", "4155552671", "+1 2"] {
            assert_eq!(masked(Builtin::Phone, t), t);
        }
    }

    #[test]
    fn credit_card_needs_luhn() {
        assert_eq!(
            masked(Builtin::CreditCard, "card 4111 1111 1111 1111 ok"),
            "card <CREDIT_CARD> ok"
        );
        assert_eq!(
            masked(Builtin::CreditCard, "5500-0000-0000-0004"),
            "<CREDIT_CARD>"
        );
        assert_eq!(
            masked(Builtin::CreditCard, "378282246310005"),
            "<CREDIT_CARD>"
        );
        // Fails Luhn, mixed separators, too short.
        for t in [
            "4111 1111 1111 1112",
            "4111-1111 1111-1111",
            "4111 1111 1111",
        ] {
            assert_eq!(masked(Builtin::CreditCard, t), t);
        }
    }

    #[test]
    fn ssn_rules() {
        assert_eq!(masked(Builtin::Ssn, "ssn 123-45-6789."), "ssn <SSN>.");
        for t in [
            "000-12-3456",
            "666-12-3456",
            "912-12-3456",
            "123-00-6789",
            "123-45-0000",
            "123-45 6789",
            "1234-56-7890",
        ] {
            assert_eq!(masked(Builtin::Ssn, t), t);
        }
    }

    #[test]
    fn iban_checksum() {
        assert_eq!(
            masked(Builtin::Iban, "to DE89 3704 0044 0532 0130 00 please"),
            "to <IBAN> please"
        );
        assert_eq!(masked(Builtin::Iban, "GB29NWBK60161331926819"), "<IBAN>");
        // One digit off: the checksum fails.
        assert_eq!(
            masked(Builtin::Iban, "GB29NWBK60161331926818"),
            "GB29NWBK60161331926818"
        );
    }

    #[test]
    fn ip() {
        assert_eq!(masked(Builtin::Ip, "from 192.168.0.1:80"), "from <IP>:80");
        assert_eq!(
            masked(Builtin::Ip, "to 2001:db8::8a2e:370:7334 ok"),
            "to <IP> ok"
        );
        assert_eq!(masked(Builtin::Ip, "fe80::1 and ::1"), "<IP> and <IP>");
        for t in [
            "256.1.1.1",
            "at 12:30:45",
            "std::collections::HashMap",
            "1.2.3",
        ] {
            assert_eq!(masked(Builtin::Ip, t), t);
        }
    }

    #[test]
    fn secrets() {
        for t in [
            "AKIAIOSFODNN7EXAMPLE",
            "ghp_0123456789abcdefghijABCDEFGHIJ012345",
            "github_pat_11ABCDEFG0123456789_abcdefghijklmnopqrstuvwxyz",
            "sk-proj-abcdefghijklmnopqrstuvwxyz012345",
            "sk-ant-api03-abcdefghijklmnopqrstuvwxyz_0123",
            "xoxb-1234567890-abcdefghij",
            "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0In0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U",
            "-----BEGIN RSA PRIVATE KEY-----\nMIIBOgIBAAJBAKj34GkxFhD90vcNLYLInFEX6Ppy1tPf9Cnzj4p4WGeKLs1Pt8Qu\n-----END RSA PRIVATE KEY-----",
        ] {
            assert_eq!(masked(Builtin::Secrets, &format!("key: {t} end")), "key: <SECRET> end", "{t}");
        }
        for t in ["task-based", "sk-short", "AKIA1234", "eyJhbGc alone"] {
            assert_eq!(masked(Builtin::Secrets, t), t);
        }
    }

    #[test]
    fn leftmost_then_longest_across_guards_and_placeholders() {
        let mut custom = guard(&[], &["ACME-[0-9]{4}"], GuardAction::Mask);
        custom.placeholder = Some("[ticket]".into());
        let s = Scanner::compile(&[
            guard(&[Builtin::Phone], &[], GuardAction::Audit),
            guard(&[Builtin::Ssn], &[], GuardAction::Mask),
            custom,
        ])
        .unwrap();
        let out = s.apply("ACME-1234 123-45-6789 call +1 415 555 2671");
        assert_eq!(out.text, "[ticket] <SSN> call +1 415 555 2671");
        assert_eq!(out.hits.len(), 3);
        let reject =
            Scanner::compile(&[guard(&[Builtin::Email], &[], GuardAction::Reject)]).unwrap();
        assert!(reject.apply("x a@example.com").rejected.is_some());
        assert!(reject.apply("nothing").rejected.is_none());
    }

    #[test]
    fn many_matches_in_a_large_text_are_found_in_one_pass() {
        let s = Scanner::compile(&[guard(
            &[
                Builtin::Email,
                Builtin::Iban,
                Builtin::Secrets,
                Builtin::Ssn,
            ],
            &[],
            GuardAction::Mask,
        )])
        .unwrap();
        let text = "write to someone@example.com today; ".repeat(20_000);
        let start = std::time::Instant::now();
        let out = s.apply(&text);
        assert_eq!(out.text.matches("<EMAIL>").count(), 20_000);
        assert!(
            start.elapsed() < std::time::Duration::from_secs(10),
            "{:?}",
            start.elapsed()
        );
    }

    #[test]
    fn streaming_equals_whole_at_every_split() {
        let s = Scanner::compile(&[
            guard(
                &[
                    Builtin::Email,
                    Builtin::CreditCard,
                    Builtin::Iban,
                    Builtin::Ip,
                    Builtin::Secrets,
                ],
                &["ACME-[0-9]+"],
                GuardAction::Mask,
            ),
            guard(&[Builtin::Phone], &[], GuardAction::Audit),
        ])
        .unwrap();
        let text = "Write to jane@example.com or +44 20 7946 0958; card 4111-1111-1111-1111, \
                    IBAN DE89 3704 0044 0532 0130 00, host 10.0.0.1, key sk-abcdefghijklmnopqrstuvwxyz, ACME-77 é done";
        let whole = s.apply(text).text;
        assert!(!whole.contains("jane@") && !whole.contains("4111") && !whole.contains("DE89"));
        let bounds: Vec<usize> = (0..=text.len())
            .filter(|i| text.is_char_boundary(*i))
            .collect();
        let run = |cuts: &[usize]| {
            let mut st = Stream::default();
            let mut out = String::new();
            let mut at = 0;
            for &c in cuts.iter().chain([&text.len()]) {
                out.push_str(&s.feed(&mut st, &text[at..c]).text);
                at = c;
            }
            out.push_str(&s.finish(&mut st).text);
            assert_eq!(out, whole, "cuts {cuts:?}");
        };
        // Every single split point, then random splits into many pieces.
        for &i in &bounds {
            run(&[i]);
        }
        run(&bounds);
        let mut rng = fastrand::Rng::with_seed(7);
        for _ in 0..300 {
            let mut cuts: Vec<usize> = (0..rng.usize(1..40))
                .map(|_| bounds[rng.usize(..bounds.len())])
                .collect();
            cuts.sort_unstable();
            run(&cuts);
        }
    }

    /// Streams fed in turn share the pool's DFA caches (each decision borrows a set and gives
    /// it back): each still masks as its whole text is masked.
    #[test]
    fn interleaved_streams_sharing_caches_mask_like_their_whole_texts() {
        let s = Scanner::compile(&[guard(
            &[Builtin::Email, Builtin::Phone, Builtin::Secrets],
            &[],
            GuardAction::Mask,
        )])
        .unwrap();
        let texts = [
            "mail jane.doe@example.com then call +1 415 555 2671 ok",
            "key sk-abcdefghijklmnopqrstuvwxyz and bob@example.org done",
            "nothing to see here, just words and more words",
        ];
        let mut streams: Vec<Stream> = texts.iter().map(|_| Stream::default()).collect();
        let mut outs = vec![String::new(); texts.len()];
        let pieces: Vec<Vec<&str>> = texts
            .iter()
            .map(|t| t.split_inclusive(' ').collect())
            .collect();
        for i in 0..pieces.iter().map(Vec::len).max().unwrap() {
            for (k, p) in pieces.iter().enumerate() {
                if let Some(piece) = p.get(i) {
                    outs[k].push_str(&s.feed(&mut streams[k], piece).text);
                    assert!(streams[k].caches.is_empty(), "caches kept past a decision");
                }
            }
        }
        for (k, st) in streams.iter_mut().enumerate() {
            outs[k].push_str(&s.finish(st).text);
            assert_eq!(outs[k], s.apply(texts[k]).text);
        }
        assert!(
            outs[0].contains("<EMAIL>") && outs[1].contains("<SECRET>"),
            "{outs:?}"
        );
    }

    /// The combined DFA holds back what the per-detector read does: never less on any text
    /// (a start some detector leaves open is open for it), and on ASCII prose and PII not
    /// more either (its `MatchKind::All` keeps threads past a match that the per-detector
    /// DFAs drop, which may hold a little more on random text). Non-ASCII text next to a
    /// `\b` takes the per-detector read, so holds the same.
    #[test]
    fn the_combined_dfa_holds_back_what_the_detectors_do() {
        let compile = || {
            Scanner::compile(&[guard(&EVERY_BUILTIN, &["ACME-[0-9]+"], GuardAction::Mask)]).unwrap()
        };
        let combined = compile();
        let mut each = compile();
        assert!(combined.union.is_some(), "the built-ins make one DFA");
        each.union = None;
        let mut rng = fastrand::Rng::with_seed(11);
        let alphabet = b"aAzZ09_-+.:@() \n\t/=ekxsgh,;";
        let random: String = (0..2000)
            .map(|_| alphabet[rng.usize(..alphabet.len())] as char)
            .collect();
        let exact = [
            "Hello there, this is a token stream from the bench upstream. It sends one",
            "mail jane.doe@example.com, call +1 415 555 2671 or (415) 555-2671, card 4111 1111 1111 1111",
            "IBAN GB29 NWBK 6016 1331 9268 19, ssn 123-45-6789, host 10.0.0.1 and fe80::1, ::1",
            "keys AKIAIOSFODNN7EXAMPLE ghp_x github_pat_y sk-proj-abc xoxb-1 -----BEGIN eyJhb.eyJ",
            "café au lait, naïve résumé ✓ jane@exämple.com ACME-7 ü:ff done",
        ];
        let settled = |sc: &Scanner, text: &str, from: usize| {
            let mut st = Stream {
                buf: text.to_string(),
                pos: from,
                ..Stream::default()
            };
            sc.settled(&mut st).0
        };
        for (t, must_equal) in exact.iter().map(|t| (*t, true)).chain([(&*random, false)]) {
            let mut more = 0;
            for end in (0..=t.len()).filter(|i| t.is_char_boundary(*i)) {
                let text = &t[..end];
                let from = text.len().saturating_sub(40);
                let from = (0..=from)
                    .rev()
                    .find(|i| text.is_char_boundary(*i))
                    .unwrap();
                let (c, e) = (settled(&combined, text, from), settled(&each, text, from));
                assert!(
                    c <= e,
                    "held less than the detectors at {end} of {t:?}: {c} > {e}"
                );
                if c < e {
                    more += 1;
                }
                assert!(
                    !must_equal || c == e,
                    "held more at {end} of {t:?}: {c} < {e}"
                );
            }
            // Random text: seldom more.
            assert!(more * 20 <= t.len(), "{more} of {}", t.len());
        }
    }

    /// The first-byte table only rules out starts where the DFA dies on the first byte: a
    /// start it rules out is closed by the DFA even on the text cut right after it, for every
    /// detector (patterns with `^` and `\b` included), on prose and on random characters of
    /// those detectors read.
    #[test]
    fn a_start_ruled_out_by_its_first_byte_is_closed_for_the_dfa_too() {
        let s = Scanner::compile(&[guard(
            &EVERY_BUILTIN,
            &["ACME-[0-9]+", r"(?m)^x[0-9]", r"\Bq_"],
            GuardAction::Mask,
        )])
        .unwrap();
        let mut rng = fastrand::Rng::with_seed(5);
        let alphabet = b"aAzZ09_-+.:@() \n\r\t/=ekxsgh,;\"'\\";
        let random: String = (0..3000)
            .map(|_| alphabet[rng.usize(..alphabet.len())] as char)
            .collect();
        let texts = [
            "Hello there, this is a token stream from the bench upstream. It sends one",
            "mail jane.doe@example.com, call +1 415 555 2671 or (415) 555-2671, card 4111 1111 1111 1111",
            "IBAN GB29 NWBK 6016 1331 9268 19, ssn 123-45-6789, host 10.0.0.1 and fe80::1, ::1",
            "keys AKIAIOSFODNN7EXAMPLE ghp_x github_pat_y sk-proj-abc xoxb-1 -----BEGIN eyJhb.eyJ",
            "é ACME-7 x1\nx2 a_q_ ü:ff",
            &random,
        ];
        let mut ruled_out = 0;
        for d in &s.detectors {
            let (Some(dfa), Some(firsts)) = (&d.dfa, &d.firsts) else {
                panic!("{} has no DFA", d.regex.as_str());
            };
            let mut cache = dfa.create_cache();
            for t in texts {
                for p in (1..t.len()).filter(|p| t.is_char_boundary(*p)) {
                    if !firsts.may_start(t.as_bytes(), p) {
                        ruled_out += 1;
                        // The text cut after the first character: the DFA dead already.
                        let first = t[p..].chars().next().unwrap().len_utf8();
                        let mut budget = DFA_BUDGET;
                        assert!(
                            !open_at(dfa, &mut cache, &t[..p + first], p, &mut budget),
                            "{} at {p} of {t:?}",
                            d.regex.as_str()
                        );
                    }
                }
            }
        }
        // It does rule out most starts (else it saves nothing).
        let all: usize = texts.iter().map(|t| t.len()).sum::<usize>() * s.detectors.len();
        assert!(ruled_out * 2 > all, "{ruled_out} of {all}");
    }
}
