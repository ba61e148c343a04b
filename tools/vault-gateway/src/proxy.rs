//! The proxy itself: accept loop, CONNECT tunnels, the TLS-terminating
//! inject path and plain-HTTP forwarding.

use crate::ca::Ca;
use crate::config::{Config, InjectRule};
use crate::stats::Stats;
use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode, Uri};
use http_body::Frame;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use ipnet::IpNet;
use rustls_pki_types::ServerName;
use std::convert::Infallible;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio::time::timeout;
use vault_mask::Masker;

/// Most client connections served at once; more are closed on accept.
pub const MAX_CONNECTIONS: usize = 256;
/// Time a client gets to send a request head (also the idle keep-alive limit).
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(30);
/// DNS plus TCP connect to an upstream.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// TLS handshakes, with the runner and with an upstream.
pub const TLS_TIMEOUT: Duration = Duration::from_secs(30);
/// From sending a request upstream to receiving its response head.
pub const RESPONSE_TIMEOUT: Duration = Duration::from_secs(120);

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
pub type Body = BoxBody<Bytes, BoxError>;
type Tunnel = Pin<Box<dyn Future<Output = ()> + Send>>;

pub struct Shared {
    pub config: Config,
    pub ca: Ca,
    pub client_tls: Arc<rustls::ClientConfig>,
    /// Built once from every secret value; cloned per response.
    pub masker: Masker,
    pub stats: Stats,
}

fn log_refused(method: &Method, key: &str, why: &str) {
    eprintln!("vault-gateway: refused {method} {key}: {why}");
}

fn text(status: StatusCode, msg: &str) -> Response<Body> {
    let body = Full::new(Bytes::from(format!("vault-gateway: {msg}\n")))
        .map_err(|never| match never {})
        .boxed();
    let mut r = Response::new(body);
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

impl Shared {
    fn refuse(&self, method: &Method, key: &str, status: StatusCode, why: &str) -> Response<Body> {
        log_refused(method, key, why);
        self.stats.refused(key);
        text(status, &format!("refused {key}: {why}"))
    }
}

/// Accept clients until `stop` fires; then every connection is aborted.
pub async fn serve(
    listener: TcpListener,
    shared: Arc<Shared>,
    mut stop: tokio::sync::oneshot::Receiver<()>,
) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            _ = &mut stop => break,
            accepted = listener.accept() => {
                while conns.try_join_next().is_some() {}
                let tcp = match accepted {
                    Ok((tcp, _)) => tcp,
                    Err(e) => {
                        // EMFILE and friends: back off instead of spinning.
                        eprintln!("vault-gateway: accepting a connection: {e}");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                let Ok(permit) = slots.clone().try_acquire_owned() else {
                    drop(tcp);
                    continue;
                };
                let shared = shared.clone();
                conns.spawn(async move {
                    serve_client(tcp, shared).await;
                    drop(permit);
                });
            }
        }
    }
    conns.abort_all();
    while conns.join_next().await.is_some() {}
}

fn server_builder() -> hyper::server::conn::http1::Builder {
    let mut b = hyper::server::conn::http1::Builder::new();
    b.timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .keep_alive(true);
    b
}

/// Serve one client connection. A CONNECT hands the connection over to a
/// tunnel, which runs here (after hyper lets go of the socket) so that it
/// holds the connection's slot and is aborted at shutdown.
async fn serve_client(tcp: TcpStream, shared: Arc<Shared>) {
    let slot: Arc<Mutex<Option<Tunnel>>> = Arc::new(Mutex::new(None));
    let svc = {
        let slot = slot.clone();
        service_fn(move |req| {
            let shared = shared.clone();
            let slot = slot.clone();
            async move { Ok::<_, Infallible>(handle(req, shared, slot).await) }
        })
    };
    let _ = server_builder()
        .serve_connection(TokioIo::new(tcp), svc)
        .with_upgrades()
        .await;
    let tunnel = slot.lock().unwrap_or_else(|p| p.into_inner()).take();
    if let Some(t) = tunnel {
        t.await;
    }
}

