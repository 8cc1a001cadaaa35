//! `ListTasks` (v1.0) across the agents of a route: every agent is asked for its tasks, the
//! answers are merged newest first (the order the specification gives: the status timestamp,
//! descending; then the id) and cut into pages of the size the client asked for. Task ids are
//! sealed ([`crate::tasks`]) as in every other answer.
//!
//! The page token the client gets is sealed too ([`Cursor`]): for each agent, the agent's own
//! page token and how many tasks of that page were already returned, the upstream page size,
//! and the agent's total. A client can neither read nor forge it; one that does not open is an
//! invalid argument.
//!
//! [`Merger`] is the merge itself, without I/O: it says which agent's next task comes next,
//! or that an agent's page ran out and its next page must be fetched before anything else can
//! be decided (so the order is exact, not per-page).

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::tasks::TaskSealer;

/// The page size when the client names none, and the largest it may ask for (the
/// specification's bounds).
pub const DEFAULT_PAGE_SIZE: u32 = 50;
pub const MAX_PAGE_SIZE: u32 = 100;

/// What is sealed into page tokens in place of a backend name (one no backend has).
const CURSOR_MARK: &str = "\u{1}list";

/// The client's page size: the default when absent or 0, capped at the maximum.
pub fn page_size(asked: Option<i64>) -> u32 {
    match asked {
        None | Some(0) => DEFAULT_PAGE_SIZE,
        Some(n) if n < 0 => DEFAULT_PAGE_SIZE,
        Some(n) => n.min(i64::from(MAX_PAGE_SIZE)) as u32,
    }
}

/// Where a listing stands: one lane per agent.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cursor {
    /// The page size the agents are asked for (kept, so their pages repeat exactly).
    #[serde(rename = "p")]
    pub upstream_page_size: u32,
    #[serde(rename = "l")]
    pub lanes: Vec<LaneCursor>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LaneCursor {
    /// The backend's name.
    #[serde(rename = "b")]
    pub backend: String,
    /// The agent's page token of the page in progress ("" = the first page).
    #[serde(rename = "t")]
    pub token: String,
    /// Tasks of that page already returned.
    #[serde(rename = "s")]
    pub skip: u32,
    /// Nothing more to read from this agent.
    #[serde(rename = "d")]
    pub done: bool,
    /// The agent's `totalSize`, as last reported.
    #[serde(rename = "n")]
    pub total: i64,
}

impl Cursor {
    pub fn seal(&self, sealer: &TaskSealer) -> String {
        let json = serde_json::to_string(self).unwrap_or_default();
        sealer.seal(CURSOR_MARK, &json)
    }

    /// The cursor a page token holds; `None` when it is not one the gateway wrote.
    pub fn open(sealer: &TaskSealer, token: &str) -> Option<Cursor> {
        let opened = sealer.open(token)?;
        if opened.backend != CURSOR_MARK {
            return None;
        }
        serde_json::from_str(&opened.task_id).ok()
    }
}

/// The order of a listing: newest status first, then the id, descending (as the agents
/// order their own pages).
pub fn sort_key(task: &Value) -> (Option<(i64, u32)>, String) {
    let at = task
        .get("status")
        .and_then(|s| s.get("timestamp"))
        .and_then(Value::as_str)
        .and_then(timestamp);
    let id = task
        .get("id")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    (at, id)
}

