//! What a container needs around it: its image (pulled and unpacked once, into the agent's
//! image store), its own writable root filesystem, and its instance's network namespace
//! (through CNI). Everything here blocks except [`Sandbox::pull`]; the supervisor calls it on
//! blocking threads.

use crate::image::{
    self, Access, DockerConfig, Image as StoredImage, ImageError, ImageStore, PullOptions,
};
use crate::network::{Cni, NetworkError, PolicyJob, PortMapping, Protocol};
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::PathBuf;
use univrs_api::registry_auth::registry_of;
use univrs_api::resources::workload::{self, Container, ContainerPort};

/// A pulled image, ready to give containers a root filesystem.
#[derive(Debug, Clone)]
pub struct Image {
    stored: StoredImage,
    /// Block and character devices its layers named that were not made (see
    /// the image store's unpacker).
    pub devices_skipped: u64,
}

impl Image {
    /// The image's manifest digest.
    pub fn digest(&self) -> String {
        self.stored.digest.to_string()
    }
}

/// The process a container runs: the image's defaults under the Workload's overrides.
#[derive(Debug, Clone)]
pub struct Process {
    /// Arguments, program first.
    pub args: Vec<String>,
    /// Environment.
    pub env: Vec<(String, String)>,
    /// Working directory.
    pub cwd: String,
    /// User and group ids.
    pub uid: u32,
    /// Group id.
    pub gid: u32,
}

/// Images, root filesystems and networks of one agent.
pub struct Sandbox {
    images: ImageStore,
    pull: PullOptions,
    /// References served from local OCI layouts: reference → (directory, tag).
    layouts: BTreeMap<String, (PathBuf, String)>,
    /// Directories whose OCI layouts Workloads may name (`oci:DIR:TAG`); none by default.
    layout_dirs: Vec<PathBuf>,
    /// Where root filesystems are bind-mounted for containers to reach them (see
    /// [`Sandbox::with_exposed_roots`]); `None`: where the image store keeps them.
    exposed: Option<PathBuf>,
    network: Option<Cni>,
    /// Where each instance's `/etc/resolv.conf` is written (see [`Sandbox::with_names`]).
    resolv: Option<PathBuf>,
}

