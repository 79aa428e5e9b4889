//! `workload_logs`: an instance's last lines, through the node that runs it
//! (`crate::node_logs`, the same path as `univrs logs` and the dashboard).

use super::args::{LogsArgs, namespace_or_default};
use super::error::{ToolError, ToolResult};
use crate::node_logs::credentials::Credentials;
use crate::node_logs::{self, LogError, LogRequest};
use serde_json::json;

/// The most lines one call returns.
const MAX_LINES: usize = 1000;
/// The most bytes one call returns (long lines are the container's business, not the model's).
const MAX_BYTES: usize = 256 * 1024;

/// Reads the log `args` names.
pub async fn read(
    client: &kube::Client,
    credentials: &Result<Credentials, String>,
    args: LogsArgs,
) -> ToolResult {
    let tail = args.tail_lines.unwrap_or(100);
    if !(1..=MAX_LINES).contains(&tail) {
        return Err(ToolError::Invalid(format!(
            "tailLines is {tail}; give 1 to {MAX_LINES}"
        )));
    }
    let credentials = credentials
        .as_ref()
        .map_err(|e| ToolError::Unavailable(e.clone()))?;
    let namespace = namespace_or_default(&args.namespace).to_string();
    let req = LogRequest {
        namespace: namespace.clone(),
        workload: args.name.clone(),
        instance: args.instance,
        container: args.container,
        follow: false,
        tail_lines: Some(tail),
    };
    let mut log = node_logs::open(client, credentials, &req)
        .await
        .map_err(|e| match e {
            LogError::NotFound(m) => ToolError::NotFound {
                what: m,
                hint: "workload_get lists a Workload's instances and where they run",
            },
            LogError::Forbidden(m) => ToolError::Refused {
                action: format!("read the logs of workload {namespace}/{}", args.name),
                message: m,
            },
            e => ToolError::Unavailable(e.to_string()),
        })?;
    let mut bytes = Vec::new();
    while let Some(chunk) = log.next().await {
        let chunk = chunk.map_err(|e| ToolError::Unavailable(e.to_string()))?;
        bytes.extend_from_slice(&chunk);
    }
    let truncated = bytes.len() > MAX_BYTES;
    if truncated {
        bytes.drain(..bytes.len() - MAX_BYTES);
    }
    Ok(json!({
        "workload": format!("{namespace}/{}", args.name),
        "instance": log.instance,
        "node": log.node,
        "truncated": truncated,
        "log": String::from_utf8_lossy(&bytes),
    }))
}
