//! Pulling an image from a registry with `oci-client`: the manifest (through an index to this
//! platform's manifest), the config and the layers, each verified against its digest and
//! stored once, then the layers unpacked and the reference recorded.

use super::auth::Access;
use super::digest::Digest;
use super::error::ImageError;
use super::manifest::{self, ACCEPTED, Descriptor, Document, MAX_DOCUMENT_BYTES, Platform};
use super::reference::parse_layout_reference;
use super::registry::{PullOptions, is_loopback};
use super::store::{Image, ImageStore};
use crate::fsutil::error_chain;
use futures::StreamExt;
use oci_client::errors::{OciDistributionError, OciErrorCode};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};

/// One pull: the reference, the client and its credentials.
struct Puller<'a> {
    store: &'a ImageStore,
    client: Client,
    auth: RegistryAuth,
    access: Access,
    reference: Reference,
    canonical: String,
    max_image_bytes: Option<u64>,
}

impl ImageStore {
    /// Pulls `reference` (or imports it, for `oci:DIR:TAG`) and returns the image, its layers
    /// unpacked. Content already in the store is neither fetched nor unpacked again; every
    /// fetched blob is verified against its digest before it is stored.
    pub async fn pull(&self, reference: &str, opts: &PullOptions) -> Result<Image, ImageError> {
        if let Some((dir, tag)) = parse_layout_reference(reference)? {
            let store = self.clone();
            return blocking(move || store.import_oci_layout(&dir, &tag)).await;
        }
        let parsed: Reference = reference.parse().map_err(|e: oci_client::ParseError| {
            ImageError::InvalidReference {
                reference: reference.to_string(),
                reason: e.to_string(),
            }
        })?;
        let store = self.clone();
        // Held until the reference is recorded, so `gc` never removes what this pull stored.
        let _lock = blocking(move || store.lock(false)).await?;
        let registry = parsed.registry().to_string();
        match self.pull_from(reference, &parsed, opts).await {
            // A registry on this machine's loopback that does not speak HTTPS is spoken with
            // over plain HTTP, as Docker and containerd do, without --insecure-registry.
            Err(ImageError::Unreachable { message: https, .. })
                if is_loopback(&registry) && !opts.plain_http(&registry) =>
            {
                let plain = opts.with_plain_http(&registry);
                self.pull_from(reference, &parsed, &plain)
                    .await
                    .map_err(|e| match e {
                        // Neither spoke: both say why (a certificate, a refused connection).
                        ImageError::Unreachable { reference, message }
                        | ImageError::Registry { reference, message } => ImageError::Unreachable {
                            reference,
                            message: format!("over HTTPS: {https}; over plain HTTP: {message}"),
                        },
                        e => e,
                    })
            }
            result => result,
        }
    }

    /// One attempt at pulling `parsed` (`reference` as given) with `opts`.
    async fn pull_from(
        &self,
        reference: &str,
        parsed: &Reference,
        opts: &PullOptions,
    ) -> Result<Image, ImageError> {
        let puller = Puller {
            store: self,
            client: opts.client(reference)?,
            auth: opts.auth_for(parsed.registry()),
            access: opts.access(parsed.registry(), self.credential_salt()),
            max_image_bytes: opts.max_image_bytes,
            canonical: parsed.whole(),
            reference: parsed.clone(),
        };
        puller
            .pull(opts.platform.clone().unwrap_or_else(Platform::host))
            .await
    }
}

impl ImageStore {
    /// Who may reuse what a pull of `reference` with `opts` stores (see [`Access`]), derived
    /// as the pull derives it, so a Workload looks in the store with the key its own pull
    /// records. `oci:` layouts (and unreadable references, which nothing stores) are shared.
    pub fn access_for(&self, reference: &str, opts: &PullOptions) -> Access {
        match reference.parse::<Reference>() {
            Ok(r) if !reference.starts_with("oci:") => {
                opts.access(r.registry(), self.credential_salt())
            }
            _ => Access::Shared,
        }
    }
}