/// Why a sandbox step failed (shown in instance messages and Events).
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    /// An image could not be pulled or prepared.
    #[error(transparent)]
    Image(#[from] ImageError),
    /// The network could not be set up or torn down.
    #[error(transparent)]
    Network(#[from] NetworkError),
    /// The container's process could not be worked out.
    #[error(transparent)]
    Process(#[from] image::ProcessError),
    /// Anything else.
    #[error("{0}")]
    Other(String),
}

impl Sandbox {
    /// A sandbox over an image store, pull options, local layouts and (optionally) CNI.
    pub fn new(
        images: ImageStore,
        pull: PullOptions,
        layouts: BTreeMap<String, (PathBuf, String)>,
        network: Option<Cni>,
    ) -> Self {
        Self {
            images,
            pull,
            layouts,
            layout_dirs: Vec::new(),
            exposed: None,
            network,
            resolv: None,
        }
    }

    /// Gives containers their root filesystems through bind mounts under `dir` (a traversable
    /// directory): a container in the node's user namespace reaches its root as an
    /// unprivileged host id, and the data directory's parents may be closed to it.
    pub fn with_exposed_roots(mut self, dir: PathBuf) -> Self {
        self.exposed = Some(dir);
        self
    }

    /// Gives each instance an `/etc/resolv.conf` naming its gateway, the agent's name
    /// service (see `agent::names`), written under `dir` (a traversable directory: the
    /// container's root, an unprivileged host id, opens it).
    pub fn with_names(mut self, dir: PathBuf) -> Self {
        self.resolv = Some(dir);
        self
    }

    /// The network, if containers get one.
    pub fn cni(&self) -> Option<&Cni> {
        self.network.as_ref()
    }

    /// Instance `id`'s `/etc/resolv.conf` on the host, once its network is up.
    pub fn resolv_conf(&self, id: &str) -> Option<PathBuf> {
        let path = self.resolv.as_ref()?.join(id);
        path.exists().then_some(path)
    }

    fn write_resolv_conf(&self, id: &str, group: &str) -> Result<(), SandboxError> {
        let (Some(dir), Some(cni)) = (&self.resolv, &self.network) else {
            return Ok(());
        };
        let text = crate::agent::names::resolv_conf(cni.gateway(), group);
        let tmp = dir.join(format!(".{id}.tmp"));
        let io = |e: std::io::Error| {
            SandboxError::Other(format!("writing the resolv.conf of {id}: {e}"))
        };
        std::fs::write(&tmp, text).map_err(io)?;
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o644)).map_err(io)?;
        std::fs::rename(&tmp, dir.join(id)).map_err(io)
    }

    /// Lets Workloads name OCI layouts (`oci:DIR:TAG`) below these directories (the owner's
    /// choice: an image there runs as the Workload's author wishes).
    pub fn with_layout_dirs(mut self, dirs: Vec<PathBuf>) -> Self {
        self.layout_dirs = dirs;
        self
    }

    /// Refuses `oci:DIR` references outside the directories the owner listed: any directory
    /// of the host would otherwise be read as an image.
    fn check_layout(&self, reference: &str) -> Result<(), SandboxError> {
        let Some((dir, _)) = image::parse_layout_reference(reference)? else {
            return Ok(());
        };
        // The real path, so `..` and symlinks cannot step outside.
        let real = std::fs::canonicalize(&dir).unwrap_or(dir);
        let allowed = self
            .layout_dirs
            .iter()
            .any(|d| std::fs::canonicalize(d).is_ok_and(|d| real.starts_with(d)));
        if allowed {
            Ok(())
        } else {
            Err(SandboxError::Other(format!(
                "image {reference}: this node reads OCI layouts only below the directories its owner lists (--oci-layout-dir){}",
                if self.layout_dirs.is_empty() {
                    ", and it lists none"
                } else {
                    ""
                }
            )))
        }
    }

    /// Whether containers get their own network (CNI).
    pub fn has_network(&self) -> bool {
        self.network.is_some()
    }

    /// The image for `reference`: from a local layout given to the agent; from the store when
    /// present and the tag is not `latest` (Kubernetes' IfNotPresent default); otherwise
    /// pulled, falling back to the store when the registry cannot be reached.
    ///
    /// `logins` are the Workload's own (its `imagePullSecrets`), tried before the node
    /// owner's. A stored image pulled only with another Workload's logins is not reused: the
    /// registry is asked again with this Workload's (a manifest request; blobs already stored
    /// are not fetched again), and a refusal is this Workload's error.
    pub async fn pull(
        &self,
        reference: &str,
        logins: Option<&DockerConfig>,
    ) -> Result<Image, SandboxError> {
        let stored = self.pull_stored(reference, logins).await?;
        Ok(Image {
            devices_skipped: self.images.devices_skipped(&stored),
            stored,
        })
    }

    async fn pull_stored(
        &self,
        reference: &str,
        logins: Option<&DockerConfig>,
    ) -> Result<StoredImage, SandboxError> {
        if let Some((dir, tag)) = self.layouts.get(reference).cloned() {
            // Named by the owner (--image-layout, the demo image): allowed as it is.
            let store = self.images.clone();
            let img = tokio::task::spawn_blocking(move || store.import_oci_layout(&dir, &tag))
                .await
                .map_err(|e| SandboxError::Other(e.to_string()))??;
            return Ok(img);
        }
        self.check_layout(reference)?;
        let own = registry_of(reference).and_then(|r| logins?.credentials_for(&r).cloned());
        let opts = match own {
            Some(creds) => std::borrow::Cow::Owned(PullOptions {
                credentials: Some(creds),
                ..self.pull.clone()
            }),
            None => std::borrow::Cow::Borrowed(&self.pull),
        };
        let access = self.images.access_for(reference, &opts);
        let always = reference.ends_with(":latest") || !reference.contains(':');
        if !always && let Ok(img) = self.local(reference, &access).await {
            return Ok(img);
        }
        match self.images.pull(reference, &opts).await {
            Ok(img) => Ok(img),
            Err(pull_err) => match self.local(reference, &access).await {
                Ok(img) => {
                    tracing::warn!(
                        reference,
                        "pull failed, running the stored image: {pull_err}"
                    );
                    Ok(img)
                }
                Err(_) => Err(pull_err.into()),
            },
        }
    }

    async fn local(&self, reference: &str, access: &Access) -> Result<StoredImage, ImageError> {
        let store = self.images.clone();
        let r = reference.to_string();
        let access = access.clone();
        tokio::task::spawn_blocking(move || store.resolve_for(&r, &access))
            .await
            .map_err(|e| ImageError::NotPresent {
                reference: reference.to_string(),
                reason: e.to_string(),
            })?
    }

    /// A fresh writable root filesystem for container `id`.
    pub fn rootfs(&self, image: &Image, id: &str) -> Result<PathBuf, SandboxError> {
        let merged = self.images.prepare_rootfs(&image.stored, id)?;
        let Some(dir) = &self.exposed else {
            return Ok(merged);
        };
        let target = dir.join(id);
        let fail = |what: &str, e: &dyn std::fmt::Display| {
            SandboxError::Other(format!("{what} {}: {e}", target.display()))
        };
        std::fs::create_dir_all(&target).map_err(|e| fail("creating", &e))?;
        if !crate::image::is_mounted(&target).map_err(|e| fail("reading the mounts of", &e))? {
            nix::mount::mount(
                Some(&merged),
                &target,
                None::<&str>,
                nix::mount::MsFlags::MS_BIND,
                None::<&str>,
            )
            .map_err(|e| fail("bind-mounting the root filesystem on", &e))?;
        }
        Ok(target)
    }

    /// Removes container `id`'s root filesystem (no error when there is none).
    pub fn remove_rootfs(&self, id: &str) -> Result<(), SandboxError> {
        if let Some(dir) = &self.exposed {
            let target = dir.join(id);
            if crate::image::is_mounted(&target).unwrap_or(false) {
                nix::mount::umount2(&target, nix::mount::MntFlags::MNT_DETACH).map_err(|e| {
                    SandboxError::Other(format!("unmounting {}: {e}", target.display()))
                })?;
            }
            match std::fs::remove_dir(&target) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    return Err(SandboxError::Other(format!(
                        "removing {}: {e}",
                        target.display()
                    )));
                }
            }
        }
        Ok(self.images.remove_rootfs(id)?)
    }

    /// The process of `c` in `image` with `rootfs` (for the image's USER).
    pub fn process(
        &self,
        image: &Image,
        c: &Container,
        rootfs: &std::path::Path,
    ) -> Result<Process, SandboxError> {
        let cfg = &image.stored.config;
        let wl_env: Vec<(String, String)> = c
            .env
            .iter()
            .map(|e| (e.name.clone(), e.value.clone()))
            .collect();
        let env = image::merge_env(&cfg.env, &wl_env);
        let args = image::process_args(cfg, &c.command, &c.args, &env)?;
        let (uid, gid) = image::config::resolve_user(rootfs, cfg.user.as_deref())?;
        Ok(Process {
            args,
            env,
            cwd: image::working_dir(cfg, None),
            uid,
            gid,
        })
    }

    /// Sets up instance `id`'s network namespace with `ports` published, in the policy group
    /// `group` (its Workload's namespace); returns its address, and the rebuild of the network
    /// policy that lets it reach its group, under way (wait for it before calling it running).
    /// `netns_made` is called as soon as the namespace exists (containers may be created in
    /// it from then on, and run once this returns).
    pub fn network_up(
        &self,
        id: &str,
        group: &str,
        ports: &[ContainerPort],
        netns_made: impl FnOnce(),
    ) -> Result<(IpAddr, PolicyJob), SandboxError> {
        let Some(cni) = &self.network else {
            return Err(SandboxError::Other(
                "no container network configured".into(),
            ));
        };
        let mappings: Vec<PortMapping> = ports
            .iter()
            .filter_map(|p| {
                let host = u16::try_from(p.host_port?).ok()?;
                let container = u16::try_from(p.container_port).ok()?;
                Some(PortMapping {
                    host_port: host,
                    container_port: container,
                    protocol: match p.protocol {
                        workload::Protocol::UDP => Protocol::Udp,
                        _ => Protocol::Tcp,
                    },
                    host_ip: None,
                })
            })
            .collect();
        self.write_resolv_conf(id, group)?;
        // A setup the agent died in is finished off first (teardown is idempotent).
        if let Ok(Some(att)) = cni.attachment(id) {
            if att.complete
                && let Ok(att) = cni.check(id)
                && let Some(ip) = att.ipv4()
            {
                netns_made();
                return Ok((IpAddr::V4(ip), PolicyJob::done()));
            }
            cni.teardown(id)?;
        }
        let (att, policy) = cni.begin_setup(id, group, &mappings, netns_made)?;
        let ip = att
            .ipv4()
            .map(IpAddr::V4)
            .ok_or_else(|| SandboxError::Other(format!("CNI gave instance {id} no IPv4 address")));
        match ip {
            Ok(ip) => Ok((ip, policy)),
            Err(e) => {
                let _ = policy.wait();
                Err(e)
            }
        }
    }

    /// Whether instance `id` has a network attachment on disk (set up, or being set up).
    pub fn is_attached(&self, id: &str) -> bool {
        self.network
            .as_ref()
            .is_some_and(|c| matches!(c.attachment(id), Ok(Some(_))))
    }

    /// Releases instance `id`'s network (no error when there is none).
    pub fn network_down(&self, id: &str) -> Result<(), SandboxError> {
        if let Some(dir) = &self.resolv {
            match std::fs::remove_file(dir.join(id)) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    return Err(SandboxError::Other(format!(
                        "removing the resolv.conf of {id}: {e}"
                    )));
                }
                _ => {}
            }
        }
        match &self.network {
            Some(cni) => Ok(cni.teardown(id)?),
            None => Ok(()),
        }
    }

    /// The network namespace of instance `id`, when containers get their own network.
    pub fn netns_path(&self, id: &str) -> Option<PathBuf> {
        self.network.as_ref().map(|c| c.netns_path(id))
    }

    /// Removes the agent's bridge (when nothing is attached any more).
    pub fn remove_network(&self) {
        if let Some(cni) = &self.network
            && let Err(e) = cni.remove_bridge()
        {
            tracing::debug!("removing the bridge: {e}");
        }
    }

    /// Instance ids with a network attachment on disk (for clean-up of orphans).
    pub fn attached(&self) -> Vec<String> {
        self.network
            .as_ref()
            .and_then(|c| c.list().ok())
            .unwrap_or_default()
            .into_iter()
            .map(|a| a.container_id)
            .collect()
    }
}
