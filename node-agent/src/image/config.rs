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
    #[error(
        "nothing to run: the image has no ENTRYPOINT or CMD and the container sets no command"
    )]
    NoCommand,
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
        (false, _) => expand_all(command).into_iter().chain(expand_all(args)).collect(),
    };
    if out.first().is_none_or(|c| c.is_empty()) {
        return Err(ProcessError::NoCommand);
    }
    Ok(out)
}

/// The container's environment: the image's variables in their order, each replaced by the
/// Workload's variable of the same name, then the Workload's other variables in their order.
pub fn merge_env(image: &[(String, String)], workload: &[(String, String)]) -> Vec<(String, String)> {
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
            env: vec![("PATH".into(), "/bin".into()), ("MODE".into(), "image".into())],
            ..Default::default()
        }
    }

    #[test]
    fn kubernetes_rules_for_command_and_args() {
        let img = image();
        assert_eq!(process_args(&img, &[], &[], &[]).unwrap(), s(&["/entry", "--default"]));
        assert_eq!(process_args(&img, &[], &s(&["x"]), &[]).unwrap(), s(&["/entry", "x"]));
        assert_eq!(process_args(&img, &s(&["sh"]), &[], &[]).unwrap(), s(&["sh"]));
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
        assert_eq!(process_args(&only_cmd, &[], &s(&["ls"]), &[]).unwrap(), s(&["ls"]));
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
        assert_eq!(process_args(&img, &[], &[], &env).unwrap(), s(&["echo", "$(NAME)"]));
    }

    #[test]
    fn workload_env_wins_and_order_is_kept() {
        let merged = merge_env(
            &image().env,
            &[("MODE".into(), "workload".into()), ("EXTRA".into(), "1".into())],
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
