//! Leader election on a coordination.k8s.io Lease, so only one controller writes.
//!
//! The holder renews every `renew` (2 s) with one write, of the Lease as it last wrote it (its
//! resourceVersion refuses the write if anyone else wrote since); a candidate takes over a Lease
//! not renewed within its duration (10 s), with optimistic concurrency (resourceVersion), so two
//! candidates can never both win. A leader that fails to renew before its Lease would lapse
//! stops leading. A leader asked to stop keeps renewing until its reconcilers have stopped, then
//! releases the Lease (no holder), which a candidate takes at once: a rolling update hands over
//! without a gap and without two writers.

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{Api, ObjectMeta, PostParams};
use std::time::Duration;
use univrs_api::resources::node::LEASE_NAMESPACE;

/// The Lease the controllers compete for.
pub const LEASE_NAME: &str = "univrs-controller";

/// Election settings.
#[derive(Clone, Debug)]
pub struct Elector {
    /// This candidate's identity.
    pub identity: String,
    /// How long a Lease is valid without renewal.
    pub lease_duration: Duration,
    /// How often the leader renews.
    pub renew: Duration,
}

impl Elector {
    /// A candidate named after the host and process.
    pub fn new() -> Self {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
        Self {
            identity: format!("{}-{}", host.trim(), std::process::id()),
            lease_duration: Duration::from_secs(10),
            renew: Duration::from_secs(2),
        }
    }

