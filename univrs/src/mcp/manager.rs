//! Who the server's writes are from. A leaf module, so every tool can name it without importing
//! the `mcp` module that declares them.

/// The server-side-apply field manager (and update manager) of every write the server makes.
pub const FIELD_MANAGER: &str = "univrs-mcp";
