//! Limits, budgets and keys held exactly across replicas: three `switchyard` processes share one
//! real `redis-server` (Debian's package; `.ci/run` installs it, each test starts its own on a
//! free port). Clients hammer all three at once; the store's state is read back with a Redis
//! client to check reservations, settlements and refunds.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{free_port, spawn_ready, Proc};
use serde_json::{json, Value};

struct Redis {
    child: Child,
    port: u16,
}

impl Redis {
    fn start() -> Redis {
        Self::start_on(free_port())
    }

    fn start_on(port: u16) -> Redis {
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server from Debian's redis-server package (.ci/run installs it)");
        let r = Redis { child, port };
        common::wait_until("redis-server", Duration::from_secs(10), || {
            r.client().get_connection().is_ok()
        });
        r
    }

    fn client(&self) -> redis::Client {
        redis::Client::open(format!("redis://127.0.0.1:{}", self.port)).unwrap()
    }

    fn get(&self, key: &str) -> i64 {
        let mut c = self.client().get_connection().unwrap();
        redis::cmd("GET")
            .arg(key)
            .query::<Option<i64>>(&mut c)
            .unwrap()
            .unwrap_or(0)
    }

    fn keys(&self, pattern: &str) -> Vec<String> {
        let mut c = self.client().get_connection().unwrap();
        redis::cmd("KEYS").arg(pattern).query(&mut c).unwrap()
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One replica: its gateway port and admin port.
struct Replica {
    _proc: Proc,
    addr: SocketAddr,
    admin: SocketAddr,
}

fn replica(dir: &std::path::Path, i: usize, redis: &Redis, routes: &str) -> Replica {
    let (port, admin) = (free_port(), free_port());
    let yaml = format!(
        "config:\n  adminAddr: 127.0.0.1:{admin}\n  redis: {{url: 'redis://127.0.0.1:{}', timeout: 200ms}}\nbinds:\n- port: {port}\n  address: 127.0.0.1\n  listeners:\n  - routes:\n{routes}",
        redis.port
    );
    let file = dir.join(format!("replica{i}.yaml"));
    std::fs::write(&file, yaml).unwrap();
    let proc = spawn_ready(&["-f".as_ref(), file.as_os_str()], admin);
    Replica {
        _proc: proc,
        addr: SocketAddr::from(([127, 0, 0, 1], port)),
        admin: SocketAddr::from(([127, 0, 0, 1], admin)),
    }
}

fn replicas(redis: &Redis, routes: &str) -> (tempfile::TempDir, Vec<Replica>) {
    let dir = tempfile::tempdir().unwrap();
    let rs = (0..3)
        .map(|i| replica(dir.path(), i, redis, routes))
        .collect();
    (dir, rs)
}

/// A reply: status, lower-cased header lines, body.
struct Reply {
    status: u16,
    head: String,
    body: String,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or(Value::Null)
    }
}

fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Reply {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let extra: String = headers
        .iter()
        .map(|(k, v)| format!("{k}: {v}\r\n"))
        .collect();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nContent-Type: application/json\r\n{extra}Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let (head, body) = out.split_once("\r\n\r\n").unwrap_or((&out, ""));
    Reply {
        status: head.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0),
        head: head.to_string(),
        body: body.to_string(),
    }
}

fn chat(addr: SocketAddr, key: &str, max_tokens: Option<u64>) -> Reply {
    let mut body = json!({"model": "sim-gpt", "messages": [{"role": "user", "content": "Say something short about replicas."}]});
    if let Some(n) = max_tokens {
        body["max_tokens"] = json!(n);
    }
    request(
        addr,
        "POST",
        "/v1/chat/completions",
        &[("authorization", &format!("Bearer {key}"))],
        &body.to_string(),
    )
}