    fn spec(&self, now: Timestamp, transitions: i32, acquired: Option<MicroTime>) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(self.identity.clone()),
            lease_duration_seconds: Some(self.lease_duration.as_secs() as i32),
            acquire_time: Some(acquired.unwrap_or(MicroTime(now))),
            renew_time: Some(MicroTime(now)),
            lease_transitions: Some(transitions),
            ..Default::default()
        }
    }

    /// One attempt to acquire or renew, reading the Lease first: the Lease as written when
    /// this candidate holds it now.
    pub async fn try_acquire(&self, api: &Api<Lease>) -> Result<Option<Lease>, kube::Error> {
        let now = Timestamp::now();
        match api.get_opt(LEASE_NAME).await? {
            None => {
                let lease = Lease {
                    metadata: ObjectMeta {
                        name: Some(LEASE_NAME.into()),
                        ..Default::default()
                    },
                    spec: Some(self.spec(now, 0, None)),
                };
                match api.create(&PostParams::default(), &lease).await {
                    Ok(written) => Ok(Some(written)),
                    Err(kube::Error::Api(e)) if e.code == 409 => Ok(None),
                    Err(e) => Err(e),
                }
            }
            Some(mut lease) => {
                let spec = lease.spec.clone().unwrap_or_default();
                let mine = spec.holder_identity.as_deref() == Some(&self.identity);
                let duration =
                    SignedDuration::from_secs(i64::from(spec.lease_duration_seconds.unwrap_or(10)));
                let expired = spec
                    .renew_time
                    .as_ref()
                    .is_none_or(|r| r.0.checked_add(duration).is_ok_and(|t| t <= now));
                let released = spec.holder_identity.as_deref().is_none_or(str::is_empty);
                if !mine && !expired && !released {
                    return Ok(None);
                }
                let transitions = spec.lease_transitions.unwrap_or(0) + i32::from(!mine);
                let acquired = if mine { spec.acquire_time } else { None };
                lease.spec = Some(self.spec(now, transitions, acquired));
                // replace carries the resourceVersion we read: a concurrent taker gets 409.
                match api
                    .replace(LEASE_NAME, &PostParams::default(), &lease)
                    .await
                {
                    Ok(written) => Ok(Some(written)),
                    Err(kube::Error::Api(e)) if e.code == 409 => Ok(None),
                    Err(e) => Err(e),
                }
            }
        }
    }

    /// Renews the Lease as this leader last wrote it, without reading it first: one write per
    /// renewal, as client-go's leader election does. Its resourceVersion makes the write fail
    /// if anyone else wrote since, and only then is the Lease read and judged again.
    async fn renew(&self, api: &Api<Lease>, last: &Lease) -> Result<Option<Lease>, kube::Error> {
        let mut lease = last.clone();
        lease.spec.get_or_insert_with(Default::default).renew_time =
            Some(MicroTime(Timestamp::now()));
        match api
            .replace(LEASE_NAME, &PostParams::default(), &lease)
            .await
        {
            Ok(written) => Ok(Some(written)),
            Err(kube::Error::Api(e)) if e.code == 409 => self.try_acquire(api).await,
            Err(e) => Err(e),
        }
    }

    /// Waits until this candidate leads.
    ///
    /// A missing Lease namespace is said once, with the fix, then retried quietly until it
    /// exists: it is the one failure an operator must act on, and repeating it every 2 s
    /// buries everything else in the log.
    pub async fn acquire(&self, client: &kube::Client) -> Api<Lease> {
        let api: Api<Lease> = Api::namespaced(client.clone(), LEASE_NAMESPACE);
        let mut told_missing_namespace = false;
        loop {
            match self.try_acquire(&api).await {
                Ok(Some(_)) => return api,
                Ok(None) => {}
                Err(e) if namespace_missing(&e) => {
                    if told_missing_namespace {
                        tracing::debug!(error = %e, "leader election: namespace {LEASE_NAMESPACE} still missing");
                    } else {
                        tracing::warn!(
                            "leader election: namespace {LEASE_NAMESPACE} not found: create it with \
                             `kubectl create namespace {LEASE_NAMESPACE}` (`univrs up` and the Helm \
                             chart do this); retrying until it exists"
                        );
                        told_missing_namespace = true;
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "leader election: could not read or write the Lease")
                }
            }
            tokio::time::sleep(self.renew).await;
        }
    }

    /// Renews until leadership is lost; returns when it is.
    pub async fn hold(&self, api: Api<Lease>) {
        let mut last_ok = std::time::Instant::now();
        let mut last: Option<Lease> = None;
        loop {
            tokio::time::sleep(self.renew).await;
            let attempt = match &last {
                Some(l) => self.renew(&api, l).await,
                None => self.try_acquire(&api).await,
            };
            match attempt {
                Ok(Some(written)) => {
                    last = Some(written);
                    last_ok = std::time::Instant::now();
                }
                Ok(None) => return,
                Err(e) => {
                    tracing::warn!(error = %e, "leader election: renewal failed");
                    // Stop before the Lease can lapse, so two leaders never overlap.
                    if last_ok.elapsed() + self.renew >= self.lease_duration {
                        return;
                    }
                }
            }
        }
    }

    /// Gives the Lease up if this candidate still holds it (call once its writers have stopped),
    /// so the next candidate need not wait for it to lapse.
    pub async fn release(&self, api: &Api<Lease>) {
        let outcome = async {
            let Some(mut lease) = api.get_opt(LEASE_NAME).await? else {
                return Ok(false);
            };
            let spec = lease.spec.get_or_insert_with(Default::default);
            if spec.holder_identity.as_deref() != Some(&self.identity) {
                return Ok(false);
            }
            spec.holder_identity = None;
            spec.renew_time = Some(MicroTime(Timestamp::now()));
            // The resourceVersion read above: if anyone wrote since, they hold it, and we leave it.
            api.replace(LEASE_NAME, &PostParams::default(), &lease)
                .await
                .map(|_| true)
        }
        .await;
        match outcome {
            Ok(true) => tracing::info!(identity = %self.identity, "released the leader Lease"),
            Ok(false) => {}
            Err(e) => {
                tracing::warn!(error = %e, "could not release the leader Lease; it lapses instead")
            }
        }
    }
}

/// Whether the API server refused a Lease request because the namespace does not exist
/// (`namespaces "univrs-system" not found`; a missing Lease itself reads as none).
fn namespace_missing(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(a) if a.code == 404 && a.message.starts_with("namespaces "))
}

impl Default for Elector {
    fn default() -> Self {
        Self::new()
    }
}