async fn handle(
    req: Request<Incoming>,
    shared: Arc<Shared>,
    slot: Arc<Mutex<Option<Tunnel>>>,
) -> Response<Body> {
    if req.method() == Method::CONNECT {
        connect(req, shared, slot).await
    } else {
        plain(req, shared).await
    }
}

/// Host (lowercased, IPv6 in brackets) and port of an authority.
fn host_port(uri: &Uri, default_port: Option<u16>) -> Option<(String, u16)> {
    let a = uri.authority()?;
    let port = a.port_u16().or(default_port)?;
    Some((a.host().to_ascii_lowercase(), port))
}

async fn connect(
    mut req: Request<Incoming>,
    shared: Arc<Shared>,
    slot: Arc<Mutex<Option<Tunnel>>>,
) -> Response<Body> {
    let method = Method::CONNECT;
    let Some((host, port)) = host_port(req.uri(), None) else {
        return text(StatusCode::BAD_REQUEST, "CONNECT needs host:port");
    };
    let key = crate::stats::key(&host, port);
    if !shared.config.allow.allows(&host, port) {
        return shared.refuse(&method, &key, StatusCode::FORBIDDEN, "not in the allowlist");
    }
    let upgrade = hyper::upgrade::on(&mut req);
    let rules = shared.config.rules_for_connect(&host, port);
    let tunnel: Tunnel = if rules.is_empty() {
        let upstream = match dial(&shared, &host, port).await {
            Ok(s) => s,
            Err(why) => {
                return shared.refuse(&method, &key, StatusCode::BAD_GATEWAY, &why);
            }
        };
        shared.stats.contacted(&key);
        Box::pin(async move {
            if let Ok(up) = upgrade.await {
                let mut client = TokioIo::new(up);
                let mut upstream = upstream;
                // Tunnels have no idle limit: a long download or a quiet
                // long-poll is legitimate; the container's life bounds it.
                let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
            }
        })
    } else {
        let tls = match shared.ca.server_config(&host) {
            Ok(c) => c,
            Err(e) => {
                eprintln!("vault-gateway: making a certificate for {host}: {e}");
                return text(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "cannot make a certificate",
                );
            }
        };
        let session = Arc::new(Session {
            shared: shared.clone(),
            host,
            port,
            key,
            rules,
            upstream: tokio::sync::Mutex::new(None),
        });
        Box::pin(async move {
            if let Ok(up) = upgrade.await {
                session.run(up, tls).await;
            }
        })
    };
    *slot.lock().unwrap_or_else(|p| p.into_inner()) = Some(tunnel);
    Response::new(
        Full::new(Bytes::new())
            .map_err(|never| match never {})
            .boxed(),
    )
}

/// Whether connecting to `ip` is refused: loopback, unspecified,
/// link-local, multicast, or inside the gateway's own subnet (so a name that
/// resolves there cannot reach the gateway's neighbours).
pub fn forbidden_ip(ip: IpAddr, listen: &IpNet) -> bool {
    let ip = match ip {
        IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map(IpAddr::V4)
            .unwrap_or(IpAddr::V6(v6)),
        v4 => v4,
    };
    let special = match ip {
        IpAddr::V4(v4) => {
            v4.is_loopback()
                || v4.is_unspecified()
                || v4.is_link_local()
                || v4.is_multicast()
                || v4.is_broadcast()
        }
        IpAddr::V6(v6) => {
            v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (v6.segments()[0] & 0xffc0) == 0xfe80
        }
    };
    special || listen.contains(&ip)
}