fn today() -> String {
    let out = Command::new("date")
        .args(["-u", "+%Y-%m-%d"])
        .output()
        .unwrap();
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

fn sim_route(sim: SocketAddr, policies: &str) -> String {
    format!(
        "    - policies:\n{policies}      backends:\n      - ai: {{name: sim, hostOverride: '{sim}', provider: {{openAI: {{}}}}}}\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_limits_admit_exactly_the_limit_across_three_replicas() {
    let redis = Redis::start();
    let sim = sim::openai::spawn(sim::openai::Options::default())
        .await
        .unwrap();
    let policies = "        apiKeyAuth:\n          keys:\n          - {name: alice, key: sk-alice, rateLimit: {requests: 20, window: 1h}}\n          - {name: eve, key: sk-eve}\n        rateLimit:\n          limits:\n          - {name: per-user, key: 'request.headers[\"x-user\"]', requests: 7, window: 1h}\n";
    let (_dir, rs) = replicas(&redis, &sim_route(sim.addr, policies));

    // 64 clients, ten times the allowance, all three replicas at once.
    let replies = tokio::task::spawn_blocking({
        let rs: Vec<SocketAddr> = rs.iter().map(|r| r.addr).collect();
        move || hammer(&rs, 64, 200, |a| chat(a, "sk-alice", Some(5)))
    })
    .await
    .unwrap();
    let ok = replies.iter().filter(|r| r.status == 200).count();
    let limited: Vec<&Reply> = replies.iter().filter(|r| r.status == 429).collect();
    assert_eq!(ok, 20, "exactly the limit is admitted");
    assert_eq!(
        limited.len(),
        180,
        "every other call is refused, none failed otherwise"
    );
    let r = limited[0];
    assert_eq!(r.json()["error"]["code"], "rate_limited", "{}", r.body);
    let retry: u64 = r.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=3600).contains(&retry));
    assert_eq!(r.header("x-ratelimit-remaining-requests"), Some("0"));
    assert_eq!(r.header("x-ratelimit-limit-requests"), Some("20"));
    // The counter in Redis says the same.
    let counters = redis.keys("switchyard:rl:key:alice:*");
    assert_eq!(counters.len(), 1, "{counters:?}");
    assert_eq!(redis.get(&counters[0]), 20);

    // A CEL-keyed limit: 7 per `x-user`, each user counted apart; a wrong key never reaches
    // the limits.
    let addrs: Vec<SocketAddr> = rs.iter().map(|r| r.addr).collect();
    for user in ["u1", "u2"] {
        let replies = tokio::task::spawn_blocking({
            let addrs = addrs.clone();
            move || {
                hammer(&addrs, 16, 40, move |a| {
                    let h = [("x-user", user), ("authorization", "Bearer sk-eve")];
                    request(a, "GET", "/v1/models", &h, "")
                })
            }
        })
        .await
        .unwrap();
        let ok = replies.iter().filter(|r| r.status == 200).count();
        assert_eq!(ok, 7, "user {user}");
    }
    let r = request(
        addrs[0],
        "GET",
        "/v1/models",
        &[("x-user", "u3"), ("authorization", "Bearer sk-nope")],
        "",
    );
    assert_eq!(r.status, 401);
    assert!(redis.keys("switchyard:rl:per-user:u3:*").is_empty());
}

