//! An image's run configuration, and how a Workload container's `command`, `args` and `env`
//! combine with it, the way Kubernetes combines them:
//!
//! | `command` | `args` | runs                              |
//! |-----------|--------|-----------------------------------|
//! | –         | –      | image ENTRYPOINT + image CMD      |
//! | –         | set    | image ENTRYPOINT + `args`         |
//! | set       | –      | `command` (image CMD ignored)     |
//! | set       | set    | `command` + `args`                |
//!
//! `$(VAR)` in `command` and `args` expands to the Workload's variable `VAR` (`$$` is a literal
//! `$`; unknown references stay as written), and the environment is the image's with the
//! Workload's variables replacing or adding to it.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;

/// The run configuration an image carries.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageConfig {
    /// Operating system the image is built for.
    pub os: String,
    /// CPU architecture the image is built for.
    pub architecture: String,
    /// ENTRYPOINT.
    pub entrypoint: Vec<String>,
    /// CMD.
    pub cmd: Vec<String>,
    /// ENV, in order.
    pub env: Vec<(String, String)>,
    /// WORKDIR, if set.
    pub working_dir: Option<String>,
    /// USER (`uid`, `uid:gid`, `name` or `name:group`), if set.
    pub user: Option<String>,
    /// EXPOSE (`80/tcp`, …).
    pub exposed_ports: Vec<String>,
    /// LABELs.
    pub labels: BTreeMap<String, String>,
    /// STOPSIGNAL, if set.
    pub stop_signal: Option<String>,
}

/// Why no process can be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProcessError {
    /// Neither the Workload nor the image says what to run.
    #[error("nothing to run: the image has no ENTRYPOINT or CMD and the container sets no command")]
    NoCommand,
    /// The image's USER names a user or group the image does not have.
    #[error("image USER {user:?}: {reason}")]
    User {
        /// The USER value.
        user: String,
        /// What is wrong.
        reason: String,
    },
}

/// The process arguments for a container: Kubernetes' rules (module docs), with `$(VAR)`
/// references in `command` and `args` expanded from `env` (the Workload's variables).
pub fn process_args(
    image: &ImageConfig,
    command: &[String],
    args: &[String],
    env: &[(String, String)],
) -> Result<Vec<String>, ProcessError> {
    let expand_all = |v: &[String]| -> Vec<String> { v.iter().map(|s| expand(s, env)).collect() };
    let out: Vec<String> = match (command.is_empty(), args.is_empty()) {
        (true, true) => image.entrypoint.iter().chain(&image.cmd).cloned().collect(),
        (true, false) => image
            .entrypoint
            .iter()
            .cloned()
            .chain(expand_all(args))
            .collect(),
        (false, _) => expand_all(command)
            .into_iter()
            .chain(expand_all(args))
            .collect(),
    };
    if out.first().is_none_or(|c| c.is_empty()) {
        return Err(ProcessError::NoCommand);
    }
    Ok(out)
}

/// The container's environment: the image's variables in their order, each replaced by the
/// Workload's variable of the same name, then the Workload's other variables in their order.
pub fn merge_env(
    image: &[(String, String)],
    workload: &[(String, String)],
) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::with_capacity(image.len() + workload.len());
    for (k, v) in image.iter().chain(workload) {
        match out.iter_mut().find(|(name, _)| name == k) {
            Some(slot) => slot.1 = v.clone(),
            None => out.push((k.clone(), v.clone())),
        }
    }
    out
}

/// The working directory: the Workload's, else the image's WORKDIR, else `/`.
pub fn working_dir(image: &ImageConfig, workload: Option<&str>) -> String {
    workload
        .filter(|w| !w.is_empty())
        .or(image.working_dir.as_deref())
        .unwrap_or("/")
        .to_string()
}

