//! `univrs crds`: print the CRDs, write them into a directory, or check that directory.

use anyhow::{Context, bail};
use std::path::Path;

/// Prints all CRDs, or writes (or with `check`, compares) one file per CRD in `out`.
pub fn run(out: Option<&Path>, check: bool) -> anyhow::Result<()> {
    let Some(dir) = out else {
        print!("{}", univrs_api::crds::all_yaml()?);
        return Ok(());
    };
    let mut stale = Vec::new();
    for crd in univrs_api::crds::all() {
        let path = dir.join(univrs_api::crds::file_name(&crd));
        let want = univrs_api::crds::to_yaml(&crd)?;
        if check {
            let have = std::fs::read_to_string(&path).unwrap_or_default();
            if have != want {
                stale.push(path.display().to_string());
            }
        } else {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
            std::fs::write(&path, want).with_context(|| format!("writing {}", path.display()))?;
            eprintln!("wrote {}", path.display());
        }
    }
    if !stale.is_empty() {
        bail!(
            "CRDs out of date with the Rust types: {}\nregenerate with: cargo run -p univrs -- crds --out {}",
            stale.join(", "),
            dir.display()
        );
    }
    Ok(())
}