/// Resolve and connect to `host:port`, refusing private destinations.
/// The error is a short reason, safe to log.
async fn dial(shared: &Shared, host: &str, port: u16) -> Result<TcpStream, String> {
    let key = format!("{host}:{port}");
    let work = async {
        if let Some(addr) = shared.config.overrides.get(&key) {
            return TcpStream::connect(addr)
                .await
                .map_err(|e| format!("connecting: {e}"));
        }
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        let addrs: Vec<SocketAddr> = tokio::net::lookup_host((bare, port))
            .await
            .map_err(|e| format!("resolving: {e}"))?
            .collect();
        let good: Vec<SocketAddr> = addrs
            .iter()
            .copied()
            .filter(|a| !forbidden_ip(a.ip(), &shared.config.listen))
            .collect();
        if good.is_empty() {
            return Err(if addrs.is_empty() {
                "resolves to no address".to_string()
            } else {
                "resolves only to loopback, link-local, multicast or gateway-subnet addresses"
                    .to_string()
            });
        }
        let mut last = String::from("no address to connect to");
        for a in good {
            match TcpStream::connect(a).await {
                Ok(s) => return Ok(s),
                Err(e) => last = format!("connecting to {a}: {e}"),
            }
        }
        Err(last)
    };
    match timeout(CONNECT_TIMEOUT, work).await {
        Ok(r) => r,
        Err(_) => Err(format!("connecting timed out after {CONNECT_TIMEOUT:?}")),
    }
}

/// Remove hop-by-hop headers (and those the Connection header names).
fn strip_hop_by_hop(h: &mut HeaderMap) {
    let named: Vec<HeaderName> = h
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
        .collect();
    for n in named {
        h.remove(n);
    }
    for n in [
        header::CONNECTION,
        header::TE,
        header::TRAILER,
        header::TRANSFER_ENCODING,
        header::UPGRADE,
        HeaderName::from_static("keep-alive"),
    ] {
        h.remove(n);
    }
    let proxy: Vec<HeaderName> = h
        .keys()
        .filter(|k| k.as_str().starts_with("proxy-"))
        .cloned()
        .collect();
    for n in proxy {
        h.remove(n);
    }
}

fn host_header(host: &str, port: u16, default: u16) -> Option<HeaderValue> {
    let v = if port == default {
        host.to_string()
    } else {
        format!("{host}:{port}")
    };
    HeaderValue::from_str(&v).ok()
}

fn origin_form(uri: &Uri) -> Option<Uri> {
    let pq = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    let pq = if pq.is_empty() { "/" } else { pq };
    pq.parse().ok()
}

async fn send(
    sender: &mut SendRequest<Incoming>,
    req: Request<Incoming>,
) -> Result<Response<Incoming>, String> {
    match timeout(RESPONSE_TIMEOUT, sender.send_request(req)).await {
        Ok(Ok(r)) => Ok(r),
        Ok(Err(e)) => Err(format!("upstream request failed: {e}")),
        Err(_) => Err(format!("no upstream response within {RESPONSE_TIMEOUT:?}")),
    }
}

/// Forget what hyper's client attached to an upstream response. In
/// particular a non-standard reason phrase (`HTTP/1.1 401 Bearer <token>`)
/// is kept in a [`hyper::ext::ReasonPhrase`] extension, which hyper's server
/// would write back verbatim, unmasked; without it the client gets the
/// canonical reason for the status.
fn drop_upstream_extensions(parts: &mut http::response::Parts) {
    parts.extensions.clear();
}

