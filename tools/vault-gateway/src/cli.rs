//! Command-line definition. All configuration comes on stdin.

/// Per-action HTTP(S) egress proxy with credential injection.
///
/// Reads one JSON config object on stdin, prints one `{"ready":...}` line on
/// stdout once listening, and one `{"summary":...}` line on SIGTERM/SIGINT
/// or when the configured `lifetime_s` has run out.
/// run-action starts one per action whose network is an allowlist, inside
/// its gateway container, and writes its configuration (the credentials it
/// adds included) to its stdin; the protocol is in docs/CONTRACT.md §12 and
/// at the top of tools/vault-gateway/src/lib.rs. Exit 0 after the summary,
/// 2 on any error (one `{"error":...}` line on stdout, one line on stderr).
#[derive(Debug, clap::Parser)]
#[command(name = "vault-gateway", version)]
pub struct Cli {}