impl Puller<'_> {
    async fn pull(&self, platform: Platform) -> Result<Image, ImageError> {
        let (top_bytes, top_digest) = self.manifest(&self.reference, None).await?;
        let top_context = format!("manifest {top_digest} of {}", self.canonical);
        let (manifest_bytes, digest, index) =
            match manifest::parse_document(&top_bytes, &top_context)? {
                Document::Manifest(_) => (top_bytes, top_digest, None),
                Document::Index(ix) => {
                    let chosen = manifest::select_platform(&ix, &platform, &self.canonical)?;
                    if manifest::is_index_type(&chosen.media_type) {
                        return Err(ImageError::Manifest {
                            context: format!("index {top_digest} of {}", self.canonical),
                            reason: "nested image indexes are not supported".into(),
                        });
                    }
                    let wanted = Digest::parse(&chosen.digest, &top_context)?;
                    let by_digest = self.reference.clone_with_digest(wanted.to_string());
                    let (bytes, digest) = self.manifest(&by_digest, Some(&wanted)).await?;
                    self.store
                        .write_blob(&top_digest, &top_bytes, &top_context)?;
                    (bytes, digest, Some(top_digest))
                }
            };
        let context = format!("manifest {digest} of {}", self.canonical);
        let Document::Manifest(m) = manifest::parse_document(&manifest_bytes, &context)? else {
            return Err(ImageError::Manifest {
                context,
                reason: "the index entry for this platform is itself an index".into(),
            });
        };
        let (config_digest, layers) = manifest::check_manifest(&m, &context)?;
        if let Some(limit) = self.max_image_bytes {
            let size = m
                .layers
                .iter()
                .chain(std::iter::once(&m.config))
                .map(|d| d.size)
                .fold(0u64, u64::saturating_add);
            if size > limit {
                return Err(ImageError::TooLarge {
                    context: format!("image {}", self.canonical),
                    size,
                    limit,
                });
            }
        }

        let config_context = format!("config {config_digest} of {}", self.canonical);
        self.blob(&m.config, &config_digest, &config_context)
            .await?;
        let config_bytes = self.store.read_blob(&config_digest, &config_context)?;
        let (config, diff_ids) =
            manifest::parse_config(&config_bytes, layers.len(), &config_context)?;

        for (i, (desc, layer)) in m.layers.iter().zip(&layers).enumerate() {
            let layer_context = format!("layer {i} ({layer}) of {}", self.canonical);
            self.blob(desc, layer, &layer_context).await?;
        }
        let store = self.store.clone();
        let (l, d) = (layers.clone(), diff_ids.clone());
        blocking(move || store.ensure_layers(&l, &d)).await?;

        // The manifest last: its presence with a reference means everything it needs is here.
        self.store.write_blob(&digest, &manifest_bytes, &context)?;
        self.store
            .write_ref(&self.canonical, &digest, index.as_ref(), &self.access)?;
        Ok(Image {
            reference: self.canonical.clone(),
            digest,
            config_digest,
            layers,
            diff_ids,
            config,
        })
    }

    /// Fetches a manifest or index and checks it against `expected` (when pulling by digest).
    async fn manifest(
        &self,
        reference: &Reference,
        expected: Option<&Digest>,
    ) -> Result<(Vec<u8>, Digest), ImageError> {
        let (bytes, _) = self
            .client
            .pull_manifest_raw(reference, &self.auth, ACCEPTED)
            .await
            .map_err(|e| self.error(e, &format!("manifest of {}", reference.whole())))?;
        if bytes.len() as u64 > MAX_DOCUMENT_BYTES {
            return Err(ImageError::Manifest {
                context: format!("manifest of {}", reference.whole()),
                reason: format!("{} bytes is too large", bytes.len()),
            });
        }
        let actual = Digest::of(&bytes);
        let expected = match (expected, reference.digest()) {
            (Some(d), _) => Some(d.clone()),
            (None, Some(d)) => Some(Digest::parse(d, &self.canonical)?),
            (None, None) => None,
        };
        if let Some(expected) = expected {
            expected.verify(&bytes, &format!("manifest of {}", reference.whole()))?;
        }
        Ok((bytes.to_vec(), actual))
    }

    /// Downloads the blob `digest` into the store unless it is there already.
    async fn blob(
        &self,
        desc: &Descriptor,
        digest: &Digest,
        context: &str,
    ) -> Result<(), ImageError> {
        if self.store.has_blob(digest) {
            return Ok(());
        }
        // One download per blob at a time in this process; a second pull waits and finds it.
        let store = self.store.clone();
        let key = format!("blob:{}", digest.hex());
        let _busy = blocking(move || Ok(store.busy(key))).await?;
        if self.store.has_blob(digest) {
            return Ok(());
        }
        let mut out = self.store.blob_writer(digest, Some(desc.size), context)?;
        let layer = oci_client::client::LayerDescriptor {
            digest: &desc.digest,
            urls: &desc.urls,
        };
        let mut stream = self
            .client
            .pull_blob_stream(&self.reference, &layer)
            .await
            .map_err(|e| self.error(e, context))?;
        while let Some(chunk) = stream.next().await {
            match chunk {
                Ok(bytes) => out.write(&bytes)?,
                // oci-client checks the digest too, at the end of the stream: report what we
                // received in our own terms.
                Err(e) if is_digest_error(&e) => {
                    return Err(ImageError::DigestMismatch {
                        context: context.to_string(),
                        expected: digest.to_string(),
                        actual: out.actual_digest().to_string(),
                    });
                }
                Err(e) => {
                    return Err(ImageError::Registry {
                        reference: self.canonical.clone(),
                        message: format!("downloading {context}: {}", error_chain(&e)),
                    });
                }
            }
        }
        out.commit()
    }

    /// Our error for an `oci-client` error while fetching `what`.
    fn error(&self, e: OciDistributionError, what: &str) -> ImageError {
        let registry = self.reference.registry().to_string();
        let unauthorized = |message: String| ImageError::Unauthorized {
            reference: self.canonical.clone(),
            registry: registry.clone(),
            message,
        };
        let not_found = |message: String| ImageError::NotFound {
            reference: self.canonical.clone(),
            message,
        };
        match e {
            OciDistributionError::UnauthorizedError { url } => {
                unauthorized(format!("401 Unauthorized for {url}"))
            }
            OciDistributionError::AuthenticationFailure(m) => unauthorized(m),
            OciDistributionError::ImageManifestNotFoundError(m) => not_found(m),
            OciDistributionError::RegistryError { envelope, url } => {
                let codes: Vec<&OciErrorCode> = envelope.errors.iter().map(|e| &e.code).collect();
                let message = format!("{what}: {envelope} ({url})");
                if codes
                    .iter()
                    .any(|c| matches!(c, OciErrorCode::Unauthorized | OciErrorCode::Denied))
                {
                    unauthorized(message)
                } else if codes.iter().any(|c| {
                    matches!(
                        c,
                        OciErrorCode::ManifestUnknown
                            | OciErrorCode::NameUnknown
                            | OciErrorCode::BlobUnknown
                            | OciErrorCode::NotFound
                    )
                }) {
                    not_found(message)
                } else {
                    ImageError::Registry {
                        reference: self.canonical.clone(),
                        message,
                    }
                }
            }
            OciDistributionError::ServerError {
                code: 401 | 403,
                url,
                message,
            } => unauthorized(format!("{message} ({url})")),
            OciDistributionError::ServerError {
                code: 404,
                url,
                message,
            } => not_found(format!("{what}: {message} ({url})")),
            OciDistributionError::DigestError(
                oci_client::errors::DigestError::VerificationError { expected, actual },
            ) => ImageError::DigestMismatch {
                context: what.to_string(),
                expected,
                actual,
            },
            OciDistributionError::RequestError(e) => ImageError::Unreachable {
                reference: self.canonical.clone(),
                message: format!("{what}: {}", error_chain(&e)),
            },
            other => ImageError::Registry {
                reference: self.canonical.clone(),
                message: format!("{what}: {}", error_chain(&other)),
            },
        }
    }
}

fn is_digest_error(e: &std::io::Error) -> bool {
    e.get_ref()
        .is_some_and(|inner| inner.is::<oci_client::errors::DigestError>())
}

/// Runs blocking store work off the async threads.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ImageError> + Send + 'static,
) -> Result<T, ImageError> {
    tokio::task::spawn_blocking(f)
        .await
        .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()))
}
