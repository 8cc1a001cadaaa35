//! The same regex guards on MCP traffic: the arguments of a `tools/call` or `prompts/get` (the
//! `request` guards) and the result of a `tools/call`, `prompts/get` or `resources/read` (the
//! `response` guards: tool output, prompt messages, resource contents), masked or refused with
//! a JSON-RPC error naming the guard. The MCP gateway calls them (`mcp::authz::ToolGuard`).

use std::sync::Arc;

use serde_json::Value;

use super::{PolicyError, Side};

pub struct ToolGuards {
    request: Option<Arc<Side>>,
    response: Option<Arc<Side>>,
}

impl ToolGuards {
    pub fn compile(g: &config::Guardrails) -> Result<ToolGuards, PolicyError> {
        let regex = |guards: &[config::Guard]| -> Vec<config::Guard> {
            guards
                .iter()
                .filter(|g| g.regex.is_some())
                .cloned()
                .collect()
        };
        Ok(ToolGuards {
            request: Side::compile(&regex(&g.request), "request")?,
            response: Side::compile(&regex(&g.response), "response")?,
        })
    }

    fn apply(side: &Option<Arc<Side>>, v: &mut Value) -> Result<(), String> {
        let Some(side) = side else {
            return Ok(());
        };
        let mut changed = false;
        side.walk(v, &mut changed)
            .map_err(|d| side.guard_name(d).to_string())
    }
}

impl mcp::authz::ToolGuard for ToolGuards {
    fn arguments(&self, args: &mut Value) -> Result<(), String> {
        Self::apply(&self.request, args)
    }

    fn result(&self, result: &mut Value) -> Result<(), String> {
        Self::apply(&self.response, result)
    }
}
