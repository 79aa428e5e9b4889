//! `univrs logs`: an instance's output from the node that runs it, printed as it comes.

use super::controller::{config, init_tracing};
use crate::cli::LogsArgs;
use crate::node_logs::{self, LogRequest, credentials::Credentials};
use anyhow::Context;
use tokio::io::AsyncWriteExt;

/// Runs `univrs logs` until the log ends (or Ctrl-C while following).
pub fn run(args: LogsArgs) -> anyhow::Result<()> {
    init_tracing(false);
    tokio::runtime::Runtime::new()?.block_on(async move {
        let config = config(crate::paths::kubeconfig_or_local(args.kubeconfig.clone())).await?;
        let namespace = args
            .namespace
            .clone()
            .unwrap_or_else(|| config.default_namespace.clone());
        let credentials = Credentials::from_config(&config)?;
        let client = kube::Client::try_from(config)?;
        let req = LogRequest {
            namespace,
            workload: args.workload,
            instance: args.instance,
            container: args.container,
            follow: args.follow,
            tail_lines: args.tail,
        };
        let mut log = node_logs::open(&client, &credentials, &req).await?;
        tracing::debug!(node = %log.node, instance = %log.instance, "reading the log");
        let mut out = tokio::io::stdout();
        while let Some(chunk) = log.next().await {
            out.write_all(&chunk?)
                .await
                .context("writing to standard output")?;
            out.flush().await?;
        }
        Ok(())
    })
}
