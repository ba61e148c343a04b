//! Command-line definition. All configuration comes on stdin.

/// Per-action HTTP(S) egress proxy with credential injection.
///
/// Reads one JSON config object on stdin, prints one `{"ready":...}` line on
/// stdout once listening, and one `{"summary":...}` line on SIGTERM/SIGINT.
/// See the crate documentation for the protocol.
#[derive(Debug, clap::Parser)]
#[command(name = "vault-gateway", version)]
pub struct Cli {}