/// The uid and gid for the image's USER (`uid`, `uid:gid`, `name`, `name:group`; none is
/// root), names looked up in the root filesystem's `/etc/passwd` and `/etc/group` as Docker
/// does: a user without a group gets its primary group from `/etc/passwd` (0 if it has no
/// entry there).
pub fn resolve_user(rootfs: &Path, user: Option<&str>) -> Result<(u32, u32), ProcessError> {
    let Some(spec) = user.filter(|u| !u.is_empty()) else {
        return Ok((0, 0));
    };
    let fail = |reason: String| ProcessError::User {
        user: spec.to_string(),
        reason,
    };
    let (user_part, group_part) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    // Only read when a name must be looked up: a numeric USER needs no files.
    let passwd = || read_db(rootfs, "passwd").map_err(&fail);
    let (uid, primary_gid) = match user_part.parse::<u32>() {
        Ok(uid) => {
            let gid = if group_part.is_none() {
                passwd()
                    .unwrap_or_default()
                    .iter()
                    .find(|f| f.get(2).and_then(|u| u.parse().ok()) == Some(uid))
                    .and_then(|f| f.get(3)?.parse().ok())
                    .unwrap_or(0)
            } else {
                0
            };
            (uid, gid)
        }
        Err(_) => {
            let entry = passwd()?
                .into_iter()
                .find(|f| f.first().map(String::as_str) == Some(user_part))
                .ok_or_else(|| fail(format!("no user {user_part:?} in /etc/passwd")))?;
            let num = |i: usize| entry.get(i).and_then(|v| v.parse::<u32>().ok());
            match (num(2), num(3)) {
                (Some(u), Some(g)) => (u, g),
                _ => return Err(fail(format!("bad /etc/passwd entry for {user_part:?}"))),
            }
        }
    };
    let gid = match group_part {
        None => primary_gid,
        Some(g) => match g.parse::<u32>() {
            Ok(gid) => gid,
            Err(_) => read_db(rootfs, "group")
                .map_err(&fail)?
                .iter()
                .find(|f| f.first().map(String::as_str) == Some(g))
                .and_then(|f| f.get(2)?.parse().ok())
                .ok_or_else(|| fail(format!("no group {g:?} in /etc/group")))?,
        },
    };
    Ok((uid, gid))
}

/// The colon-separated records of `/etc/<name>` in `rootfs`. Symlinks are not followed: the
/// root filesystem comes from an image, and a link could point at the host's files.
fn read_db(rootfs: &Path, name: &str) -> Result<Vec<Vec<String>>, String> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let etc = rootfs.join("etc");
    if std::fs::symlink_metadata(&etc).is_ok_and(|m| !m.is_dir()) {
        return Err("/etc is not a directory".to_string());
    }
    let path = etc.join(name);
    let mut text = String::new();
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NOFOLLOW)
        .open(&path)
        .and_then(|f| f.take(1 << 20).read_to_string(&mut text))
        .map_err(|e| format!("reading /etc/{name}: {e}"))?;
    Ok(text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| l.split(':').map(str::to_string).collect())
        .collect())
}

