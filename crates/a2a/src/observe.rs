//! What the gateway learns about a task from the agent's answers: one JSON document (a task, a
//! message, a send result) or the events of a stream, in any of the shapes the two versions
//! and three bindings use:
//!
//! - JSON-RPC wraps everything in `{"jsonrpc": "2.0", "result": ...}` (or `error`);
//! - v1.0 wraps by member name: `{"task": ...}`, `{"message": ...}`, `{"statusUpdate": ...}`,
//!   `{"artifactUpdate": ...}` (the v1.0 notes' drafts say `taskStatusUpdate` /
//!   `taskArtifactUpdate`: read too); `GetTask` / `CancelTask` answer a bare task;
//! - v0.3 discriminates with `kind`: `task`, `message`, `status-update` (with `final`),
//!   `artifact-update`.
//!
//! Only ids, states and artifact ids are read (typed, everything else skipped), so a large
//! artifact costs a scan, not a tree.

use std::borrow::Cow;

use serde::Deserialize;

/// A task's lifecycle state, either version's spelling.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TaskState {
    Submitted,
    Working,
    InputRequired,
    AuthRequired,
    Completed,
    Canceled,
    Failed,
    Rejected,
    Unknown,
}

impl TaskState {
    /// v0.3 `completed`, v1.0 `TASK_STATE_COMPLETED`.
    pub fn parse(s: &str) -> TaskState {
        // Once per stream event: compared in place, no lowercased copy.
        let s = s.strip_prefix("TASK_STATE_").unwrap_or(s);
        const NAMES: [(&str, TaskState); 9] = [
            ("submitted", TaskState::Submitted),
            ("working", TaskState::Working),
            ("input-required", TaskState::InputRequired),
            ("auth-required", TaskState::AuthRequired),
            ("completed", TaskState::Completed),
            ("canceled", TaskState::Canceled),
            ("cancelled", TaskState::Canceled),
            ("failed", TaskState::Failed),
            ("rejected", TaskState::Rejected),
        ];
        let same = |name: &str| {
            name.len() == s.len()
                && name
                    .bytes()
                    .zip(s.bytes())
                    .all(|(n, c)| n == c.to_ascii_lowercase() || (n == b'-' && c == b'_'))
        };
        NAMES
            .iter()
            .find(|(name, _)| same(name))
            .map_or(TaskState::Unknown, |(_, state)| *state)
    }

    /// The name in logs and metrics (bounded): v0.3's spelling, which reads best.
    pub fn as_str(self) -> &'static str {
        match self {
            TaskState::Submitted => "submitted",
            TaskState::Working => "working",
            TaskState::InputRequired => "input-required",
            TaskState::AuthRequired => "auth-required",
            TaskState::Completed => "completed",
            TaskState::Canceled => "canceled",
            TaskState::Failed => "failed",
            TaskState::Rejected => "rejected",
            TaskState::Unknown => "unknown",
        }
    }

    /// No further change will come (completed, canceled, failed, rejected).
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            TaskState::Completed | TaskState::Canceled | TaskState::Failed | TaskState::Rejected
        )
    }
}

/// Most distinct artifact ids remembered per exchange (counting stops growing past it).
const MAX_ARTIFACT_IDS: usize = 256;

/// What one exchange showed of its task.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Observation {
    pub task_id: Option<String>,
    pub context_id: Option<String>,
    /// The last state seen.
    pub state: Option<TaskState>,
    /// State changes seen (a stream's transitions; a single answer counts its one state).
    pub transitions: u32,
    /// v0.3's `final: true` was seen (v1.0 ends a stream by closing it).
    pub final_event: bool,
    /// Events read (stream) or documents read (one answer: 1).
    pub events: u32,
    /// Distinct artifacts seen.
    pub artifacts: u32,
    /// The agent answered with a message instead of a task.
    pub message: bool,
    /// The agent answered (or a stream carried) a JSON-RPC error.
    pub error: bool,
    artifact_ids: Vec<String>,
}

