//! The MCP server: the tool list (each tool a method; its doc comment is its description and
//! its argument type's schema its input schema) and the cluster summary resource.

use super::args::{
    CreditLinesArgs, DeployArgs, ListArgs, LogsArgs, NodeRef, ReputationArgs, ScaleArgs, VouchArgs,
    WorkloadRef,
};
use super::error::respond;
use super::{credit, logs, nodes, summary, trust, workloads};
use crate::node_logs::credentials::Credentials;
use rmcp::handler::server::router::tool::ToolRouter;
use rmcp::handler::server::wrapper::Parameters;
use rmcp::model::{
    CallToolResult, Implementation, ListResourcesResult, PaginatedRequestParams,
    ReadResourceRequestParams, ReadResourceResponse, ReadResourceResult, Resource,
    ResourceContents, ServerCapabilities, ServerConfig,
};
use rmcp::service::RequestContext;
use rmcp::{ErrorData, RoleServer, ServerHandler, tool, tool_handler, tool_router};
use std::sync::Arc;
use univrs_api::identity::NodeIdentity;

/// What the server tells a client about itself when it connects.
const INSTRUCTIONS: &str = "Univrs runs containers on community-owned machines. \
Read univrs://cluster/summary or call cluster_nodes and workload_list to see what exists. \
workload_deploy creates or updates a Workload (image, replicas, ports, resources); \
workload_get shows where its instances run and why (conditions and Events); \
workload_scale changes its replica count; workload_logs reads an instance's output. Credit is mutual credit in integer milli-credits.";

/// The Univrs MCP server: a Kubernetes client, the optional identity vouches are signed with,
/// and the tools.
#[derive(Clone)]
pub struct UnivrsMcp {
    client: kube::Client,
    identity: Option<Arc<NodeIdentity>>,
    /// The credentials shown to node servers for logs (or why the kubeconfig has none).
    log_credentials: Arc<Result<Credentials, String>>,
    tool_router: ToolRouter<Self>,
}

#[tool_router]
impl UnivrsMcp {
    /// A server acting through `client`, signing vouches with `identity` when given and
    /// reading logs with `log_credentials` (those of `client`'s kubeconfig).
    pub fn new(
        client: kube::Client,
        identity: Option<NodeIdentity>,
        log_credentials: Result<Credentials, String>,
    ) -> Self {
        Self {
            client,
            identity: identity.map(Arc::new),
            log_credentials: Arc::new(log_credentials),
            tool_router: Self::tool_router(),
        }
    }

    /// Create or update a Workload (containers run as `replicas` instances on community nodes).
    /// Declarative: the call states the whole container (fields left out are removed), except
    /// `replicas`, which an update keeps when not given. Applied with server-side apply.
    #[tool(annotations(idempotent_hint = true, destructive_hint = false))]
    async fn workload_deploy(&self, Parameters(args): Parameters<DeployArgs>) -> CallToolResult {
        respond(workloads::deploy(&self.client, args).await)
    }

    /// The last lines an instance of a Workload wrote (stdout and stderr), read from the node
    /// that runs it, which checks with the API server that this server may read
    /// `workloads/log` in the namespace.
    #[tool(annotations(read_only_hint = true))]
    async fn workload_logs(&self, Parameters(args): Parameters<LogsArgs>) -> CallToolResult {
        respond(logs::read(&self.client, &self.log_credentials, args).await)
    }

    /// List Workloads (one namespace, or all) with desired, placed and ready replicas.
    #[tool(annotations(read_only_hint = true))]
    async fn workload_list(&self, Parameters(args): Parameters<ListArgs>) -> CallToolResult {
        respond(workloads::list(&self.client, args).await)
    }

    /// One Workload in full: spec, conditions (Scheduled, Available, Progressing,
    /// CreditExhausted), each instance's node and phase, and its recent Events.
    #[tool(annotations(read_only_hint = true))]
    async fn workload_get(&self, Parameters(args): Parameters<WorkloadRef>) -> CallToolResult {
        respond(workloads::get(&self.client, args).await)
    }

    /// Set a Workload's replica count (0 to 1000) through its scale subresource.
    #[tool(annotations(idempotent_hint = true, destructive_hint = false))]
    async fn workload_scale(&self, Parameters(args): Parameters<ScaleArgs>) -> CallToolResult {
        respond(workloads::scale(&self.client, args).await)
    }

