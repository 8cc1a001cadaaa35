//! Tasks (the 2025-11-25 `tasks` capability) federated: the reference server as a stdio target
//! and as a streamable-HTTP target, driven by the official `mcp` SDK's tasks client; task ids
//! sealed into handles that name their target and session, read from a second replica.

use crate::common::{free_port, wait_until, Proc};
use crate::harness::*;
use serde_json::{json, Value};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::time::Duration;

fn everything_http() -> (Proc, u16) {
    let port = free_port();
    let p = Proc(
        Command::new("node")
            .arg(everything())
            .arg("streamableHttp")
            .env("PORT", port.to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    wait_until("reference server on HTTP", Duration::from_secs(20), || {
        TcpStream::connect(addr).is_ok()
    });
    (p, port)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tasks_are_federated_under_sealed_handles() {
    let (_everything, web) = everything_http();
    let sim = sim::mcp::spawn(sim::mcp::Options::default()).await.unwrap();
    let targets = format!(
        "          - name: remote\n            mcp:\n              host: http://127.0.0.1:{web}/mcp\n"
    );
    // Two replicas sharing the session key (the harness's config sets it).
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (a, b) = (free_port(), free_port());
    let _gw_a = start(dir_a.path(), a, &config_with(a, &sim.url, "", &targets));
    let _gw_b = start(dir_b.path(), b, &config_with(b, &sim.url, "", &targets));

    let (url_a, url_b) = (
        format!("http://127.0.0.1:{a}/mcp"),
        format!("http://127.0.0.1:{b}/mcp"),
    );
    let out = tokio::task::spawn_blocking(move || {
        python_cmd()
            .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/mcp/client.py"))
            .args(["tasks", &url_a, &url_b])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "client failed: {stderr}");
    let v: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {stderr}"));

    // The capability the targets declare is the gateway's (it was dropped before).
    assert!(v["caps"]["list"].is_object(), "{v}");
    assert!(v["caps"]["cancel"].is_object(), "{v}");
    assert!(v["caps"]["requests"]["tools"]["call"].is_object(), "{v}");
    assert_eq!(v["task_support"], "required");

    // A task-augmented call: a handle, polled to completion under the same handle, its payload.
    let tid = v["tid"].as_str().unwrap();
    assert!(
        tid.len() > 80,
        "a sealed handle, not the target's own id: {tid}"
    );
    assert_eq!(v["created_status"], "working");
    let statuses: Vec<&str> = v["statuses"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap())
        .collect();
    assert_eq!(statuses.last(), Some(&"completed"), "{v}");
    assert!(statuses.contains(&"working"), "{v}");
    assert_eq!(
        v["polled_ids"],
        json!([tid]),
        "tasks/get answers under the handle"
    );
    assert!(
        v["result"]
            .as_str()
            .unwrap()
            .contains("Research Report: gateways"),
        "{v}"
    );

    // Cancel, on the other target (stdio).
    let oid = v["oid"].as_str().unwrap();
    assert_ne!(oid, tid);
    assert_eq!(
        v["cancelled"],
        json!({"taskId": oid, "status": "cancelled"})
    );
    assert_eq!(v["after_cancel"], "cancelled");

    // tasks/list merges both targets' tasks, under the same handles.
    assert_eq!(v["listed"][tid], "completed", "{v}");
    assert_eq!(v["listed"][oid], "cancelled", "{v}");

    // Forged and tampered handles are refused.
    for k in ["raw", "tampered"] {
        assert_eq!(v["forged"][k]["code"], -32602, "{k}: {v}");
        assert!(
            v["forged"][k]["message"]
                .as_str()
                .unwrap()
                .contains("unknown task"),
            "{k}: {v}"
        );
    }

    // The second replica resumes the session and reaches the task on its target.
    let third = v["third_id"].as_str().unwrap();
    let r = &v["replica"];
    assert_eq!(r["first_id"], third, "{v}");
    assert_eq!(r["final_status"], "completed", "{v}");
    assert!(
        r["result"]
            .as_str()
            .unwrap()
            .contains("Research Report: replicas"),
        "{v}"
    );
    assert!(
        r["listed"].as_array().unwrap().iter().any(|t| t == third),
        "{v}"
    );

    // A valid handle from another session is refused: handles are bound to their session.
    let sid = raw_session(a);
    let (status, _, body) = exchange(
        a,
        "POST",
        &[JSON, ACCEPT, ("mcp-session-id", &sid)],
        &format!(
            r#"{{"jsonrpc":"2.0","id":7,"method":"tasks/get","params":{{"taskId":"{tid}"}}}}"#
        ),
    );
    assert_eq!(status, 200, "{body}");
    assert!(
        body.contains("-32602") && body.contains("unknown task"),
        "{body}"
    );
}