/// Strings are borrowed from the document where it has no escapes (ids and states never do).
#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct Node<'a> {
    #[serde(borrow)]
    result: Option<Box<Node<'a>>>,
    error: Option<serde::de::IgnoredAny>,
    #[serde(borrow)]
    task: Option<Box<Node<'a>>>,
    #[serde(borrow)]
    message: Option<Box<Node<'a>>>,
    #[serde(borrow, alias = "taskStatusUpdate")]
    status_update: Option<Box<Node<'a>>>,
    #[serde(borrow, alias = "taskArtifactUpdate")]
    artifact_update: Option<Box<Node<'a>>>,
    #[serde(borrow)]
    kind: Option<Cow<'a, str>>,
    /// A task's id, or a JSON-RPC envelope's (a number or string): read loosely.
    id: Option<serde_json::Value>,
    #[serde(borrow)]
    task_id: Option<Cow<'a, str>>,
    #[serde(borrow)]
    context_id: Option<Cow<'a, str>>,
    message_id: Option<serde::de::IgnoredAny>,
    #[serde(borrow)]
    status: Option<Status<'a>>,
    #[serde(rename = "final")]
    is_final: bool,
    #[serde(borrow)]
    artifact: Option<ArtifactId<'a>>,
    #[serde(borrow)]
    artifacts: Option<Vec<ArtifactId<'a>>>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct Status<'a> {
    #[serde(borrow)]
    state: Option<Cow<'a, str>>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct ArtifactId<'a> {
    #[serde(borrow)]
    artifact_id: Option<Cow<'a, str>>,
}

enum Shape {
    Task,
    Message,
    StatusUpdate,
    ArtifactUpdate,
}

impl Observation {
    /// Reads one JSON document (an answer, or one stream event's data). Not JSON, or not a
    /// shape A2A defines: ignored (the gateway forwards it anyway).
    pub fn read(&mut self, json: &[u8]) {
        let Ok(node) = serde_json::from_slice::<Node>(json) else {
            return;
        };
        self.events = self.events.saturating_add(1);
        self.apply(&node, 0);
    }

    fn apply(&mut self, node: &Node<'_>, depth: u8) {
        if depth > 3 {
            return;
        }
        if node.error.is_some() {
            self.error = true;
        }
        let wrapped = [
            (&node.result, None),
            (&node.task, Some(Shape::Task)),
            (&node.message, Some(Shape::Message)),
            (&node.status_update, Some(Shape::StatusUpdate)),
            (&node.artifact_update, Some(Shape::ArtifactUpdate)),
        ];
        let mut any = false;
        for (inner, shape) in wrapped {
            if let Some(inner) = inner {
                any = true;
                match shape {
                    Some(s) => self.apply_shape(inner, s),
                    None => self.apply(inner, depth + 1),
                }
            }
        }
        if any {
            return;
        }
        let shape = match node.kind.as_deref() {
            Some("task") => Shape::Task,
            Some("message") => Shape::Message,
            Some("status-update" | "taskStatusUpdate") => Shape::StatusUpdate,
            Some("artifact-update" | "taskArtifactUpdate") => Shape::ArtifactUpdate,
            Some(_) => return,
            // v1.0's bare Task (GetTask, CancelTask, HTTP+JSON answers).
            None if node.id.is_some() && node.status.is_some() => Shape::Task,
            None => return,
        };
        self.apply_shape(node, shape);
    }

    fn apply_shape(&mut self, node: &Node<'_>, shape: Shape) {
        let task_id = match shape {
            Shape::Task => node.id.as_ref().and_then(serde_json::Value::as_str),
            _ => node.task_id.as_deref(),
        };
        if let Some(id) = task_id.filter(|s| !s.is_empty()) {
            if self.task_id.as_deref() != Some(id) {
                self.task_id = Some(id.to_string());
            }
        }
        if let Some(c) = node.context_id.as_deref().filter(|s| !s.is_empty()) {
            if self.context_id.as_deref() != Some(c) {
                self.context_id = Some(c.to_string());
            }
        }
        match shape {
            Shape::Message => {
                // A message ends a non-task exchange; it may also name a task.
                self.message = self.task_id.is_none() && node.message_id.is_some();
            }
            Shape::Task | Shape::StatusUpdate => {
                if let Some(s) = node.status.as_ref().and_then(|s| s.state.as_deref()) {
                    let state = TaskState::parse(s);
                    if self.state != Some(state) {
                        self.transitions = self.transitions.saturating_add(1);
                    }
                    self.state = Some(state);
                    self.message = false;
                }
                if node.is_final {
                    self.final_event = true;
                }
                for a in node.artifacts.iter().flatten() {
                    self.note_artifact(a);
                }
            }
            Shape::ArtifactUpdate => {
                if let Some(a) = &node.artifact {
                    self.note_artifact(a);
                }
            }
        }
    }

    fn note_artifact(&mut self, a: &ArtifactId<'_>) {
        let Some(id) = a.artifact_id.as_deref() else {
            return;
        };
        if self.artifact_ids.iter().any(|k| k == id) || self.artifact_ids.len() >= MAX_ARTIFACT_IDS
        {
            return;
        }
        self.artifact_ids.push(id.to_string());
        self.artifacts = self.artifact_ids.len() as u32;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_v0_3_json_rpc_task_result() {
        // The v0.3 specification's `message/send` answer.
        let mut o = Observation::default();
        o.read(
            br#"{"jsonrpc":"2.0","id":1,"result":{
              "id":"363422be-b0f9-4692-a24d-278670e7c7f1",
              "contextId":"c295ea44-7543-4f78-b524-7a38915ad6e4",
              "status":{"state":"completed"},
              "artifacts":[{"artifactId":"9b6934dd-37e3-4eb1-8766-962efaab63a1","name":"joke",
                "parts":[{"kind":"text","text":"Why did the chicken cross the road?"}]}],
              "history":[{"role":"user","parts":[{"kind":"text","text":"tell me a joke"}],"messageId":"m1"}],
              "kind":"task","metadata":{}}}"#,
        );
        assert_eq!(
            o.task_id.as_deref(),
            Some("363422be-b0f9-4692-a24d-278670e7c7f1")
        );
        assert_eq!(
            o.context_id.as_deref(),
            Some("c295ea44-7543-4f78-b524-7a38915ad6e4")
        );
        assert_eq!(o.state, Some(TaskState::Completed));
        assert_eq!(o.artifacts, 1);
        assert!(!o.error && !o.message);
    }

    #[test]
    fn v1_0_wrapped_and_bare_tasks() {
        let mut o = Observation::default();
        o.read(
            br#"{"jsonrpc":"2.0","id":"1","result":{"task":{"id":"t1","contextId":"c1",
              "status":{"state":"TASK_STATE_WORKING","timestamp":"2025-10-27T10:00:00.000Z"}}}}"#,
        );
        assert_eq!(o.task_id.as_deref(), Some("t1"));
        assert_eq!(o.state, Some(TaskState::Working));
        // HTTP+JSON GetTask: the task itself.
        let mut o = Observation::default();
        o.read(br#"{"id":"t2","contextId":"c2","status":{"state":"TASK_STATE_CANCELED"},"artifacts":[]}"#);
        assert_eq!(
            (o.task_id.as_deref(), o.state),
            (Some("t2"), Some(TaskState::Canceled))
        );
        assert!(o.state.unwrap().is_terminal());
    }

    #[test]
    fn messages_and_errors() {
        let mut o = Observation::default();
        o.read(
            br#"{"message":{"messageId":"m9","contextId":"c9","role":"ROLE_AGENT","parts":[{"text":"hi"}]}}"#,
        );
        assert!(o.message);
        assert_eq!(o.context_id.as_deref(), Some("c9"));
        assert_eq!(o.task_id, None);
        let mut o = Observation::default();
        o.read(br#"{"jsonrpc":"2.0","id":3,"error":{"code":-32001,"message":"Task not found"}}"#);
        assert!(o.error);
        assert_eq!(o.events, 1);
    }

    #[test]
    fn not_json_is_ignored() {
        let mut o = Observation::default();
        o.read(b"<html>");
        o.read(br#"{"kind":"something-else","taskId":"x"}"#);
        assert_eq!(o.events, 1);
        assert_eq!(o.task_id, None);
    }

    #[test]
    fn states_of_both_spellings() {
        for (s, want) in [
            ("input-required", TaskState::InputRequired),
            ("TASK_STATE_INPUT_REQUIRED", TaskState::InputRequired),
            ("TASK_STATE_AUTH_REQUIRED", TaskState::AuthRequired),
            ("rejected", TaskState::Rejected),
            ("TASK_STATE_UNSPECIFIED", TaskState::Unknown),
        ] {
            assert_eq!(TaskState::parse(s), want, "{s}");
        }
    }
}
