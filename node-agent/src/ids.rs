//! The names that become file, socket and cgroup names: container ids (chosen by the agent,
//! checked by the runtime, the image store and the network) and agent names.

/// Checks a container id: 1 to 64 of `A-Z a-z 0-9 _ + - .`, not `.` or `..` (what
/// `libcontainer` accepts, and safe as a file name and a cgroup name).
pub fn validate_id(id: &str) -> Result<(), String> {
    validate_name("container id", id, 64)
}

/// Checks an agent name, used as a cgroup directory: same rules as [`validate_id`].
pub fn validate_agent_name(name: &str) -> Result<(), String> {
    validate_name("agent name", name, 64)
}

fn validate_name(what: &str, name: &str, max: usize) -> Result<(), String> {
    if name.is_empty() || name.len() > max {
        return Err(format!(
            "{what} {name:?} must be 1 to {max} characters long"
        ));
    }
    if name == "." || name == ".." {
        return Err(format!("{what} {name:?} is not a valid name"));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '+' | '-' | '.')))
    {
        return Err(format!(
            "{what} {name:?} contains {c:?}; use only letters, digits, '_', '+', '-' and '.'"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids() {
        assert!(validate_id("web-0.abc_1+x").is_ok());
        assert!(validate_id("").is_err());
        assert!(validate_id("..").is_err());
        assert!(validate_id("a/b").is_err());
        assert!(validate_id(&"a".repeat(65)).is_err());
        assert!(validate_agent_name("n1").is_ok());
        assert!(validate_agent_name("n/1").is_err());
    }
}
