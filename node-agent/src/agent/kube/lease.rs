//! The node's heartbeat: a coordination.k8s.io Lease renewed well within its duration. The
//! controller reads it to tell a live node from a lost one; heartbeats never write Node status.

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams};
use std::time::Duration;

/// The namespace holding node Leases.
pub const LEASE_NAMESPACE: &str = "univrs-system";

/// The Lease name of `node`.
pub fn lease_name(node: &str) -> String {
    format!("univrs-node-{node}")
}

/// Renews `node`'s Lease every third of `duration` until dropped; a failed renewal is retried
/// after a second.
pub async fn renew_forever(
    client: kube::Client,
    node: String,
    manager: String,
    duration: Duration,
) {
    let api: Api<Lease> = Api::namespaced(client, LEASE_NAMESPACE);
    let name = lease_name(&node);
    let every = (duration / 3).max(Duration::from_millis(500));
    let params = PatchParams::apply(&manager).force();
    let mut logged_failure = false;
    loop {
        let lease = Lease {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                ..Default::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: Some(node.clone()),
                lease_duration_seconds: Some(duration.as_secs().max(1) as i32),
                renew_time: Some(MicroTime(Timestamp::now())),
                ..Default::default()
            }),
        };
        match api.patch(&name, &params, &Patch::Apply(&lease)).await {
            Ok(_) => {
                if logged_failure {
                    tracing::info!(lease = %name, "renewing the Lease works again");
                    logged_failure = false;
                }
                tokio::time::sleep(every).await;
            }
            Err(e) => {
                if !logged_failure {
                    let hint = match &e {
                        kube::Error::Api(a) if a.code == 404 => format!(
                            " (does the namespace {LEASE_NAMESPACE} exist? `univrs up` and the Helm chart create it)"
                        ),
                        _ => String::new(),
                    };
                    tracing::warn!(lease = %name, "renewing the Lease failed: {e}{hint}");
                    logged_failure = true;
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}
