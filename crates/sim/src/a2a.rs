//! A small A2A agent (v1.0 JSON-RPC binding, with the v0.3 method names answered in v0.3
//! shapes), for `switchyard demo` and tests: it echoes what it is told.
//!
//! - `GET /.well-known/agent-card.json`: its card (one JSON-RPC interface, at `/`);
//! - `POST /` JSON-RPC: `SendMessage` / `message/send` (a completed task whose artifact is
//!   `echo: <text>`), `SendStreamingMessage` / `message/stream` (SSE: the task, working, the
//!   artifact, completed; 50 ms apart), `GetTask` / `tasks/get`. Errors are JSON-RPC errors:
//!   -32700, -32600, -32601, -32001 (task not found).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use serde_json::{json, Value};
use tokio::net::TcpListener;

use crate::{BoxError, SimBody, SimServer};

/// Tasks kept for `GetTask`; past this the oldest half is forgotten.
const MAX_TASKS: usize = 10_000;

#[derive(Clone, Debug)]
pub struct Options {
    /// The agent's name in its card.
    pub name: String,
    /// Delay between streamed events.
    pub stream_delay: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            name: "Sim Echo Agent".into(),
            stream_delay: Duration::from_millis(50),
        }
    }
}

struct State {
    options: Options,
    base: String,
    tasks: Mutex<HashMap<String, Value>>,
}

/// A running simulated agent; `url` is its base URL (its JSON-RPC endpoint).
pub struct A2aSim {
    pub server: SimServer,
    pub url: String,
}

pub async fn spawn(options: Options) -> std::io::Result<A2aSim> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}", listener.local_addr()?);
    let state = Arc::new(State {
        options,
        base: base.clone(),
        tasks: Mutex::new(HashMap::new()),
    });
    let server = crate::serve_service(
        listener,
        None,
        Arc::new(move |req| {
            let s = state.clone();
            Box::pin(async move { handle(&s, req).await })
        }),
    );
    Ok(A2aSim {
        server,
        url: format!("{base}/"),
    })
}

fn full(status: StatusCode, content_type: &'static str, body: Vec<u8>) -> Response<SimBody> {
    let mut r = Response::new(
        Full::new(Bytes::from(body))
            .map_err(|n| match n {})
            .boxed_unsync(),
    );
    *r.status_mut() = status;
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}

fn json_body(v: &Value) -> Response<SimBody> {
    full(
        StatusCode::OK,
        "application/json",
        v.to_string().into_bytes(),
    )
}

fn rpc_error(id: &Value, code: i64, message: &str) -> Response<SimBody> {
    json_body(&json!({"jsonrpc": "2.0", "id": id, "error": {"code": code, "message": message}}))
}

/// The agent's card (v1.0, with the v0.3 `url` / `preferredTransport` for older clients).
pub fn card(name: &str, base: &str) -> Value {
    json!({
        "name": name,
        "description": "A simulated agent that echoes what it is told",
        "version": "1.0.0",
        "supportedInterfaces": [
            {"url": format!("{base}/"), "protocolBinding": "JSONRPC", "protocolVersion": "1.0"}
        ],
        "capabilities": {"streaming": true, "pushNotifications": false},
        "defaultInputModes": ["text/plain"],
        "defaultOutputModes": ["text/plain"],
        "skills": [{"id": "echo", "name": "Echo", "description": "Echoes the text it is sent",
                    "tags": ["echo"]}],
        "protocolVersion": "0.3.0",
        "url": format!("{base}/"),
        "preferredTransport": "JSONRPC"
    })
}