/// Runs `total` calls of `f` from `clients` threads, spread over `addrs`; returns the replies.
fn hammer(
    addrs: &[SocketAddr],
    clients: usize,
    total: usize,
    f: impl Fn(SocketAddr) -> Reply + Send + Sync + 'static,
) -> Vec<Reply> {
    let addrs: Arc<Vec<SocketAddr>> = Arc::new(addrs.to_vec());
    let next = Arc::new(AtomicUsize::new(0));
    let f = Arc::new(f);
    let threads: Vec<_> = (0..clients)
        .map(|_| {
            let (addrs, next, f) = (addrs.clone(), next.clone(), f.clone());
            std::thread::spawn(move || {
                let mut out = Vec::new();
                loop {
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    if i >= total {
                        return out;
                    }
                    out.push(f(addrs[i % addrs.len()]));
                }
            })
        })
        .collect();
    threads
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_budgets_never_overshoot_with_max_tokens_and_settle_to_real_usage() {
    let redis = Redis::start();
    let sim = sim::openai::spawn(sim::openai::Options::default())
        .await
        .unwrap();
    let policies = "        apiKeyAuth:\n          keys:\n          - {name: bob, key: sk-bob, team: research}\n          - {name: tina, key: sk-tina, team: tight}\n        budgets:\n          defaultMaxTokens: 4\n          teams:\n            research: {tokens: 3000, window: day}\n            tight: {tokens: 600, window: day}\n";
    let (_dir, rs) = replicas(&redis, &sim_route(sim.addr, policies));
    let addrs: Vec<SocketAddr> = rs.iter().map(|r| r.addr).collect();

    // With max_tokens: what is admitted always fits.
    let replies = tokio::task::spawn_blocking({
        let addrs = addrs.clone();
        move || hammer(&addrs, 64, 600, |a| chat(a, "sk-bob", Some(40)))
    })
    .await
    .unwrap();
    let admitted: Vec<&Reply> = replies.iter().filter(|r| r.status == 200).collect();
    let used: i64 = admitted
        .iter()
        .map(|r| r.json()["usage"]["total_tokens"].as_i64().unwrap())
        .sum();
    assert!(!admitted.is_empty());
    assert!(
        used <= 3000,
        "admitted calls used {used} tokens of a 3000 budget"
    );
    assert!(
        replies.iter().all(|r| r.status == 200
            || (r.status == 429 && r.json()["error"]["code"] == "budget_exceeded")),
        "only budget refusals"
    );
    // Settled: the counter holds exactly the real usage (refunds included) once the
    // settlements (off the request path) have run.
    let key = format!("switchyard:budget:team:research:tokens:{}", today());
    common::wait_until("settlements", Duration::from_secs(5), || {
        redis.get(&key) == used
    });

    // Without max_tokens the reservation is only an estimate (defaultMaxTokens: 4 here, far
    // below what the simulator answers): the budget can be overshot by what calls in flight
    // used beyond their reservation. Measured, not asserted away.
    let replies = tokio::task::spawn_blocking({
        let addrs = addrs.clone();
        move || hammer(&addrs, 64, 400, |a| chat(a, "sk-tina", None))
    })
    .await
    .unwrap();
    let used: i64 = replies
        .iter()
        .filter(|r| r.status == 200)
        .map(|r| r.json()["usage"]["total_tokens"].as_i64().unwrap())
        .sum();
    let key = format!("switchyard:budget:team:tight:tokens:{}", today());
    common::wait_until("settlements", Duration::from_secs(5), || {
        redis.get(&key) == used
    });
    println!(
        "budget overshoot without max_tokens: used {used} of 600 ({:+} tokens)",
        used - 600
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn virtual_keys_made_on_one_replica_work_on_all_and_revocation_lands_within_a_second() {
    let redis = Redis::start();
    let sim = sim::openai::spawn(sim::openai::Options::default())
        .await
        .unwrap();
    let policies = "        apiKeyAuth: {}\n";
    let (_dir, rs) = replicas(&redis, &sim_route(sim.addr, policies));
    let (a, b, c) = (&rs[0], &rs[1], &rs[2]);
    let made = request(
        a.admin,
        "POST",
        "/keys",
        &[],
        r#"{"name": "ci", "team": "platform", "rateLimit": {"requests": 3, "window": "1h"}}"#,
    );
    assert_eq!(made.status, 201, "{}", made.body);
    let key = made.json()["key"].as_str().unwrap().to_string();
    let id = made.json()["id"].as_str().unwrap().to_string();

    // Seen by another replica within a second.
    let t = Instant::now();
    while chat(b.addr, &key, Some(3)).status != 200 {
        assert!(
            t.elapsed() < Duration::from_secs(1),
            "replica b did not see the new key within 1 s"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // Its limit is counted across replicas: 3 in all, wherever they land.
    let mut ok = 1;
    for r in [a, c, b, a] {
        if chat(r.addr, &key, Some(3)).status == 200 {
            ok += 1;
        }
    }
    assert_eq!(ok, 3);
    // Listed on any replica, never with the key.
    let list = request(c.admin, "GET", "/keys", &[], "");
    assert!(
        list.body.contains("\"ci\"") && !list.body.contains(&key),
        "{}",
        list.body
    );

    // Revoked on c: refused on a within a second.
    let gone = request(c.admin, "DELETE", &format!("/keys/{id}"), &[], "");
    assert_eq!(gone.status, 200, "{}", gone.body);
    let t = Instant::now();
    loop {
        let r = chat(a.addr, &key, Some(3));
        if r.status == 401 {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(1),
            "still accepted {:?} after revocation",
            t.elapsed()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    println!("revocation seen by another replica after {:?}", t.elapsed());

    // Usage is recorded in the store (each replica writes its own once a second), queryable
    // from any replica.
    common::wait_until("usage from every replica", Duration::from_secs(3), || {
        request(b.admin, "GET", "/usage", &[], "").json()["keys"]["ci"]["requests"] == 3
    });
    assert_eq!(
        request(b.admin, "GET", "/usage", &[], "").json()["shared"],
        true
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_disconnects_and_upstream_resets_are_refunded_and_redis_down_fails_as_configured() {
    let redis = Redis::start();
    let sim = sim::openai::spawn(sim::openai::Options {
        inter_token_delay: Duration::from_millis(30),
        ..Default::default()
    })
    .await
    .unwrap();
    let policies = "        apiKeyAuth:\n          keys:\n          - {name: carol, key: sk-carol, budget: {tokens: 100000, window: day}}\n          - {name: dave, key: sk-dave, budget: {tokens: 100000, window: day}}\n";
    let (_dir, rs) = replicas(&redis, &sim_route(sim.addr, policies));
    let stream_body = json!({"model": "sim-gpt", "stream": true, "max_tokens": 800,
        "messages": [{"role": "user", "content": "Tell me a long story about a lighthouse keeper and the sea."}]})
    .to_string();

    // carol reads the first bytes of a slow stream, then goes away.
    {
        let mut s = TcpStream::connect(rs[0].addr).unwrap();
        write!(
            s,
            "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer sk-carol\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{stream_body}",
            stream_body.len()
        )
        .unwrap();
        let mut buf = [0u8; 512];
        let n = s.read(&mut buf).unwrap();
        assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    }
    let carol = format!("switchyard:budget:key:carol:tokens:{}", today());
    // Reserved: the prompt plus 800. Settled once the gateway sees the client gone: the prompt
    // plus the few tokens streamed.
    common::wait_until("carol's refund", Duration::from_secs(5), || {
        let v = redis.get(&carol);
        v > 0 && v < 200
    });

    // dave's stream is cut by the provider.
    let r = request(
        rs[1].addr,
        "POST",
        "/v1/chat/completions",
        &[
            ("authorization", "Bearer sk-dave"),
            ("x-sim-fault", "reset"),
        ],
        &stream_body,
    );
    assert_eq!(r.status, 200);
    let dave = format!("switchyard:budget:key:dave:tokens:{}", today());
    common::wait_until("dave's refund", Duration::from_secs(5), || {
        let v = redis.get(&dave);
        v > 0 && v < 200
    });

    // Redis goes away: budgets fail closed (the default) with 503, quickly, and say why.
    drop(redis);
    let t = Instant::now();
    let r = chat(rs[2].addr, "sk-dave", Some(5));
    assert_eq!(r.status, 503, "{}", r.body);
    assert_eq!(r.json()["error"]["code"], "limits_unavailable");
    assert!(
        t.elapsed() < Duration::from_secs(2),
        "took {:?}",
        t.elapsed()
    );
}