/// An RFC 3339 timestamp as (seconds since the epoch, nanoseconds), compared exactly however
/// many fraction digits or which offset it is written with.
pub fn timestamp(s: &str) -> Option<(i64, u32)> {
    let b = s.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let t = s.get(r)?;
        t.bytes()
            .all(|c| c.is_ascii_digit())
            .then(|| t.parse().ok())?
    };
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, se) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || se > 60 {
        return None;
    }
    let mut i = 19;
    let mut nanos: u32 = 0;
    if b.get(i) == Some(&b'.') {
        i += 1;
        let start = i;
        while i < b.len() && b[i].is_ascii_digit() {
            if i - start < 9 {
                nanos = nanos * 10 + u32::from(b[i] - b'0');
            }
            i += 1;
        }
        let digits = (i - start).min(9);
        if digits == 0 {
            return None;
        }
        nanos *= 10u32.pow(9 - digits as u32);
    }
    let offset = match b.get(i) {
        Some(b'Z' | b'z') if i + 1 == b.len() => 0,
        Some(sign @ (b'+' | b'-')) if i + 6 == b.len() && b[i + 3] == b':' => {
            let off = num(i + 1..i + 3)? * 3600 + num(i + 4..i + 6)? * 60;
            if *sign == b'+' {
                off
            } else {
                -off
            }
        }
        _ => return None,
    };
    // Days from the civil date (Howard Hinnant's algorithm).
    let (y, m) = if mo <= 2 {
        (y - 1, mo + 9)
    } else {
        (y, mo - 3)
    };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * m + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some((days * 86_400 + h * 3600 + mi * 60 + se - offset, nanos))
}

/// One agent's part of a listing.
#[derive(Debug)]
pub struct Lane {
    pub backend: String,
    /// The page in progress: its token, how many of its tasks were taken, those left.
    token: String,
    taken: u32,
    items: VecDeque<Value>,
    /// The agent's next page token (`None`: this page is its last).
    next: Option<String>,
    pub total: i64,
}

impl Lane {
    /// A lane starting at `cursor` whose page (fetched with `cursor.token`) is `page`: the
    /// tasks already returned are dropped.
    pub fn resume(cursor: &LaneCursor, page: Page) -> Lane {
        let mut lane = Lane {
            backend: cursor.backend.clone(),
            token: cursor.token.clone(),
            taken: 0,
            items: VecDeque::new(),
            next: None,
            total: cursor.total,
        };
        lane.load(cursor.token.clone(), page);
        for _ in 0..cursor.skip {
            if lane.items.pop_front().is_some() {
                lane.taken += 1;
            }
        }
        lane
    }

    /// A lane with nothing more to read.
    pub fn done(cursor: &LaneCursor) -> Lane {
        Lane {
            backend: cursor.backend.clone(),
            token: String::new(),
            taken: 0,
            items: VecDeque::new(),
            next: None,
            total: cursor.total,
        }
    }

    /// The agent's page fetched with `token` replaces the one in progress.
    pub fn load(&mut self, token: String, page: Page) {
        self.token = token;
        self.taken = 0;
        self.items = page.tasks.into();
        self.next = page.next.filter(|t| !t.is_empty());
        if let Some(n) = page.total {
            self.total = n;
        }
    }

    /// The token of the page to fetch next, when this one ran out and there is another.
    pub fn wants(&self) -> Option<&str> {
        match self.items.is_empty() {
            true => self.next.as_deref(),
            false => None,
        }
    }

    fn cursor(&self) -> LaneCursor {
        let (token, skip, done) = match (self.items.is_empty(), &self.next) {
            (true, None) => (String::new(), 0, true),
            (true, Some(next)) => (next.clone(), 0, false),
            (false, _) => (self.token.clone(), self.taken, false),
        };
        LaneCursor {
            backend: self.backend.clone(),
            token,
            skip,
            done,
            total: self.total,
        }
    }
}

/// One agent's answer to `ListTasks`, read.
#[derive(Debug, Default)]
pub struct Page {
    pub tasks: Vec<Value>,
    pub next: Option<String>,
    pub total: Option<i64>,
}