async fn handle(state: &State, req: Request<Incoming>) -> Response<SimBody> {
    let path = req.uri().path().to_string();
    if req.method() == Method::GET {
        return match path.as_str() {
            "/.well-known/agent-card.json" | "/.well-known/agent.json" => {
                json_body(&card(&state.options.name, &state.base))
            }
            _ => full(StatusCode::NOT_FOUND, "application/json", b"{}".to_vec()),
        };
    }
    if req.method() != Method::POST {
        return full(
            StatusCode::METHOD_NOT_ALLOWED,
            "application/json",
            b"{}".to_vec(),
        );
    }
    let body = match http_body_util::Limited::new(req.into_body(), 1 << 20)
        .collect()
        .await
    {
        Ok(b) => b.to_bytes(),
        Err(_) => return rpc_error(&Value::Null, -32600, "body too large"),
    };
    let msg: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(_) => return rpc_error(&Value::Null, -32700, "Parse error"),
    };
    let id = msg.get("id").cloned().unwrap_or(Value::Null);
    let Some(method) = msg.get("method").and_then(Value::as_str) else {
        return rpc_error(&id, -32600, "Invalid Request");
    };
    let params = msg.get("params").cloned().unwrap_or(Value::Null);
    match method {
        "SendMessage" | "message/send" => {
            let v03 = method == "message/send";
            let task = run_task(state, &params, v03);
            let result = if v03 { task } else { json!({"task": task}) };
            json_body(&json!({"jsonrpc": "2.0", "id": id, "result": result}))
        }
        "SendStreamingMessage" | "message/stream" => {
            stream(state, id, &params, method == "message/stream")
        }
        "GetTask" | "tasks/get" => {
            let task_id = params.get("id").and_then(Value::as_str).unwrap_or("");
            let task = state
                .tasks
                .lock()
                .ok()
                .and_then(|t| t.get(task_id).cloned());
            match task {
                Some(task) => json_body(&json!({"jsonrpc": "2.0", "id": id, "result": task})),
                None => rpc_error(&id, -32001, "Task not found"),
            }
        }
        _ => rpc_error(&id, -32601, "Method not found"),
    }
}

