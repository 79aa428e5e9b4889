//! Installing or upgrading the CRDs: server-side apply (so a newer release updates them, and
//! fields others manage are kept), then waiting until the API server serves each one. Used by
//! `univrs up` with the generated CRDs and by the test harness with the files of `crds/`.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, Patch, PatchParams};
use std::time::{Duration, Instant};

/// Why the CRDs could not be installed.
#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    /// A CRD without a name.
    #[error("a CRD without a name")]
    Unnamed,
    /// The API server refused or failed a request.
    #[error("CRD {name}: {source}")]
    Kube {
        /// The CRD.
        name: String,
        /// What the API server said.
        source: kube::Error,
    },
    /// The API server did not report it Established in time.
    #[error("CRD {0} not Established after {1:?}")]
    NotEstablished(String, Duration),
}

/// How long a CRD may take to be Established.
const ESTABLISH_TIMEOUT: Duration = Duration::from_secs(60);

/// Applies `crds` as `manager` (forcing ownership of their fields) and waits until each is
/// Established.
pub async fn install(
    client: &kube::Client,
    manager: &str,
    crds: Vec<CustomResourceDefinition>,
) -> Result<(), InstallError> {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    let params = PatchParams::apply(manager).force();
    let mut names = Vec::new();
    for crd in crds {
        let name = crd.metadata.name.clone().ok_or(InstallError::Unnamed)?;
        let failed = |source| InstallError::Kube {
            name: name.clone(),
            source,
        };
        api.patch(&name, &params, &Patch::Apply(&crd))
            .await
            .map_err(failed)?;
        names.push(name);
    }
    let deadline = Instant::now() + ESTABLISH_TIMEOUT;
    for name in names {
        loop {
            let crd = api.get(&name).await.map_err(|source| InstallError::Kube {
                name: name.clone(),
                source,
            })?;
            let established = crd
                .status
                .and_then(|s| s.conditions)
                .unwrap_or_default()
                .iter()
                .any(|c| c.type_ == "Established" && c.status == "True");
            if established {
                break;
            }
            if Instant::now() > deadline {
                return Err(InstallError::NotEstablished(name, ESTABLISH_TIMEOUT));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    Ok(())
}
