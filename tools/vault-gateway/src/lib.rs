//! # vault-gateway
//!
//! A per-action HTTP(S) egress proxy with credential injection. run-action
//! starts one per networked action, on an internal Docker network shared
//! only with the action's container, and points the container's
//! `HTTPS_PROXY`/`HTTP_PROXY` at it.
//!
//! ## Protocol
//!
//! **stdin**: one JSON object, read to EOF (at most 1 MiB):
//!
//! ```json
//! {"version": 1,
//!  "listen": "172.18.0.0/16",
//!  "port": 3128,
//!  "allow": ["api.example.org:443", "*.pkg.example.org:443", "plain.example.org:80"],
//!  "inject": [{"host": "api.example.org", "header": "Authorization", "value": "Bearer s3cr3t"}],
//!  "mask": ["s3cr3t"],
//!  "roots_pem": "-----BEGIN CERTIFICATE-----\n...",
//!  "lifetime_s": 3660}
//! ```
//!
//! * Unknown fields are an error; `version` must be 1.
//! * `listen` is a CIDR subnet: the gateway binds to the one address of its
//!   own interfaces inside it (none or several is an error; it never binds
//!   the wildcard address). `port` 0 picks a free port.
//! * `allow`: `host:port` (exact, case-insensitive), `*.suffix:port` (at
//!   least one label before `.suffix`), or an IP literal `1.2.3.4:443` /
//!   `[2001:db8::1]:443` (matched only literally). The port is required.
//! * `inject` (optional): headers set on every request tunnelled to `host`
//!   on a port that an exact allow entry `host:port` lists; a `CONNECT` to
//!   `host:port` allowed only through a wildcard entry is a plain tunnel,
//!   without injection. Every inject host needs at least one exact allow
//!   entry (else a startup error). `roots_pem` (the trust anchors for
//!   upstream TLS) is then required.
//! * `mask` (optional): secret values masked in every response from an
//!   inject host, with [`vault_mask`]; the `inject` values are masked too.
//! * `lifetime_s` (optional, an integer ≥ 1; absent: unbounded): that many
//!   seconds after the ready line, the gateway stops exactly as on SIGTERM
//!   (summary line, exit 0), so one orphaned by a crashed caller does not
//!   hold the credentials for ever. run-action sets it to the action's
//!   timeout plus its grace plus a margin.
//!
//! **stdout**, once listening, one line:
//! `{"ready":{"addr":"<ip>:<port>","ca_pem":"-----BEGIN CERTIFICATE-----\n..."}}`.
//! The CA (ECDSA P-256, valid from an hour ago for two days) is made in
//! memory at start; its key never leaves the process. The client must trust
//! it for the inject hosts.
//!
//! On a startup error: `{"error":"<message>"}` on stdout,
//! `vault-gateway: <message>` on stderr, exit code 2.
//!
//! On SIGTERM or SIGINT, or once `lifetime_s` has run out: stop, print
//! `{"summary":{"contacted":{"host:port":n},"refused":{"host:port":n}}}`
//! (keys as requested, lowercased; a key whose host is neither a DNS name
//! nor an IP literal, or longer than 300 bytes, is counted as
//! `"(invalid)"`; at most 1000 distinct keys per map, the rest counted
//! under `"(other)"`), exit 0.
//!
//! **stderr**: one line per refused request,
//! `vault-gateway: refused CONNECT evil.example:443: not in the allowlist`
//! (with the same key as the summary, so possibly `(invalid)`).
//! Secret values and header values never appear in any output.
//!
//! ## Behaviour
//!
//! * `CONNECT host:port` not allowed: 403. Allowed, not an inject host (or
//!   an inject host on a port no exact allow entry lists): resolve, refuse
//!   (502) if every address is loopback, unspecified, link-local, multicast
//!   or inside `listen`; connect (10 s), 200, splice. Tunnels have no idle
//!   timeout.
//! * Allowed `CONNECT` to an inject host on a port an exact allow entry
//!   lists: 200, TLS with a leaf for the host signed by the per-process CA,
//!   then each HTTP/1.1 request is sent to the CONNECT authority only (the inner Host/URI are ignored), with the
//!   inject headers replacing any the client sent, Proxy-*, hop-by-hop,
//!   `Range` and `If-Range` headers removed and `Accept-Encoding: identity`,
//!   over TLS verified against `roots_pem`. An upstream failure is a 502
//!   (counted refused). A response that cannot be masked is replaced by a
//!   502 (counted contacted, logged as refused): a 206, a content-encoded
//!   one, or one whose `Transfer-Encoding` is anything but one `chunked`.
//!   Otherwise headers and the (chunked) body are masked.
//! * Absolute-form `http://` requests: allowed and not an inject host (on
//!   any port) are forwarded; otherwise 403. Origin-form requests: 400.
//! * A forwarded response never carries the upstream's reason phrase: the
//!   client gets the canonical one for the status (a reason phrase is not
//!   masked, so `HTTP/1.1 401 Bearer <token>` would otherwise leak).
//! * At most 256 client connections; request heads must arrive within 30 s.
//!
//! ## Counting
//!
//! `contacted` counts tunnels (plain CONNECT) and forwarded requests that
//! got a response head (inject and plain HTTP). `refused` counts requests
//! refused by policy or failing upstream (DNS, connect, TLS, no response).

