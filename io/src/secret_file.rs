//! Whether a secret file (a token, a private key) is readable by its reader alone.

use std::os::unix::fs::MetadataExt;

/// Whether `meta` lets only its owner read the file, or also the group when that group is the
/// reading process's own effective group and may not write it: a Kubernetes Secret mounted for a
/// non-root user with `fsGroup` is mode 0440 in the Pod's own group, which no one else has.
/// Others may never read or write it.
pub fn private(meta: &std::fs::Metadata) -> bool {
    let mode = meta.mode() & 0o777;
    if mode & 0o077 == 0 {
        return true;
    }
    let own_group = meta.gid() == nix::unistd::getegid().as_raw() && meta.gid() != 0;
    mode & 0o007 == 0 && mode & 0o020 == 0 && own_group
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn only_the_owner_or_the_readers_own_group_may_read() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("secret");
        std::fs::write(&f, "x").unwrap();
        let with = |mode: u32| {
            std::fs::set_permissions(&f, std::fs::Permissions::from_mode(mode)).unwrap();
            private(&std::fs::metadata(&f).unwrap())
        };
        assert!(with(0o600));
        assert!(with(0o400));
        assert!(!with(0o604));
        assert!(!with(0o644));
        // The file's group is this process's: root's group 0 here counts as shared (any root
        // process has it), so a group bit is refused; under another group it would be allowed.
        let gid = nix::unistd::getegid().as_raw();
        assert_eq!(with(0o640), gid != 0);
        assert!(!with(0o660), "a group that may write the secret");
    }
}
