//! The I/O every Univrs component shares, written once: `api` is pure, this crate is where the
//! controller, the node agent and the `univrs` binary meet the network and the API server.
//!
//! - [`apply`]: server-side-apply bodies built from the resource types (never a literal
//!   `apiVersion`), and the writes that send them;
//! - [`events`]: the one Kubernetes Event publisher;
//! - [`metrics`]: Prometheus metrics through `prometheus-client`, and their `/metrics` answer;
//! - [`tls`]: a rustls server configuration from PEM files (the one PEM loader);
//! - [`listener`]: the HTTPS listener: TLS handshakes run concurrently, each with a deadline,
//!   so a client that connects and says nothing holds up no one;
//! - [`node_cert`]: the certificate request a node makes for its own API credentials;
//! - [`token`]: the bearer token, kept only as a digest, compared in constant time, redacted.

pub mod apply;
pub mod events;
pub mod listener;
pub mod metrics;
pub mod node_cert;
pub mod secret_file;
pub mod tls;
pub mod token;