/// A plain (absolute-form `http://`) proxy request.
async fn plain(req: Request<Incoming>, shared: Arc<Shared>) -> Response<Body> {
    let method = req.method().clone();
    match req.uri().scheme_str() {
        None => {
            return text(
                StatusCode::BAD_REQUEST,
                "this is a proxy: send absolute-form http:// requests or CONNECT",
            )
        }
        Some("http") => {}
        Some(_) => {
            return text(
                StatusCode::BAD_REQUEST,
                "only http:// is proxied in the clear; use CONNECT for https",
            )
        }
    }
    let Some((host, port)) = host_port(req.uri(), Some(80)) else {
        return text(StatusCode::BAD_REQUEST, "the request URI has no host");
    };
    let key = crate::stats::key(&host, port);
    if !shared.config.allow.allows(&host, port) {
        return shared.refuse(&method, &key, StatusCode::FORBIDDEN, "not in the allowlist");
    }
    if !shared.config.rules_for(&host).is_empty() {
        return shared.refuse(
            &method,
            &key,
            StatusCode::FORBIDDEN,
            "credentials are only injected over https",
        );
    }
    let (mut parts, body) = req.into_parts();
    let (Some(uri), Some(host_value)) = (origin_form(&parts.uri), host_header(&host, port, 80))
    else {
        return text(StatusCode::BAD_REQUEST, "unusable request URI");
    };
    parts.uri = uri;
    strip_hop_by_hop(&mut parts.headers);
    parts.headers.insert(header::HOST, host_value);
    let tcp = match dial(&shared, &host, port).await {
        Ok(s) => s,
        Err(why) => return shared.refuse(&method, &key, StatusCode::BAD_GATEWAY, &why),
    };
    let mut sender = match hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await {
        Ok((sender, conn)) => {
            tokio::spawn(async move {
                let _ = conn.await;
            });
            sender
        }
        Err(e) => {
            let why = format!("upstream handshake: {e}");
            return shared.refuse(&method, &key, StatusCode::BAD_GATEWAY, &why);
        }
    };
    let resp = match send(&mut sender, Request::from_parts(parts, body)).await {
        Ok(r) => r,
        Err(why) => return shared.refuse(&method, &key, StatusCode::BAD_GATEWAY, &why),
    };
    shared.stats.contacted(&key);
    let (mut parts, body) = resp.into_parts();
    drop_upstream_extensions(&mut parts);
    strip_hop_by_hop(&mut parts.headers);
    Response::from_parts(parts, body.map_err(BoxError::from).boxed())
}

/// One TLS session from the runner to an inject host, terminated here.
struct Session {
    shared: Arc<Shared>,
    host: String,
    port: u16,
    key: String,
    rules: Vec<InjectRule>,
    /// One upstream connection, reused while it stays open.
    upstream: tokio::sync::Mutex<Option<SendRequest<Incoming>>>,
}