mod allow;
mod ca;
mod cli;
mod config;
mod proxy;
mod stats;

pub use allow::{AllowEntry, AllowList};
pub use config::{Config, ConfigError, InjectRule, CONFIG_VERSION, MAX_CONFIG_BYTES};
pub use proxy::forbidden_ip;
pub use stats::Summary;

use ipnet::IpNet;
use proxy::Shared;
use serde::Serialize;
use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr};
use std::process::ExitCode;
use std::sync::Arc;
use vault_mask::Masker;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Config(#[from] ConfigError),
    #[error("listing network interfaces: {0}")]
    Interfaces(#[source] nix::Error),
    #[error("no address of this host's interfaces is inside {0}")]
    NoAddress(IpNet),
    #[error(
        "several addresses of this host's interfaces are inside {0} ({1}); use a narrower subnet"
    )]
    SeveralAddresses(IpNet, String),
    #[error("listening on {0}: {1}")]
    Bind(SocketAddr, #[source] std::io::Error),
    #[error("making the CA: {0}")]
    Ca(#[from] ca::CaError),
    #[error("building the upstream TLS config: {0}")]
    Tls(#[from] rustls::Error),
    #[error("installing signal handlers: {0}")]
    Signal(#[source] std::io::Error),
    #[error("starting the async runtime: {0}")]
    Runtime(#[source] std::io::Error),
    #[error("writing to stdout: {0}")]
    Stdout(#[source] std::io::Error),
}

/// The one address of this process's interfaces inside `net`.
pub fn interface_address(net: &IpNet) -> Result<IpAddr, Error> {
    let found: BTreeSet<IpAddr> = nix::ifaddrs::getifaddrs()
        .map_err(Error::Interfaces)?
        .filter_map(|ifa| {
            let a = ifa.address?;
            if let Some(v4) = a.as_sockaddr_in() {
                Some(IpAddr::V4(v4.ip()))
            } else {
                a.as_sockaddr_in6().map(|v6| IpAddr::V6(v6.ip()))
            }
        })
        .filter(|ip| net.contains(ip))
        .collect();
    let mut it = found.iter();
    match (it.next(), it.next()) {
        (None, _) => Err(Error::NoAddress(*net)),
        (Some(ip), None) => Ok(*ip),
        (Some(_), Some(_)) => Err(Error::SeveralAddresses(
            *net,
            found
                .iter()
                .map(IpAddr::to_string)
                .collect::<Vec<_>>()
                .join(", "),
        )),
    }
}

/// A running gateway.
pub struct Gateway {
    addr: SocketAddr,
    ca_pem: String,
    shared: Arc<Shared>,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

impl Gateway {
    /// Bind, make the CA and start serving (on the current tokio runtime).
    pub async fn start(config: Config) -> Result<Gateway, Error> {
        let ip = interface_address(&config.listen)?;
        let want = SocketAddr::new(ip, config.port);
        let listener = tokio::net::TcpListener::bind(want)
            .await
            .map_err(|e| Error::Bind(want, e))?;
        let addr = listener.local_addr().map_err(|e| Error::Bind(want, e))?;

        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let ca = ca::Ca::generate(provider.clone())?;
        let mut roots = rustls::RootCertStore::empty();
        roots.add_parsable_certificates(config.roots.iter().cloned());
        let mut client_tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_no_client_auth();
        client_tls.alpn_protocols = vec![b"http/1.1".to_vec()];

        let masker = Masker::new(
            config
                .mask
                .iter()
                .map(|s| s.expose().as_bytes())
                .chain(config.inject.iter().map(|r| r.value.expose().as_bytes())),
        );
        let ca_pem = ca.cert_pem().to_string();
        let shared = Arc::new(Shared {
            config,
            ca,
            client_tls: Arc::new(client_tls),
            masker,
            stats: Default::default(),
        });
        let (stop, stop_rx) = tokio::sync::oneshot::channel();
        let task = tokio::spawn(proxy::serve(listener, shared.clone(), stop_rx));
        Ok(Gateway {
            addr,
            ca_pem,
            shared,
            stop,
            task,
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The per-process CA certificate, PEM.
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// The counts so far.
    pub fn summary(&self) -> Summary {
        self.shared.stats.summary()
    }

    /// Stop accepting, abort every connection, and return the counts.
    pub async fn shutdown(self) -> Summary {
        let _ = self.stop.send(());
        let _ = self.task.await;
        self.shared.stats.summary()
    }
}

#[derive(Serialize)]
struct Ready<'a> {
    addr: String,
    ca_pem: &'a str,
}

#[derive(Serialize)]
enum Line<'a> {
    #[serde(rename = "ready")]
    Ready(Ready<'a>),
    #[serde(rename = "summary")]
    Summary(&'a Summary),
    #[serde(rename = "error")]
    Error(String),
}

fn print_line(line: &Line<'_>) -> Result<(), Error> {
    let mut s = serde_json::to_string(line).map_err(|e| Error::Stdout(e.into()))?;
    s.push('\n');
    let mut out = std::io::stdout().lock();
    out.write_all(s.as_bytes())
        .and_then(|()| out.flush())
        .map_err(Error::Stdout)
}

fn read_stdin() -> Result<zeroize::Zeroizing<Vec<u8>>, ConfigError> {
    // Room for the whole cap up front, so growing never leaves copies of
    // the secrets behind in freed memory.
    let mut buf = zeroize::Zeroizing::new(Vec::with_capacity(MAX_CONFIG_BYTES + 1));
    std::io::stdin()
        .lock()
        .take(MAX_CONFIG_BYTES as u64 + 1)
        .read_to_end(&mut buf)
        .map_err(ConfigError::Read)?;
    if buf.len() > MAX_CONFIG_BYTES {
        return Err(ConfigError::TooLarge);
    }
    Ok(buf)
}

async fn serve_until_signal(config: Config) -> Result<(), Error> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).map_err(Error::Signal)?;
    let mut int = signal(SignalKind::interrupt()).map_err(Error::Signal)?;
    let lifetime = config.lifetime;
    let gw = Gateway::start(config).await?;
    print_line(&Line::Ready(Ready {
        addr: gw.addr().to_string(),
        ca_pem: gw.ca_pem(),
    }))?;
    // A far-off deadline (even u64::MAX seconds) is clamped by tokio.
    let expired = async {
        match lifetime {
            Some(d) => tokio::time::sleep(d).await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
        () = expired => {}
    }
    let summary = gw.shutdown().await;
    print_line(&Line::Summary(&summary))
}

/// The binary: read the config, serve until SIGTERM/SIGINT or the end of
/// its lifetime.
pub fn run() -> ExitCode {
    let _cli = <cli::Cli as clap::Parser>::parse();
    let result = (|| {
        let bytes = read_stdin()?;
        let config = Config::from_json(&bytes)?;
        drop(bytes);
        // The gateway container has pids_limit 64: a fixed, small number
        // of threads (DNS lookups run on the blocking pool).
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .max_blocking_threads(16)
            .enable_all()
            .build()
            .map_err(Error::Runtime)?;
        rt.block_on(serve_until_signal(config))
    })();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let msg = e.to_string();
            if !matches!(e, Error::Stdout(_)) {
                let _ = print_line(&Line::Error(msg.clone()));
            }
            eprintln!("vault-gateway: {msg}");
            ExitCode::from(2)
        }
    }
}