/// Expands `$(NAME)` from `env` the way the kubelet does: `$$` is a literal `$`, and a
/// reference to an unknown variable (or an unclosed one) is left as written.
pub fn expand(input: &str, env: &[(String, String)]) -> String {
    let mut out = String::with_capacity(input.len());
    let mut rest = input;
    while let Some(pos) = rest.find('$') {
        out.push_str(&rest[..pos]);
        let after = &rest[pos + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(body) = after.strip_prefix('(') {
            match body.find(')') {
                Some(end) => {
                    let name = &body[..end];
                    match env.iter().rev().find(|(k, _)| k == name) {
                        Some((_, v)) => out.push_str(v),
                        None => {
                            out.push_str("$(");
                            out.push_str(name);
                            out.push(')');
                        }
                    }
                    rest = &body[end + 1..];
                }
                None => {
                    out.push_str(&rest[pos..]);
                    rest = "";
                }
            }
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    fn image() -> ImageConfig {
        ImageConfig {
            entrypoint: s(&["/entry"]),
            cmd: s(&["--default"]),
            env: vec![
                ("PATH".into(), "/bin".into()),
                ("MODE".into(), "image".into()),
            ],
            ..Default::default()
        }
    }

    #[test]
    fn kubernetes_rules_for_command_and_args() {
        let img = image();
        assert_eq!(
            process_args(&img, &[], &[], &[]).unwrap(),
            s(&["/entry", "--default"])
        );
        assert_eq!(
            process_args(&img, &[], &s(&["x"]), &[]).unwrap(),
            s(&["/entry", "x"])
        );
        assert_eq!(
            process_args(&img, &s(&["sh"]), &[], &[]).unwrap(),
            s(&["sh"])
        );
        assert_eq!(
            process_args(&img, &s(&["sh", "-c"]), &s(&["echo"]), &[]).unwrap(),
            s(&["sh", "-c", "echo"])
        );
        let only_cmd = ImageConfig {
            cmd: s(&["sh"]),
            ..Default::default()
        };
        assert_eq!(process_args(&only_cmd, &[], &[], &[]).unwrap(), s(&["sh"]));
        // args without command replace CMD even when there is no ENTRYPOINT.
        assert_eq!(
            process_args(&only_cmd, &[], &s(&["ls"]), &[]).unwrap(),
            s(&["ls"])
        );
        assert_eq!(
            process_args(&ImageConfig::default(), &[], &[], &[]),
            Err(ProcessError::NoCommand)
        );
    }

    #[test]
    fn variable_references_expand_like_the_kubelet() {
        let env = vec![("NAME".to_string(), "web".to_string())];
        assert_eq!(expand("hi $(NAME)!", &env), "hi web!");
        assert_eq!(expand("$$(NAME) $$ $", &env), "$(NAME) $ $");
        assert_eq!(expand("$(OTHER) $(NAME", &env), "$(OTHER) $(NAME");
        assert_eq!(expand("$NAME", &env), "$NAME");
        assert_eq!(
            process_args(&image(), &s(&["echo", "$(NAME)"]), &s(&["$(NAME)"]), &env).unwrap(),
            s(&["echo", "web", "web"])
        );
        // The image's own CMD is never expanded.
        let img = ImageConfig {
            cmd: s(&["echo", "$(NAME)"]),
            ..Default::default()
        };
        assert_eq!(
            process_args(&img, &[], &[], &env).unwrap(),
            s(&["echo", "$(NAME)"])
        );
    }

    #[test]
    fn users_resolve_from_the_images_files() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        assert_eq!(resolve_user(root, None).unwrap(), (0, 0));
        assert_eq!(resolve_user(root, Some("1000:2000")).unwrap(), (1000, 2000));
        assert_eq!(
            resolve_user(root, Some("1000")).unwrap(),
            (1000, 0),
            "no passwd: gid 0"
        );
        std::fs::create_dir(root.join("etc")).unwrap();
        std::fs::write(
            root.join("etc/passwd"),
            "root:x:0:0:root:/root:/bin/sh\nwww:x:33:34:www:/var/www:/bin/false\n",
        )
        .unwrap();
        std::fs::write(root.join("etc/group"), "root:x:0:\nstaff:x:50:www\n").unwrap();
        assert_eq!(resolve_user(root, Some("www")).unwrap(), (33, 34));
        assert_eq!(resolve_user(root, Some("33")).unwrap(), (33, 34));
        assert_eq!(resolve_user(root, Some("www:staff")).unwrap(), (33, 50));
        assert_eq!(resolve_user(root, Some("www:7")).unwrap(), (33, 7));
        let err = resolve_user(root, Some("nobody")).unwrap_err().to_string();
        assert!(
            err.contains("nobody") && err.contains("/etc/passwd"),
            "{err}"
        );
        assert!(resolve_user(root, Some("www:wheel")).is_err());
        // A passwd that is a symlink (perhaps to the host's) is not read.
        std::fs::remove_file(root.join("etc/passwd")).unwrap();
        std::os::unix::fs::symlink("/etc/passwd", root.join("etc/passwd")).unwrap();
        assert!(resolve_user(root, Some("root")).is_err());
    }

    #[test]
    fn workload_env_wins_and_order_is_kept() {
        let merged = merge_env(
            &image().env,
            &[
                ("MODE".into(), "workload".into()),
                ("EXTRA".into(), "1".into()),
            ],
        );
        assert_eq!(
            merged,
            vec![
                ("PATH".to_string(), "/bin".to_string()),
                ("MODE".to_string(), "workload".to_string()),
                ("EXTRA".to_string(), "1".to_string()),
            ]
        );
        assert_eq!(working_dir(&image(), None), "/");
        let img = ImageConfig {
            working_dir: Some("/srv".into()),
            ..Default::default()
        };
        assert_eq!(working_dir(&img, None), "/srv");
        assert_eq!(working_dir(&img, Some("/tmp")), "/tmp");
    }
}