impl Session {
    async fn run(self: Arc<Self>, up: hyper::upgrade::Upgraded, tls: Arc<rustls::ServerConfig>) {
        let acceptor = tokio_rustls::TlsAcceptor::from(tls);
        let stream = match timeout(TLS_TIMEOUT, acceptor.accept(TokioIo::new(up))).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                eprintln!("vault-gateway: TLS from the client for {}: {e}", self.key);
                return;
            }
            Err(_) => return,
        };
        let svc = service_fn(move |req| {
            let s = self.clone();
            async move { Ok::<_, Infallible>(s.forward(req).await) }
        });
        let _ = server_builder()
            .serve_connection(TokioIo::new(stream), svc)
            .await;
    }

    async fn upstream_conn(&self) -> Result<SendRequest<Incoming>, String> {
        let tcp = dial(&self.shared, &self.host, self.port).await?;
        let name =
            ServerName::try_from(self.host.clone()).map_err(|e| format!("bad server name: {e}"))?;
        let connector = tokio_rustls::TlsConnector::from(self.shared.client_tls.clone());
        let tls = match timeout(TLS_TIMEOUT, connector.connect(name, tcp)).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => return Err(format!("upstream TLS failed: {e}")),
            Err(_) => return Err("upstream TLS handshake timed out".to_string()),
        };
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .map_err(|e| format!("upstream handshake: {e}"))?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(sender)
    }

    async fn forward(&self, req: Request<Incoming>) -> Response<Body> {
        let method = req.method().clone();
        if method == Method::CONNECT {
            return text(
                StatusCode::METHOD_NOT_ALLOWED,
                "CONNECT inside a tunnel is not supported",
            );
        }
        let (mut parts, body) = req.into_parts();
        // Route only to the CONNECT authority: the inner Host header and any
        // absolute URI are ignored.
        let (Some(uri), Some(host_value)) = (
            origin_form(&parts.uri),
            host_header(&self.host, self.port, 443),
        ) else {
            return text(StatusCode::BAD_REQUEST, "unusable request URI");
        };
        parts.uri = uri;
        parts.version = http::Version::HTTP_11;
        strip_hop_by_hop(&mut parts.headers);
        // A part of a response can hold a piece of a secret, which the
        // masker cannot recognise: ask for whole responses only.
        parts.headers.remove(header::RANGE);
        parts.headers.remove(header::IF_RANGE);
        parts.headers.insert(header::HOST, host_value);
        parts.headers.insert(
            header::ACCEPT_ENCODING,
            HeaderValue::from_static("identity"),
        );
        for rule in &self.rules {
            parts.headers.remove(&rule.header);
        }
        for rule in &self.rules {
            // Validated at startup; a failure here would only drop the header.
            if let Ok(mut v) = HeaderValue::from_str(rule.value.expose()) {
                v.set_sensitive(true);
                parts.headers.append(rule.header.clone(), v);
            }
        }
        let req = Request::from_parts(parts, body);

        let mut guard = self.upstream.lock().await;
        if let Some(s) = guard.as_mut() {
            if s.ready().await.is_err() {
                *guard = None;
            }
        }
        let sender = match guard.as_mut() {
            Some(s) => s,
            None => match self.upstream_conn().await {
                Ok(s) => guard.insert(s),
                Err(why) => {
                    return self
                        .shared
                        .refuse(&method, &self.key, StatusCode::BAD_GATEWAY, &why)
                }
            },
        };
        let result = send(sender, req).await;
        drop(guard);
        let resp = match result {
            Ok(r) => r,
            Err(why) => {
                *self.upstream.lock().await = None;
                return self
                    .shared
                    .refuse(&method, &self.key, StatusCode::BAD_GATEWAY, &why);
            }
        };
        self.shared.stats.contacted(&self.key);
        let (mut parts, body) = resp.into_parts();
        drop_upstream_extensions(&mut parts);
        if let Some(why) = unmaskable(&parts) {
            log_refused(&method, &self.key, why);
            // The connection still carries the unread body: do not reuse it.
            *self.upstream.lock().await = None;
            return text(StatusCode::BAD_GATEWAY, why);
        }
        strip_hop_by_hop(&mut parts.headers);
        parts.headers.remove(header::CONTENT_LENGTH);
        mask_headers(&self.shared.masker, &mut parts.headers);
        let body = MaskBody {
            inner: body,
            masker: Some(self.shared.masker.clone()),
        };
        Response::from_parts(parts, body.boxed())
    }
}

/// Why an upstream response on the inject path cannot be masked, if it
/// cannot: the masker sees the body bytes as hyper's client delivers them,
/// so they must be the plain, whole representation.
fn unmaskable(parts: &http::response::Parts) -> Option<&'static str> {
    if parts.status == StatusCode::PARTIAL_CONTENT {
        return Some("the upstream response is partial (206), so it cannot be masked");
    }
    let encoded = parts
        .headers
        .get_all(header::CONTENT_ENCODING)
        .iter()
        .any(|v| !v.as_bytes().trim_ascii().eq_ignore_ascii_case(b"identity"));
    if encoded {
        return Some("the upstream response is content-encoded, so it cannot be masked");
    }
    if !transfer_coding_is_plain(&parts.headers) {
        return Some(
            "the upstream response has a transfer coding other than chunked, so it cannot be masked",
        );
    }
    None
}

/// Whether the Transfer-Encoding of a response is absent or exactly one
/// `chunked`. hyper's client removes only a final `chunked` and hands over
/// everything under it as the body (`gzip, chunked`: gzip bytes; `gzip`
/// alone: the raw bytes up to the close; `chunked, chunked`: the inner
/// chunk framing, which can split a secret).
fn transfer_coding_is_plain(h: &HeaderMap) -> bool {
    let mut codings = h
        .get_all(header::TRANSFER_ENCODING)
        .iter()
        .flat_map(|v| v.as_bytes().split(|&b| b == b','))
        .map(<[u8]>::trim_ascii);
    match codings.next() {
        None => true,
        Some(first) => first.eq_ignore_ascii_case(b"chunked") && codings.next().is_none(),
    }
}

