//! What a container needs around it: its image (pulled and unpacked once), its own writable
//! root filesystem, and the instance's network namespace.

use std::net::IpAddr;
use std::path::PathBuf;
use univrs_api::resources::workload::{Container, ContainerPort};

/// A pulled image, ready to give containers a root filesystem.
#[derive(Debug, Clone)]
pub struct Image {
    digest: String,
}

impl Image {
    /// The image's manifest digest.
    pub fn digest(&self) -> &str {
        &self.digest
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
}

/// Images, root filesystems and networks of one agent.
#[derive(Debug)]
pub struct Sandbox {}

impl Sandbox {
    /// Whether containers get their own network (CNI).
    pub fn has_network(&self) -> bool {
        false
    }

    /// Pulls `reference` (or finds it in the store).
    pub async fn pull(&self, reference: &str) -> Result<Image, String> {
        Err(format!(
            "cannot pull {reference}: no image store configured"
        ))
    }

    /// A fresh writable root filesystem for container `id`.
    pub fn rootfs(&self, _image: &Image, id: &str) -> Result<PathBuf, String> {
        Err(format!("no root filesystem for {id}"))
    }

    /// Removes container `id`'s root filesystem (no error when there is none).
    pub fn remove_rootfs(&self, _id: &str) -> Result<(), String> {
        Ok(())
    }

    /// The process of `c` in `image`.
    pub fn process(&self, _image: &Image, c: &Container) -> Process {
        let mut args = c.command.clone();
        args.extend(c.args.iter().cloned());
        Process {
            args,
            env: c
                .env
                .iter()
                .map(|e| (e.name.clone(), e.value.clone()))
                .collect(),
            cwd: "/".into(),
        }
    }

    /// Sets up instance `id`'s network namespace with `ports` published; returns its address.
    pub fn network_up(&self, id: &str, _ports: &[ContainerPort]) -> Result<IpAddr, String> {
        Err(format!("no container network for {id}"))
    }

    /// Releases instance `id`'s network (no error when there is none).
    pub fn network_down(&self, _id: &str) -> Result<(), String> {
        Ok(())
    }

    /// The network namespace of instance `id`, when containers get their own network.
    pub fn netns_path(&self, _id: &str) -> Option<PathBuf> {
        None
    }
}
