//! Why a tool call failed, worded for the agent that made it: what was wrong and what to do.
//!
//! Every failure is a tool-level error (`isError: true` with this text), not a JSON-RPC error,
//! because clients show tool errors to the model, which can then correct its call; protocol
//! errors are usually shown only as "internal error".

use rmcp::model::{CallToolResult, ContentBlock};

/// Why a tool call failed.
#[derive(Debug, thiserror::Error)]
pub enum ToolError {
    /// An argument is wrong; the message names it and says what is allowed.
    #[error("{0}")]
    Invalid(String),
    /// The object the call names does not exist.
    #[error("{what} not found; {hint}")]
    NotFound {
        /// What was looked for, such as `workload default/web`.
        what: String,
        /// Which tool shows what exists.
        hint: &'static str,
    },
    /// The API server refused the change (validation with its field path, a conflict, RBAC).
    #[error("the API server refused to {action}: {message}")]
    Refused {
        /// What was attempted, such as `apply workload default/web`.
        action: String,
        /// The API server's own message.
        message: String,
    },
    /// The API server could not be reached or failed.
    #[error("could not {action}: {source}")]
    Api {
        /// What was attempted.
        action: String,
        /// The client error.
        source: kube::Error,
    },
    /// The server was started without what the tool needs.
    #[error("{0}")]
    Unavailable(String),
}

/// What a 404 without an object name means: the API group itself is not served.
fn missing_api() -> String {
    format!(
        "the API server does not serve {}/{}: install the CRDs (univrs crds | kubectl apply \
         --server-side -f -) or point --kubeconfig at a Univrs cluster",
        univrs_api::GROUP,
        univrs_api::VERSION
    )
}

impl ToolError {
    /// Wraps a kube error from `action`: a 404 for an object becomes `NotFound` (for `what`,
    /// pointing at `hint`), a 404 for a missing namespace or API says so, an API server refusal
    /// keeps the server's message, anything else says the request failed.
    pub fn from_kube(
        action: impl Into<String>,
        what: impl Into<String>,
        hint: &'static str,
    ) -> impl FnOnce(kube::Error) -> Self {
        move |e| match e {
            kube::Error::Api(s) if s.code == 404 => {
                let (kind, name) = s.details.map(|d| (d.kind, d.name)).unwrap_or_default();
                if kind == "namespaces" {
                    Self::NotFound {
                        what: format!("namespace {name}"),
                        hint: "create it first (kubectl create namespace NAME) or use an existing one",
                    }
                } else if name.is_empty() {
                    Self::Unavailable(missing_api())
                } else {
                    Self::NotFound {
                        what: what.into(),
                        hint,
                    }
                }
            }
            kube::Error::Api(s) => Self::Refused {
                action: action.into(),
                message: if s.message.is_empty() {
                    format!("{} ({})", s.reason, s.code)
                } else {
                    s.message
                },
            },
            source => Self::Api {
                action: action.into(),
                source,
            },
        }
    }

    /// Wraps a kube error from a request that names no single object (a list).
    pub fn api(action: impl Into<String>) -> impl FnOnce(kube::Error) -> Self {
        Self::from_kube(action, String::new(), "")
    }

    /// The tool result that carries this error to the client.
    pub fn into_result(self) -> CallToolResult {
        CallToolResult::error(vec![ContentBlock::text(self.to_string())])
    }
}

/// What every tool returns: a JSON object on success, the error's text on failure.
pub type ToolResult = Result<serde_json::Value, ToolError>;

/// Turns a tool's outcome into its MCP result (structured content on success).
pub fn respond(r: ToolResult) -> CallToolResult {
    match r {
        Ok(v) => CallToolResult::structured(v),
        Err(e) => {
            tracing::debug!(error = %e, "tool call failed");
            e.into_result()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api(code: u16, message: &str, kind: &str, name: &str) -> kube::Error {
        kube::Error::Api(Box::new(kube::core::Status {
            code,
            message: message.into(),
            reason: "Invalid".into(),
            details: Some(
                serde_json::from_value(serde_json::json!({"kind": kind, "name": name})).unwrap(),
            ),
            ..Default::default()
        }))
    }

    #[test]
    fn kube_errors_say_what_to_do() {
        let e = ToolError::from_kube(
            "get workload default/web",
            "workload default/web",
            "workload_list shows what exists",
        )(api(
            404,
            "workloads.univrs.io \"web\" not found",
            "workloads",
            "web",
        ));
        assert_eq!(
            e.to_string(),
            "workload default/web not found; workload_list shows what exists"
        );
        let e = ToolError::api("list workloads")(api(404, "not found", "", ""));
        assert!(e.to_string().contains("install the CRDs"), "{e}");
        let e = ToolError::api("apply workload x/web")(api(404, "", "namespaces", "x"));
        assert!(
            e.to_string()
                .starts_with("namespace x not found; create it"),
            "{e}"
        );
        let e = ToolError::from_kube("apply workload default/web", "", "")(api(
            422,
            "spec.replicas: Invalid value: 5000: must be less than or equal to 1000",
            "",
            "",
        ));
        assert_eq!(
            e.to_string(),
            "the API server refused to apply workload default/web: spec.replicas: Invalid value: 5000: must be less than or equal to 1000"
        );
        let r = e.into_result();
        assert_eq!(r.is_error, Some(true));
    }
}