    /// Delete a Workload; its instances stop on their nodes.
    #[tool(annotations(destructive_hint = true))]
    async fn workload_delete(&self, Parameters(args): Parameters<WorkloadRef>) -> CallToolResult {
        respond(workloads::delete(&self.client, args).await)
    }

    /// The nodes: Ready, cordoned or draining, reputation, capacity and allocation, nexus role,
    /// septal gate (circuit breaker) and credit balance.
    #[tool(annotations(read_only_hint = true))]
    async fn cluster_nodes(&self) -> CallToolResult {
        respond(nodes::list(&self.client).await)
    }

    /// Cordon a node: nothing new is placed on it; what runs there keeps running.
    #[tool(annotations(idempotent_hint = true, destructive_hint = false))]
    async fn node_cordon(&self, Parameters(args): Parameters<NodeRef>) -> CallToolResult {
        respond(nodes::cordon(&self.client, args).await)
    }

    /// Uncordon a node: it takes new instances again, and a drain ends.
    #[tool(annotations(idempotent_hint = true, destructive_hint = false))]
    async fn node_uncordon(&self, Parameters(args): Parameters<NodeRef>) -> CallToolResult {
        respond(nodes::uncordon(&self.client, args).await)
    }

    /// Drain a node: cordon it and have the controller move its instances to other nodes.
    #[tool(annotations(idempotent_hint = true, destructive_hint = true))]
    async fn node_drain(&self, Parameters(args): Parameters<NodeRef>) -> CallToolResult {
        respond(nodes::drain(&self.client, args).await)
    }

    /// Every account's credit balance (owed to it minus what it owes, milli-credits); the
    /// balances of mutual credit always sum to zero.
    #[tool(annotations(read_only_hint = true))]
    async fn credit_balances(&self) -> CallToolResult {
        respond(credit::balances(&self.client).await)
    }

    /// Credit lines: creditor, debtor, limit, balance (what the debtor owes), utilization.
    #[tool(annotations(read_only_hint = true))]
    async fn credit_lines(&self, Parameters(args): Parameters<CreditLinesArgs>) -> CallToolResult {
        respond(credit::lines(&self.client, args).await)
    }

    /// Each node's reputation (0 to 1), its service record, and the vouches it received and gave.
    #[tool(annotations(read_only_hint = true))]
    async fn reputation(&self, Parameters(args): Parameters<ReputationArgs>) -> CallToolResult {
        respond(trust::reputation(&self.client, args).await)
    }

    /// Vouch for a node: a Vouch signed with this server's identity (--identity), which the
    /// controller verifies and weighs into the node's reputation.
    #[tool(annotations(destructive_hint = false))]
    async fn vouch_create(&self, Parameters(args): Parameters<VouchArgs>) -> CallToolResult {
        respond(trust::vouch(&self.client, self.identity.as_deref(), args).await)
    }
}

#[tool_handler(router = self.tool_router)]
impl ServerHandler for UnivrsMcp {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(
            ServerCapabilities::builder()
                .enable_tools()
                .enable_resources()
                .build(),
        )
        .with_server_info(Implementation::new("univrs", env!("CARGO_PKG_VERSION")))
        .with_instructions(INSTRUCTIONS)
    }

    async fn list_resources(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListResourcesResult, ErrorData> {
        Ok(ListResourcesResult::with_all_items(vec![
            Resource::new(summary::URI, "cluster-summary")
                .with_title("Univrs cluster summary")
                .with_description(
                    "Nodes (ready, cordoned, isolated, capacity and allocation), workloads by \
                     namespace (desired and ready replicas) and credit totals",
                )
                .with_mime_type("application/json"),
        ]))
    }

    async fn read_resource(
        &self,
        request: ReadResourceRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<ReadResourceResponse, ErrorData> {
        if request.uri != summary::URI {
            return Err(ErrorData::resource_not_found(
                format!(
                    "no resource {}; resources/list shows {}",
                    request.uri,
                    summary::URI
                ),
                None,
            ));
        }
        let v = summary::read(&self.client)
            .await
            .map_err(|e| ErrorData::internal_error(e.to_string(), None))?;
        let text = serde_json::to_string_pretty(&v)
            .map_err(|e| ErrorData::internal_error(e.to_string(), None))?;
        Ok(ReadResourceResult::new(vec![
            ResourceContents::text(text, summary::URI).with_mime_type("application/json"),
        ])
        .into())
    }
}