/// Mask every header value that holds a secret form; a value that is no
/// longer a valid header value after masking is dropped.
fn mask_headers(template: &Masker, headers: &mut HeaderMap) {
    let old = std::mem::take(headers);
    let mut name: Option<HeaderName> = None;
    for (k, v) in old {
        if let Some(k) = k {
            name = Some(k);
        }
        let Some(n) = name.clone() else { continue };
        let mut m = template.clone();
        let mut out = m.push(v.as_bytes());
        out.extend(m.finish());
        if out == v.as_bytes() {
            headers.append(n, v);
        } else if let Ok(masked) = HeaderValue::from_bytes(&out) {
            headers.append(n, masked);
        }
    }
}

/// A response body passed through a [`Masker`]. Trailers are dropped.
pub struct MaskBody<B> {
    pub inner: B,
    /// `None` once finished.
    pub masker: Option<Masker>,
}

impl<B> http_body::Body for MaskBody<B>
where
    B: http_body::Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        loop {
            let Some(masker) = this.masker.as_mut() else {
                return Poll::Ready(None);
            };
            match Pin::new(&mut this.inner).poll_frame(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(Ok(frame))) => {
                    if let Ok(data) = frame.into_data() {
                        let out = masker.push(&data);
                        if !out.is_empty() {
                            return Poll::Ready(Some(Ok(Frame::data(Bytes::from(out)))));
                        }
                    }
                }
                Poll::Ready(Some(Err(e))) => {
                    this.masker = None;
                    return Poll::Ready(Some(Err(e.into())));
                }
                Poll::Ready(None) => {
                    let out = masker.finish();
                    this.masker = None;
                    if !out.is_empty() {
                        return Poll::Ready(Some(Ok(Frame::data(Bytes::from(out)))));
                    }
                    return Poll::Ready(None);
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.masker.is_none()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forbidden_addresses() {
        let net: IpNet = "172.18.0.0/16".parse().unwrap_or_else(|_| unreachable!());
        for bad in [
            "127.0.0.1",
            "0.0.0.0",
            "169.254.169.254",
            "224.0.0.1",
            "172.18.0.5",
            "::1",
            "::",
            "fe80::1",
            "ff02::1",
            "::ffff:127.0.0.1",
            "::ffff:172.18.1.1",
        ] {
            let ip: IpAddr = bad.parse().unwrap_or_else(|_| unreachable!());
            assert!(forbidden_ip(ip, &net), "{bad}");
        }
        for ok in ["93.184.216.34", "172.19.0.1", "10.0.0.1", "2001:db8::1"] {
            let ip: IpAddr = ok.parse().unwrap_or_else(|_| unreachable!());
            assert!(!forbidden_ip(ip, &net), "{ok}");
        }
    }

    #[test]
    fn transfer_codings() {
        let te = |vals: &[&'static str]| {
            let mut h = HeaderMap::new();
            for v in vals {
                h.append(header::TRANSFER_ENCODING, HeaderValue::from_static(v));
            }
            transfer_coding_is_plain(&h)
        };
        assert!(te(&[]));
        assert!(te(&["chunked"]));
        assert!(te(&[" Chunked "]));
        for bad in [
            &["gzip, chunked"][..],
            &["gzip"],
            &["chunked, chunked"],
            &["gzip", "chunked"],
            &["chunked", "chunked"],
            &["chunked,"],
            &[""],
            &["identity"],
        ] {
            assert!(!te(bad), "{bad:?}");
        }
    }

    #[test]
    fn header_masking() {
        let m = Masker::new([b"s3cr3t-token".as_slice()]);
        let mut h = HeaderMap::new();
        h.insert("x-echo", HeaderValue::from_static("Bearer s3cr3t-token"));
        h.insert("x-other", HeaderValue::from_static("fine"));
        mask_headers(&m, &mut h);
        assert_eq!(h["x-echo"], "Bearer ***");
        assert_eq!(h["x-other"], "fine");
    }
}
