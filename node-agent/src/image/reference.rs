//! Image references: the canonical form the store records them under, and `oci:DIR[:TAG]` for
//! local OCI image layouts.

use super::error::ImageError;
use std::path::PathBuf;

/// The canonical form of a reference: registry references as `oci-client` completes them
/// (`busybox` → `docker.io/library/busybox:latest`), `oci:DIR[:TAG]` with the directory's
/// real path and the tag (default `latest`).
pub fn canonical_reference(reference: &str) -> Result<String, ImageError> {
    if let Some((dir, tag)) = parse_layout_reference(reference)? {
        // As `import_oci_layout` records it: the real path, when the directory exists.
        let dir = std::fs::canonicalize(&dir).unwrap_or(dir);
        return Ok(format!("oci:{}:{tag}", dir.display()));
    }
    let parsed: oci_client::Reference =
        reference
            .parse()
            .map_err(|e: oci_client::ParseError| ImageError::InvalidReference {
                reference: reference.to_string(),
                reason: e.to_string(),
            })?;
    Ok(parsed.whole())
}

/// `oci:DIR[:TAG]` (skopeo's syntax for an OCI image layout) as the directory and the tag;
/// `None` for any other reference.
pub fn parse_layout_reference(reference: &str) -> Result<Option<(PathBuf, String)>, ImageError> {
    let Some(rest) = reference.strip_prefix("oci:") else {
        return Ok(None);
    };
    // The tag follows the last ':' unless that ':' is inside the directory part.
    let (dir, tag) = match rest.rsplit_once(':') {
        Some((dir, tag)) if !tag.contains('/') => (dir, tag),
        _ => (rest, "latest"),
    };
    let bad = |reason: &str| ImageError::InvalidReference {
        reference: reference.to_string(),
        reason: reason.to_string(),
    };
    if dir.is_empty() {
        return Err(bad("oci: needs a directory, as in oci:/path/to/layout:tag"));
    }
    if tag.is_empty() {
        return Err(bad("empty tag after the last ':'"));
    }
    let dir = PathBuf::from(dir);
    if !dir.is_absolute() {
        return Err(bad("the layout directory must be an absolute path"));
    }
    Ok(Some((dir, tag.to_string())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_are_made_canonical() {
        assert_eq!(
            canonical_reference("busybox").unwrap(),
            "docker.io/library/busybox:latest"
        );
        assert_eq!(
            canonical_reference("127.0.0.1:5000/demo/busybox:latest").unwrap(),
            "127.0.0.1:5000/demo/busybox:latest"
        );
        assert_eq!(
            canonical_reference("oci:/srv/images/demo").unwrap(),
            "oci:/srv/images/demo:latest"
        );
        assert_eq!(
            canonical_reference("oci:/srv/images/demo:v1").unwrap(),
            "oci:/srv/images/demo:v1"
        );
        assert!(canonical_reference("oci:relative/dir:v1").is_err());
        assert!(canonical_reference("Not A Reference").is_err());
    }
}