impl Page {
    /// The `ListTasksResponse` object (a JSON-RPC `result`, or the REST body).
    pub fn read(doc: &mut Value) -> Option<Page> {
        let obj = doc.as_object_mut()?;
        let tasks = match obj.remove("tasks") {
            Some(Value::Array(t)) => t,
            None | Some(Value::Null) => Vec::new(),
            Some(_) => return None,
        };
        Some(Page {
            tasks,
            next: obj
                .get("nextPageToken")
                .and_then(Value::as_str)
                .map(str::to_string),
            total: obj.get("totalSize").and_then(|n| {
                n.as_i64()
                    .or_else(|| n.as_str().and_then(|s| s.parse().ok()))
            }),
        })
    }
}

/// What the merge needs next.
#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    /// Lane `i`'s page ran out: fetch its next page (this token) and [`Lane::load`] it.
    Fetch(usize, String),
    /// Nothing more to take.
    Done,
}

/// The merge of the lanes, newest first.
pub struct Merger {
    pub lanes: Vec<Lane>,
}

impl Merger {
    /// Takes tasks, newest first, into `taken` (with its lane's index) until `page_size` are
    /// taken, or a lane must be fetched first.
    pub fn run(&mut self, page_size: u32, taken: &mut Vec<(usize, Value)>) -> Step {
        while (taken.len() as u32) < page_size {
            if let Some((i, token)) = self
                .lanes
                .iter()
                .enumerate()
                .find_map(|(i, l)| l.wants().map(|t| (i, t.to_string())))
            {
                return Step::Fetch(i, token);
            }
            let best = self
                .lanes
                .iter()
                .enumerate()
                .filter_map(|(i, l)| l.items.front().map(|t| (i, sort_key(t))))
                .max_by(|a, b| a.1.cmp(&b.1));
            let Some((i, _)) = best else {
                return Step::Done;
            };
            let lane = &mut self.lanes[i];
            if let Some(task) = lane.items.pop_front() {
                lane.taken += 1;
                taken.push((i, task));
            }
        }
        Step::Done
    }

    /// The cursor for the next page, `None` when every lane is done.
    pub fn cursor(&self, upstream_page_size: u32) -> Option<Cursor> {
        let lanes: Vec<LaneCursor> = self.lanes.iter().map(Lane::cursor).collect();
        if lanes.iter().all(|l| l.done) {
            return None;
        }
        Some(Cursor {
            upstream_page_size,
            lanes,
        })
    }

