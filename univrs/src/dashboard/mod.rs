//! `univrs dashboard`: one page for the people of a community cloud, served from this binary
//! with its assets embedded (nothing is fetched from elsewhere: community sites may be offline).
//! It reads with the credentials it is given (a kubeconfig), keeps every Node, Workload and
//! CreditLine in watched caches, and pushes the whole view to each open page as server-sent
//! events when anything changes. Read-only: it never writes to the API server.
//!
//! Listening follows the rules of the agent API and the MCP server
//! (`univrs_io::listener::check_exposure`): on loopback, plain HTTP and no token unless asked;
//! anywhere else, TLS and a bearer token. On loopback the Host header must name loopback too,
//! so a web page elsewhere cannot reach it by DNS rebinding.

mod history;
mod routes;
mod state;
pub mod view;

pub use routes::router;
pub use state::Dashboard;