/// The text of the message's parts (`text` in both versions' text parts).
fn text_of(params: &Value) -> String {
    params["message"]["parts"]
        .as_array()
        .map(|parts| {
            parts
                .iter()
                .filter_map(|p| p.get("text").and_then(Value::as_str))
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_default()
}

fn new_id() -> String {
    format!("{:016x}{:016x}", fastrand::u64(..), fastrand::u64(..))
}

fn state_name(v03: bool, state: &str) -> String {
    if v03 {
        state.to_string()
    } else {
        format!("TASK_STATE_{}", state.to_uppercase())
    }
}

/// The ids and the echo artifact of one message.
struct Work {
    task_id: String,
    context_id: String,
    artifact: Value,
}

fn work(params: &Value, v03: bool) -> Work {
    let context_id = params["message"]["contextId"]
        .as_str()
        .map(str::to_string)
        .unwrap_or_else(new_id);
    let text = format!("echo: {}", text_of(params));
    let part = if v03 {
        json!({"kind": "text", "text": text})
    } else {
        json!({"text": text})
    };
    Work {
        task_id: new_id(),
        context_id,
        artifact: json!({"artifactId": new_id(), "name": "echo", "parts": [part]}),
    }
}

fn task_json(w: &Work, v03: bool, state: &str, artifacts: bool) -> Value {
    let mut task = json!({
        "id": w.task_id,
        "contextId": w.context_id,
        "status": {"state": state_name(v03, state)},
    });
    if artifacts {
        task["artifacts"] = json!([w.artifact]);
    }
    if v03 {
        task["kind"] = json!("task");
    }
    task
}

fn remember(state: &State, task: &Value) {
    let Some(id) = task["id"].as_str() else {
        return;
    };
    if let Ok(mut tasks) = state.tasks.lock() {
        if tasks.len() >= MAX_TASKS {
            let drop: Vec<String> = tasks.keys().take(MAX_TASKS / 2).cloned().collect();
            for k in drop {
                tasks.remove(&k);
            }
        }
        tasks.insert(id.to_string(), task.clone());
    }
}

fn run_task(state: &State, params: &Value, v03: bool) -> Value {
    let w = work(params, v03);
    let task = task_json(&w, v03, "completed", true);
    remember(state, &task);
    task
}

/// `SendStreamingMessage`: the task, working, the artifact, completed, as SSE events.
fn stream(state: &State, id: Value, params: &Value, v03: bool) -> Response<SimBody> {
    let w = work(params, v03);
    let done = task_json(&w, v03, "completed", true);
    remember(state, &done);
    let status = |s: &str, last: bool| {
        let mut e = json!({"taskId": w.task_id, "contextId": w.context_id,
                           "status": {"state": state_name(v03, s)}});
        if v03 {
            e["kind"] = json!("status-update");
            e["final"] = json!(last);
            e
        } else {
            json!({ "statusUpdate": e })
        }
    };
    let artifact = {
        let mut e = json!({"taskId": w.task_id, "contextId": w.context_id,
                           "artifact": w.artifact, "lastChunk": true});
        if v03 {
            e["kind"] = json!("artifact-update");
            e
        } else {
            json!({ "artifactUpdate": e })
        }
    };
    let first = if v03 {
        task_json(&w, v03, "submitted", false)
    } else {
        json!({"task": task_json(&w, v03, "submitted", false)})
    };
    let events: Vec<Bytes> = [
        first,
        status("working", false),
        artifact,
        status("completed", true),
    ]
    .into_iter()
    .map(|result| {
        let msg = json!({"jsonrpc": "2.0", "id": id, "result": result});
        Bytes::from(format!("data: {msg}\n\n"))
    })
    .collect();
    let delay = state.options.stream_delay;
    let frames = futures_util::stream::unfold((events, 0usize), move |(events, i)| async move {
        if i >= events.len() {
            return None;
        }
        if i > 0 {
            tokio::time::sleep(delay).await;
        }
        let frame: Result<Frame<Bytes>, BoxError> = Ok(Frame::data(events[i].clone()));
        Some((frame, (events, i + 1)))
    });
    let mut r = Response::new(StreamBody::new(frames).boxed_unsync());
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn post(url: &str, body: Value) -> (StatusCode, String) {
        let uri: http::Uri = url.parse().unwrap();
        let addr = format!("{}:{}", uri.host().unwrap(), uri.port_u16().unwrap());
        let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (mut send, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                .await
                .unwrap();
        tokio::spawn(conn);
        let req = Request::post(uri)
            .header(header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(body.to_string())))
            .unwrap();
        let resp = send.send_request(req).await.unwrap();
        let status = resp.status();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        (status, String::from_utf8_lossy(&bytes).into_owned())
    }

    #[tokio::test]
    async fn echoes_streams_and_remembers_tasks() {
        let sim = spawn(Options {
            stream_delay: Duration::from_millis(1),
            ..Default::default()
        })
        .await
        .unwrap();
        let msg =
            json!({"message": {"messageId": "m1", "role": "ROLE_USER", "parts": [{"text": "hi"}]}});
        let (status, body) = post(
            &sim.url,
            json!({"jsonrpc": "2.0", "id": 1, "method": "SendMessage", "params": msg}),
        )
        .await;
        assert_eq!(status, 200);
        let v: Value = serde_json::from_str(&body).unwrap();
        let task = &v["result"]["task"];
        assert_eq!(task["status"]["state"], "TASK_STATE_COMPLETED");
        assert_eq!(task["artifacts"][0]["parts"][0]["text"], "echo: hi");
        let (_, got) = post(
            &sim.url,
            json!({"jsonrpc": "2.0", "id": 2, "method": "GetTask", "params": {"id": task["id"]}}),
        )
        .await;
        assert_eq!(
            serde_json::from_str::<Value>(&got).unwrap()["result"]["id"],
            task["id"]
        );

        let (_, sse) = post(
            &sim.url,
            json!({"jsonrpc": "2.0", "id": 3, "method": "message/stream", "params":
                   {"message": {"messageId": "m2", "role": "user", "parts": [{"kind": "text", "text": "yo"}]}}}),
        )
        .await;
        let events: Vec<Value> = sse
            .lines()
            .filter_map(|l| l.strip_prefix("data: "))
            .map(|d| serde_json::from_str(d).unwrap())
            .collect();
        assert_eq!(events.len(), 4, "{sse}");
        assert_eq!(events[0]["result"]["kind"], "task");
        assert_eq!(events[3]["result"]["final"], true);
        assert_eq!(events[3]["result"]["status"]["state"], "completed");
        assert_eq!(
            events[2]["result"]["artifact"]["parts"][0]["text"],
            "echo: yo"
        );

        let (_, err) = post(
            &sim.url,
            json!({"jsonrpc": "2.0", "id": 4, "method": "GetTask", "params": {"id": "nope"}}),
        )
        .await;
        assert_eq!(
            serde_json::from_str::<Value>(&err).unwrap()["error"]["code"],
            -32001
        );
    }
}