    pub fn total(&self) -> i64 {
        self.lanes.iter().map(|l| l.total.max(0)).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn timestamps_compare_exactly() {
        assert_eq!(timestamp("1970-01-01T00:00:00Z"), Some((0, 0)));
        assert_eq!(
            timestamp("2026-12-07T07:20:00.5Z"),
            timestamp("2026-12-07T07:20:00.500000Z")
        );
        assert_eq!(
            timestamp("2026-12-07T08:20:00+01:00"),
            timestamp("2026-12-07T07:20:00Z")
        );
        assert!(timestamp("2026-12-07T07:20:00.000001Z") > timestamp("2026-12-07T07:20:00Z"));
        assert!(timestamp("2000-03-01T00:00:00Z") > timestamp("2000-02-29T23:59:59.999Z"));
        assert_eq!(timestamp("2026-12-07"), None);
        assert_eq!(timestamp("2026-13-07T07:20:00Z"), None);
        assert_eq!(timestamp("2026-12-07T07:20:00"), None);
    }

    fn task(id: &str, second: u32) -> Value {
        json!({"id": id, "contextId": "c",
               "status": {"state": "TASK_STATE_COMPLETED",
                          "timestamp": format!("2026-01-01T00:00:{second:02}Z")}})
    }

    /// An agent's store: pages of `size`, newest first, tokens = the index to start at.
    fn agent_page(tasks: &[Value], token: &str, size: usize) -> Page {
        let start: usize = token.parse().unwrap_or(0);
        let end = (start + size).min(tasks.len());
        Page {
            tasks: tasks[start..end].to_vec(),
            next: (end < tasks.len()).then(|| end.to_string()),
            total: Some(tasks.len() as i64),
        }
    }

    #[test]
    fn pages_merge_newest_first_and_resume_from_the_cursor() {
        let sealer = TaskSealer::new(Some("k")).unwrap();
        // Two agents with interleaved times; a: even seconds, b: odd seconds, and b has more.
        let mut a: Vec<Value> = (0..7).map(|i| task(&format!("a{i}"), i * 2)).collect();
        let mut b: Vec<Value> = (0..12).map(|i| task(&format!("b{i}"), i * 2 + 1)).collect();
        a.reverse();
        b.reverse();
        let stores = [a, b];
        let upstream = 4usize;
        let mut seen = Vec::new();
        let mut cursor = Cursor {
            upstream_page_size: upstream as u32,
            lanes: ["a", "b"]
                .iter()
                .map(|n| LaneCursor {
                    backend: n.to_string(),
                    token: String::new(),
                    skip: 0,
                    done: false,
                    total: 0,
                })
                .collect(),
        };
        let mut pages = 0;
        loop {
            pages += 1;
            assert!(pages < 20);
            let lanes = cursor
                .lanes
                .iter()
                .enumerate()
                .map(|(i, l)| match l.done {
                    true => Lane::done(l),
                    false => Lane::resume(l, agent_page(&stores[i], &l.token, upstream)),
                })
                .collect();
            let mut m = Merger { lanes };
            let mut taken = Vec::new();
            loop {
                match m.run(5, &mut taken) {
                    Step::Done => break,
                    Step::Fetch(i, token) => {
                        let page = agent_page(&stores[i], &token, upstream);
                        m.lanes[i].load(token, page);
                    }
                }
            }
            assert_eq!(m.total(), 19);
            let ids: Vec<String> = taken
                .iter()
                .map(|(_, t)| t["id"].as_str().unwrap().to_string())
                .collect();
            seen.extend(ids);
            match m.cursor(upstream as u32) {
                None => break,
                Some(c) => {
                    assert_eq!(taken.len(), 5, "full pages until the end");
                    // Through a sealed token, as the client carries it.
                    let token = c.seal(&sealer);
                    cursor = Cursor::open(&sealer, &token).unwrap();
                    assert_eq!(cursor, c);
                }
            }
        }
        // Every task once, newest (highest second) first.
        let mut want: Vec<(u32, String)> = (0..7)
            .map(|i| (i * 2, format!("a{i}")))
            .chain((0..12).map(|i| (i * 2 + 1, format!("b{i}"))))
            .collect();
        want.sort_by_key(|x| std::cmp::Reverse(x.0));
        let want: Vec<String> = want.into_iter().map(|(_, id)| id).collect();
        assert_eq!(seen, want);
        assert_eq!(pages, 4);
    }

    #[test]
    fn tokens_the_gateway_did_not_write_do_not_open() {
        let sealer = TaskSealer::new(Some("k")).unwrap();
        assert_eq!(Cursor::open(&sealer, "abc"), None);
        // A sealed task id is not a cursor.
        assert_eq!(Cursor::open(&sealer, &sealer.seal("b", "{}")), None);
        assert_eq!(page_size(None), 50);
        assert_eq!(page_size(Some(0)), 50);
        assert_eq!(page_size(Some(500)), 100);
        assert_eq!(page_size(Some(7)), 7);
    }

    #[test]
    fn pages_are_read_from_both_shapes() {
        let mut doc = json!({"tasks": [task("x", 1)], "nextPageToken": "", "pageSize": 50,
                             "totalSize": 1});
        let p = Page::read(&mut doc).unwrap();
        assert_eq!(
            (p.tasks.len(), p.next.as_deref(), p.total),
            (1, Some(""), Some(1))
        );
        let mut empty = json!({"nextPageToken": "", "totalSize": "0"});
        let p = Page::read(&mut empty).unwrap();
        assert_eq!((p.tasks.len(), p.total), (0, Some(0)));
        assert!(Page::read(&mut json!({"tasks": 3})).is_none());
    }
}
