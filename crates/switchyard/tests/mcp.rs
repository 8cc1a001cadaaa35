//! MCP gateway end to end: the real binary federating the MCP reference server
//! (`@modelcontextprotocol/server-everything` from npm, over stdio) and the simulated MCP server
//! (streamable HTTP), driven by the official `mcp` Python SDK (`tests/mcp/client.py`) and by
//! raw HTTP for the wire details (CORS preflight, session errors, bad input).
//!
//! Needs `node`, `npm install --prefix crates/switchyard/tests/mcp` and the `.venv` that
//! `.ci/run` creates.
//!
//! The harness is `mcp_suite/harness.rs` and the tests are in `mcp_suite/`, one file per
//! topic (`tests/mcp/` is the npm folder of the reference server).

mod common;

#[path = "mcp_suite/harness.rs"]
mod harness;

#[path = "mcp_suite/authz.rs"]
mod authz;
#[path = "mcp_suite/federation.rs"]
mod federation;
#[path = "mcp_suite/logs.rs"]
mod logs;
#[path = "mcp_suite/modern.rs"]
mod modern;
#[path = "mcp_suite/sessions.rs"]
mod sessions;
#[path = "mcp_suite/tasks.rs"]
mod tasks;
#[path = "mcp_suite/transports.rs"]
mod transports;
#[path = "mcp_suite/upgrade.rs"]
mod upgrade;
#[path = "mcp_suite/wire.rs"]
mod wire;
