//! End-to-end tests on 127.0.0.1: a real gateway (in-process or the built
//! binary), real TLS upstreams with their own test CA, real clients.
#![allow(clippy::unwrap_used)]

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use std::convert::Infallible;
use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use vault_gateway::{Config, Gateway};

const TOKEN: &str = "s3cr3t-T0ken-value";

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

struct TestCa {
    issuer: Issuer<'static, KeyPair>,
    pem: String,
}

fn test_ca() -> TestCa {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign];
    let key = KeyPair::generate().unwrap();
    let cert = params.self_signed(&key).unwrap();
    TestCa {
        issuer: Issuer::new(params, key),
        pem: cert.pem(),
    }
}

/// What an upstream saw of one request.
#[derive(Debug, Clone)]
struct Seen {
    authorization: Vec<String>,
    host: String,
    accept_encoding: String,
    proxy_headers: usize,
    uri: String,
    range: Option<String>,
    if_range: Option<String>,
}

#[derive(Clone, Copy)]
enum Mode {
    Echo,
    Gzip,
    /// A 401 whose reason phrase is the Authorization value it got.
    ReasonEcho,
    /// A 206 with the first bytes of the echo.
    Partial,
}

/// A TLS acceptor for `host`, certified by `ca`, and its listener on
/// 127.0.0.1.
async fn tls_server(
    host: &str,
    ca: &TestCa,
) -> (tokio_rustls::TlsAcceptor, TcpListener, SocketAddr) {
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec![host.to_string()])
        .unwrap()
        .signed_by(&key, &ca.issuer)
        .unwrap();
    let config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![cert.der().clone()],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
        )
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    (acceptor, listener, addr)
}

/// An HTTPS server for `host`, certified by `ca`, echoing the request's
/// Authorization and Host headers in its body and in `x-echo-auth`.
async fn upstream(host: &str, ca: &TestCa, mode: Mode) -> (SocketAddr, Arc<Mutex<Vec<Seen>>>) {
    let (acceptor, listener, addr) = tls_server(host, ca).await;
    let seen = Arc::new(Mutex::new(Vec::new()));
    let seen2 = seen.clone();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let acceptor = acceptor.clone();
            let seen = seen2.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let svc = service_fn(move |req: Request<Incoming>| {
                    let seen = seen.clone();
                    async move {
                        let h = req.headers();
                        let get = |n: &str| {
                            h.get(n)
                                .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
                                .unwrap_or_default()
                        };
                        let s = Seen {
                            authorization: h
                                .get_all("authorization")
                                .iter()
                                .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
                                .collect(),
                            host: get("host"),
                            accept_encoding: get("accept-encoding"),
                            proxy_headers: h
                                .keys()
                                .filter(|k| k.as_str().starts_with("proxy-"))
                                .count(),
                            uri: req.uri().to_string(),
                            range: h.get("range").map(|_| get("range")),
                            if_range: h.get("if-range").map(|_| get("if-range")),
                        };
                        let auth = s.authorization.join(",");
                        let body = format!("auth={auth}\nhost={}\n", s.host);
                        seen.lock().unwrap().push(s);
                        let body = match mode {
                            Mode::Partial => body[..12].to_string(),
                            _ => body,
                        };
                        let mut r = Response::new(Full::new(Bytes::from(body)));
                        r.headers_mut().insert("x-echo-auth", auth.parse().unwrap());
                        match mode {
                            Mode::Echo => {}
                            Mode::Gzip => {
                                r.headers_mut()
                                    .insert("content-encoding", "gzip".parse().unwrap());
                            }
                            Mode::Partial => {
                                *r.status_mut() = StatusCode::PARTIAL_CONTENT;
                                r.headers_mut()
                                    .insert("content-range", "bytes 0-11/50".parse().unwrap());
                            }
                            Mode::ReasonEcho => {
                                *r.status_mut() = StatusCode::UNAUTHORIZED;
                                r.extensions_mut()
                                    .insert(hyper::ext::ReasonPhrase::try_from(auth).unwrap());
                            }
                        }
                        Ok::<_, Infallible>(r)
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tls), svc)
                    .await;
            });
        }
    });
    (addr, seen)
}

/// An HTTPS server for `host` that reads one request head, records it, and
/// answers with the bytes `response` (written as they are), then closes.
async fn raw_upstream(
    host: &str,
    ca: &TestCa,
    response: Vec<u8>,
) -> (SocketAddr, Arc<Mutex<Vec<String>>>) {
    let (acceptor, listener, addr) = tls_server(host, ca).await;
    let heads = Arc::new(Mutex::new(Vec::new()));
    let heads2 = heads.clone();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            let heads = heads2.clone();
            let response = response.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let mut head = Vec::new();
                let mut buf = [0u8; 4096];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match tls.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                heads
                    .lock()
                    .unwrap()
                    .push(String::from_utf8_lossy(&head).into_owned());
                let _ = tls.write_all(&response).await;
                let _ = tls.shutdown().await;
            });
        }
    });
    (addr, heads)
}

/// A plain TCP echo server.
async fn echo_server() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            tokio::spawn(async move {
                let (mut r, mut w) = tcp.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    addr
}

/// A plain HTTP server answering "plain ok <path>".
async fn http_server() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            tokio::spawn(async move {
                let svc = service_fn(|req: Request<Incoming>| async move {
                    let body = format!(
                        "plain ok {} host={} proxy-headers={}",
                        req.uri(),
                        req.headers()
                            .get("host")
                            .map(|v| v.to_str().unwrap_or("?").to_string())
                            .unwrap_or_default(),
                        req.headers()
                            .keys()
                            .filter(|k| k.as_str().starts_with("proxy-"))
                            .count()
                    );
                    let reason = req.uri().path() == "/reason";
                    let mut r = Response::new(Full::new(Bytes::from(body)));
                    if reason {
                        *r.status_mut() = StatusCode::UNAUTHORIZED;
                        r.extensions_mut().insert(
                            hyper::ext::ReasonPhrase::try_from(format!("Bearer {TOKEN}")).unwrap(),
                        );
                    }
                    Ok::<_, Infallible>(r)
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tcp), svc)
                    .await;
            });
        }
    });
    addr
}

fn config(allow: &[&str], roots_pem: &str) -> Config {
    let json = serde_json::json!({
        "version": 1,
        "listen": "127.0.0.0/8",
        "port": 0,
        "allow": allow,
        "inject": [{"host": "api.test", "header": "Authorization", "value": format!("Bearer {TOKEN}")}],
        "mask": [TOKEN],
        "roots_pem": roots_pem,
    });
    Config::from_json(json.to_string().as_bytes()).unwrap()
}

/// CONNECT through the gateway; the status and, on 200, the tunnel.
async fn connect(
    gw: SocketAddr,
    authority: &str,
) -> (StatusCode, Option<TokioIo<hyper::upgrade::Upgraded>>) {
    let tcp = TcpStream::connect(gw).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .unwrap();
    tokio::spawn(conn.with_upgrades());
    let req = Request::connect(authority)
        .header("host", authority)
        .body(Empty::<Bytes>::new())
        .unwrap();
    let resp = sender.send_request(req).await.unwrap();
    let status = resp.status();
    if status != StatusCode::OK {
        return (status, None);
    }
    let up = hyper::upgrade::on(resp).await.unwrap();
    (status, Some(TokioIo::new(up)))
}

/// TLS (trusting `ca_pem` for `host`) in a tunnel.
async fn tls_in_tunnel(
    tunnel: TokioIo<hyper::upgrade::Upgraded>,
    ca_pem: &str,
    host: &str,
) -> tokio_rustls::client::TlsStream<TokioIo<hyper::upgrade::Upgraded>> {
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(c.unwrap()).unwrap();
    }
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    tokio_rustls::TlsConnector::from(Arc::new(cfg))
        .connect(ServerName::try_from(host.to_string()).unwrap(), tunnel)
        .await
        .unwrap()
}

/// An HTTP/1.1 client over TLS (trusting `ca_pem` for `host`) in a tunnel.
async fn https_client(
    tunnel: TokioIo<hyper::upgrade::Upgraded>,
    ca_pem: &str,
    host: &str,
) -> hyper::client::conn::http1::SendRequest<Empty<Bytes>> {
    let tls = tls_in_tunnel(tunnel, ca_pem, host).await;
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .unwrap();
    tokio::spawn(conn);
    sender
}

/// GET `/path` over TLS (trusting `ca_pem` for `host`) inside a tunnel.
async fn https_get(
    tunnel: TokioIo<hyper::upgrade::Upgraded>,
    ca_pem: &str,
    host: &str,
    extra: &[(&str, &str)],
) -> Response<Bytes> {
    let mut sender = https_client(tunnel, ca_pem, host).await;
    let mut req = Request::get("/path?q=1").header("host", "elsewhere.test");
    for (k, v) in extra {
        req = req.header(*k, *v);
    }
    let resp = sender
        .send_request(req.body(Empty::<Bytes>::new()).unwrap())
        .await
        .unwrap();
    let (parts, body) = resp.into_parts();
    let body = body.collect().await.unwrap().to_bytes();
    Response::from_parts(parts, body)
}

fn contains(hay: &[u8], needle: &str) -> bool {
    hay.windows(needle.len()).any(|w| w == needle.as_bytes())
}

/// A gateway allowing only `api.test:443`, which is `up`, with `roots`.
async fn gateway_to(up: SocketAddr, roots: &str) -> Gateway {
    let mut cfg = config(&["api.test:443"], roots);
    cfg.override_address("api.test:443", up);
    Gateway::start(cfg).await.unwrap()
}

#[tokio::test]
async fn injects_the_token_and_masks_it_in_the_response() {
    let ca = test_ca();
    let (up, seen) = upstream("api.test", &ca, Mode::Echo).await;
    let gw = gateway_to(up, &ca.pem).await;

    let (status, tunnel) = connect(gw.addr(), "api.test:443").await;
    assert_eq!(status, StatusCode::OK);
    let resp = https_get(
        tunnel.unwrap(),
        gw.ca_pem(),
        "api.test",
        &[
            ("authorization", "Bearer fake-from-the-runner"),
            ("proxy-authorization", "Basic Zm9vOmJhcg=="),
            ("accept-encoding", "gzip"),
        ],
    )
    .await;
    assert_eq!(resp.status(), StatusCode::OK);

    // The upstream got the real token, once, and nothing of the runner's.
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].authorization, vec![format!("Bearer {TOKEN}")]);
    assert_eq!(seen[0].host, "api.test");
    assert_eq!(seen[0].accept_encoding, "identity");
    assert_eq!(seen[0].proxy_headers, 0);
    assert_eq!(seen[0].uri, "/path?q=1");

    // The runner sees neither the token in the body nor in the headers.
    let body = resp.body();
    assert!(!contains(body, TOKEN), "{body:?}");
    // The whole injected value is a mask value too, so the scheme goes as well.
    assert_eq!(&body[..], b"auth=***\nhost=api.test\n");
    assert!(!contains(body, "fake-from-the-runner"), "{body:?}");
    let echoed = resp.headers()["x-echo-auth"].as_bytes();
    assert!(!contains(echoed, TOKEN));
    assert_eq!(echoed, b"***");
    for (_, v) in resp.headers() {
        assert!(!contains(v.as_bytes(), TOKEN));
    }
    assert!(resp.headers().get("content-length").is_none());

    let summary = gw.shutdown().await;
    assert_eq!(summary.contacted.get("api.test:443"), Some(&1));
    assert!(summary.refused.is_empty());
}

#[tokio::test]
async fn several_requests_in_one_tunnel_are_each_injected_and_masked() {
    let ca = test_ca();
    let (up, seen) = upstream("api.test", &ca, Mode::Echo).await;
    let gw = gateway_to(up, &ca.pem).await;
    let (_, tunnel) = connect(gw.addr(), "api.test:443").await;
    let mut sender = https_client(tunnel.unwrap(), gw.ca_pem(), "api.test").await;
    for i in 0..3 {
        let req = Request::get(format!("/n/{i}"))
            .body(Empty::<Bytes>::new())
            .unwrap();
        let resp = sender.send_request(req).await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        assert!(!contains(&body, TOKEN));
    }
    assert_eq!(seen.lock().unwrap().len(), 3);
    let summary = gw.shutdown().await;
    assert_eq!(summary.contacted.get("api.test:443"), Some(&3));
}

#[tokio::test]
async fn refuses_hosts_off_the_allowlist() {
    let ca = test_ca();
    let gw = Gateway::start(config(&["api.test:443", "*.pkg.test:443"], &ca.pem))
        .await
        .unwrap();
    for a in [
        "evil.test:443",
        "api.test:8443",
        "pkg.test:443",
        "EVIL.test:443",
    ] {
        let (status, _) = connect(gw.addr(), a).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{a}");
    }
    let summary = gw.shutdown().await;
    assert_eq!(summary.refused.get("evil.test:443"), Some(&2));
    assert_eq!(summary.refused.get("api.test:8443"), Some(&1));
    assert_eq!(summary.refused.get("pkg.test:443"), Some(&1));
    assert!(summary.contacted.is_empty());
}

#[tokio::test]
async fn bogus_authorities_are_counted_as_invalid() {
    let ca = test_ca();
    let gw = Gateway::start(config(&["api.test:443", "*.test:443"], &ca.pem))
        .await
        .unwrap();
    let long = format!("{}:443", "a".repeat(5000));
    for a in [
        long.as_str(),
        "a!b$c.test:443",
        "under_score.test:443",
        "x.test;y=1:443",
        "1.2.3.4.5:443",
    ] {
        let (status, _) = connect(gw.addr(), a).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{a}");
    }
    let (status, _) = connect(gw.addr(), "evil.example:443").await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let summary = gw.shutdown().await;
    assert_eq!(summary.refused.get("(invalid)"), Some(&5), "{summary:?}");
    assert_eq!(summary.refused.get("evil.example:443"), Some(&1));
    assert_eq!(summary.refused.len(), 2, "{summary:?}");
    assert!(summary.contacted.is_empty());
}

#[tokio::test]
async fn tunnels_raw_bytes_to_allowed_non_inject_hosts() {
    let ca = test_ca();
    let echo = echo_server().await;
    let mut cfg = config(&["api.test:443", "*.pkg.test:7"], &ca.pem);
    cfg.override_address("a.pkg.test:7", echo);
    let gw = Gateway::start(cfg).await.unwrap();
    let (status, tunnel) = connect(gw.addr(), "a.pkg.test:7").await;
    assert_eq!(status, StatusCode::OK);
    let mut t = tunnel.unwrap();
    let msg = b"\x00raw bytes\xff, not HTTP\r\n\r\n";
    t.write_all(msg).await.unwrap();
    let mut buf = vec![0u8; msg.len()];
    t.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, msg);
    drop(t);
    let summary = gw.shutdown().await;
    assert_eq!(summary.contacted.get("a.pkg.test:7"), Some(&1));
}

#[tokio::test]
async fn a_port_allowed_only_by_a_wildcard_gets_a_plain_tunnel() {
    let ca = test_ca();
    let (up, seen) = upstream("api.test", &ca, Mode::Echo).await;
    let mut cfg = config(&["api.test:443", "*.test:8443"], &ca.pem);
    cfg.override_address("api.test:8443", up);
    let gw = Gateway::start(cfg).await.unwrap();
    let (status, tunnel) = connect(gw.addr(), "api.test:8443").await;
    assert_eq!(status, StatusCode::OK);
    // The client talks TLS with the upstream itself (its test CA, not the
    // gateway's), and the upstream sees only what the client sent.
    let resp = https_get(
        tunnel.unwrap(),
        &ca.pem,
        "api.test",
        &[("authorization", "Bearer runner-own")],
    )
    .await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(
        &resp.body()[..],
        b"auth=Bearer runner-own\nhost=elsewhere.test\n"
    );
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].authorization, vec!["Bearer runner-own".to_string()]);
    let summary = gw.shutdown().await;
    assert_eq!(summary.contacted.get("api.test:8443"), Some(&1));
}

#[tokio::test]
async fn a_port_allowed_only_by_a_wildcard_is_not_intercepted() {
    let ca = test_ca();
    let (up, seen) = upstream("api.test", &ca, Mode::Echo).await;
    let mut cfg = config(&["api.test:443", "*.test:8443"], &ca.pem);
    cfg.override_address("api.test:8443", up);
    let gw = Gateway::start(cfg).await.unwrap();
    let (_, tunnel) = connect(gw.addr(), "api.test:8443").await;
    // A client trusting the gateway's CA fails the handshake: the gateway
    // does not terminate TLS there.
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(gw.ca_pem().as_bytes()) {
        roots.add(c.unwrap()).unwrap();
    }
    let cfg = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let tls = tokio_rustls::TlsConnector::from(Arc::new(cfg))
        .connect(ServerName::try_from("api.test").unwrap(), tunnel.unwrap())
        .await;
    assert!(tls.is_err());
    assert!(seen.lock().unwrap().is_empty());
    gw.shutdown().await;
}

#[tokio::test]
async fn refuses_destinations_that_resolve_to_loopback() {
    let ca = test_ca();
    let echo = echo_server().await;
    let allowed = format!("localhost:{}", echo.port());
    let gw = Gateway::start(config(&[allowed.as_str(), "api.test:443"], &ca.pem))
        .await
        .unwrap();
    let (status, _) = connect(gw.addr(), &allowed).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY);
    let summary = gw.shutdown().await;
    assert_eq!(summary.refused.get(&allowed), Some(&1));
    assert!(summary.contacted.is_empty());
}

#[tokio::test]
async fn untrusted_upstream_certificate_is_a_502_and_gets_no_token() {
    let trusted = test_ca();
    let other = test_ca();
    let (up, seen) = upstream("api.test", &other, Mode::Echo).await;
    let gw = gateway_to(up, &trusted.pem).await;
    let (status, tunnel) = connect(gw.addr(), "api.test:443").await;
    assert_eq!(status, StatusCode::OK);
    let resp = https_get(tunnel.unwrap(), gw.ca_pem(), "api.test", &[]).await;
    assert_eq!(resp.status(), StatusCode::BAD_GATEWAY);
    assert!(!contains(resp.body(), TOKEN));
    assert!(seen.lock().unwrap().is_empty());
    let summary = gw.shutdown().await;
    assert_eq!(summary.refused.get("api.test:443"), Some(&1));
    assert!(summary.contacted.is_empty());
}

#[tokio::test]
async fn content_encoded_responses_are_replaced_by_a_502() {
    let ca = test_ca();
    let (up, seen) = upstream("api.test", &ca, Mode::Gzip).await;
    let gw = gateway_to(up, &ca.pem).await;
    let (_, tunnel) = connect(gw.addr(), "api.test:443").await;
    let resp = https_get(tunnel.unwrap(), gw.ca_pem(), "api.test", &[]).await;
    assert_eq!(resp.status(), StatusCode::BAD_GATEWAY);
    assert!(!contains(resp.body(), TOKEN));
    assert!(resp.headers().get("x-echo-auth").is_none());
    assert_eq!(seen.lock().unwrap().len(), 1);
    gw.shutdown().await;
}

#[tokio::test]
async fn range_headers_are_not_forwarded() {
    let ca = test_ca();
    let (up, seen) = upstream("api.test", &ca, Mode::Echo).await;
    let gw = gateway_to(up, &ca.pem).await;
    let (_, tunnel) = connect(gw.addr(), "api.test:443").await;
    let resp = https_get(
        tunnel.unwrap(),
        gw.ca_pem(),
        "api.test",
        &[("range", "bytes=12-17"), ("if-range", "\"etag-1\"")],
    )
    .await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(&resp.body()[..], b"auth=***\nhost=api.test\n");
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].range, None);
    assert_eq!(seen[0].if_range, None);
    assert_eq!(seen[0].authorization, vec![format!("Bearer {TOKEN}")]);
    gw.shutdown().await;
}

#[tokio::test]
async fn partial_content_is_replaced_by_a_502() {
    let ca = test_ca();
    let (up, seen) = upstream("api.test", &ca, Mode::Partial).await;
    let gw = gateway_to(up, &ca.pem).await;
    let (_, tunnel) = connect(gw.addr(), "api.test:443").await;
    let mut sender = https_client(tunnel.unwrap(), gw.ca_pem(), "api.test").await;
    // Twice in one tunnel: the upstream connection with the unread 206
    // body is dropped, and the next request still works (and is refused).
    for _ in 0..2 {
        let req = Request::get("/").body(Empty::<Bytes>::new()).unwrap();
        let resp = sender.send_request(req).await.unwrap();
        assert_eq!(resp.status(), StatusCode::BAD_GATEWAY);
        assert!(resp.headers().get("content-range").is_none());
        assert!(resp.headers().get("x-echo-auth").is_none());
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        // The 206 body is `auth=Bearer ` (12 bytes): none of it comes through.
        assert!(!contains(&body, "auth="), "{body:?}");
        assert!(contains(&body, "partial (206)"), "{body:?}");
    }
    assert_eq!(seen.lock().unwrap().len(), 2);
    let summary = gw.shutdown().await;
    assert_eq!(summary.contacted.get("api.test:443"), Some(&2));
    assert!(summary.refused.is_empty());
}

/// A chunked body holding `s` (one chunk).
fn chunk(s: &str) -> String {
    format!("{:x}\r\n{s}\r\n", s.len())
}

#[tokio::test]
async fn transfer_codings_other_than_chunked_are_replaced_by_a_502() {
    let secret = format!("auth=Bearer {TOKEN}\n");
    // The inner framing of `chunked, chunked` splits the token in two.
    let (a, b) = secret.split_at(15);
    let inner = format!("{}{}0\r\n\r\n", chunk(a), chunk(b));
    let cases = [
        format!(
            "HTTP/1.1 200 OK\r\ntransfer-encoding: gzip, chunked\r\nx-echo: 1\r\n\r\n{}0\r\n\r\n",
            chunk(&secret)
        ),
        format!(
            "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked, chunked\r\nx-echo: 1\r\n\r\n{}0\r\n\r\n",
            chunk(&inner)
        ),
        format!(
            "HTTP/1.1 200 OK\r\ntransfer-encoding: gzip\r\ntransfer-encoding: chunked\r\nx-echo: 1\r\n\r\n{}0\r\n\r\n",
            chunk(&secret)
        ),
        // Not chunked at all: hyper reads the body up to the close.
        format!("HTTP/1.1 200 OK\r\ntransfer-encoding: gzip\r\nx-echo: 1\r\n\r\n{secret}"),
    ];
    for response in cases {
        let ca = test_ca();
        let (up, heads) = raw_upstream("api.test", &ca, response.clone().into_bytes()).await;
        let gw = gateway_to(up, &ca.pem).await;
        let (_, tunnel) = connect(gw.addr(), "api.test:443").await;
        let resp = https_get(tunnel.unwrap(), gw.ca_pem(), "api.test", &[]).await;
        assert_eq!(resp.status(), StatusCode::BAD_GATEWAY, "{response:?}");
        assert!(resp.headers().get("x-echo").is_none(), "{response:?}");
        assert!(!contains(resp.body(), "auth="), "{response:?}");
        assert!(!contains(resp.body(), &TOKEN[..5]), "{response:?}");
        assert_eq!(heads.lock().unwrap().len(), 1, "{response:?}");
        let summary = gw.shutdown().await;
        assert_eq!(summary.contacted.get("api.test:443"), Some(&1));
        assert!(summary.refused.is_empty());
    }
}

#[tokio::test]
async fn a_plain_chunked_response_is_masked() {
    let secret = format!("auth=Bearer {TOKEN}\n");
    let (a, b) = secret.split_at(15);
    let response = format!(
        "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\nx-echo: 1\r\n\r\n{}{}0\r\n\r\n",
        chunk(a),
        chunk(b)
    );
    let ca = test_ca();
    let (up, heads) = raw_upstream("api.test", &ca, response.into_bytes()).await;
    let gw = gateway_to(up, &ca.pem).await;
    let (_, tunnel) = connect(gw.addr(), "api.test:443").await;
    let resp = https_get(tunnel.unwrap(), gw.ca_pem(), "api.test", &[]).await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(&resp.body()[..], b"auth=***\n");
    let head = heads.lock().unwrap()[0].to_ascii_lowercase();
    assert!(head.contains(&format!(
        "authorization: bearer {}",
        TOKEN.to_ascii_lowercase()
    )));
    gw.shutdown().await;
}

#[tokio::test]
async fn closes_connections_beyond_the_limit() {
    let ca = test_ca();
    let gw = Gateway::start(config(&["api.test:443"], &ca.pem))
        .await
        .unwrap();
    let mut held = Vec::new();
    for _ in 0..256 {
        held.push(TcpStream::connect(gw.addr()).await.unwrap());
    }
    // Let the accept loop take all of them before the one too many.
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let mut extra = TcpStream::connect(gw.addr()).await.unwrap();
    let mut buf = [0u8; 1];
    let n = tokio::time::timeout(std::time::Duration::from_secs(5), extra.read(&mut buf))
        .await
        .expect("the extra connection is closed, not left hanging");
    assert!(matches!(n, Ok(0) | Err(_)), "{n:?}");
    // A freed slot is usable again.
    drop(held.pop());
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let (status, _) = connect(gw.addr(), "evil.test:443").await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    gw.shutdown().await;
}

/// An absolute-form request through the proxy, on a fresh connection.
async fn plain_get(gw: SocketAddr, uri: &str) -> (StatusCode, Bytes) {
    let resp = plain_get_response(gw, uri).await;
    (resp.status(), resp.into_body())
}

async fn plain_get_response(gw: SocketAddr, uri: &str) -> Response<Bytes> {
    let tcp = TcpStream::connect(gw).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .unwrap();
    tokio::spawn(conn);
    let req = Request::get(uri)
        .header("host", "ignored.test")
        .header("proxy-authorization", "Basic eDp5")
        .body(Empty::<Bytes>::new())
        .unwrap();
    let resp = sender.send_request(req).await.unwrap();
    let (parts, body) = resp.into_parts();
    Response::from_parts(parts, body.collect().await.unwrap().to_bytes())
}

#[tokio::test]
async fn plain_http_is_forwarded_but_never_to_inject_hosts() {
    let ca = test_ca();
    let web = http_server().await;
    let mut cfg = config(&["plain.test:80", "api.test:80", "api.test:443"], &ca.pem);
    cfg.override_address("plain.test:80", web);
    cfg.override_address("api.test:80", web);
    let gw = Gateway::start(cfg).await.unwrap();

    let (status, body) = plain_get(gw.addr(), "http://plain.test/x?y=1").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        &body[..],
        b"plain ok /x?y=1 host=plain.test proxy-headers=0"
    );

    let (status, _) = plain_get(gw.addr(), "http://api.test/").await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = plain_get(gw.addr(), "http://evil.test/").await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = plain_get(gw.addr(), "/origin-form").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    let summary = gw.shutdown().await;
    assert_eq!(summary.contacted.get("plain.test:80"), Some(&1));
    assert_eq!(summary.refused.get("api.test:80"), Some(&1));
    assert_eq!(summary.refused.get("evil.test:80"), Some(&1));
}

#[tokio::test]
async fn a_reason_phrase_is_never_passed_back() {
    let ca = test_ca();
    let (up, seen) = upstream("api.test", &ca, Mode::ReasonEcho).await;
    let web = http_server().await;
    let mut cfg = config(&["api.test:443", "plain.test:80"], &ca.pem);
    cfg.override_address("api.test:443", up);
    cfg.override_address("plain.test:80", web);
    let gw = Gateway::start(cfg).await.unwrap();

    // Inject path: the upstream answers `HTTP/1.1 401 Bearer <token>`.
    let (_, tunnel) = connect(gw.addr(), "api.test:443").await;
    let resp = https_get(tunnel.unwrap(), gw.ca_pem(), "api.test", &[]).await;
    assert_eq!(
        seen.lock().unwrap()[0].authorization,
        vec![format!("Bearer {TOKEN}")]
    );
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    // hyper keeps a non-canonical reason phrase as an extension: none came.
    let reason = resp.extensions().get::<hyper::ext::ReasonPhrase>();
    assert!(reason.is_none(), "{reason:?}");

    // Plain-http path: the same, without a secret involved.
    let resp = plain_get_response(gw.addr(), "http://plain.test/reason").await;
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    let reason = resp.extensions().get::<hyper::ext::ReasonPhrase>();
    assert!(reason.is_none(), "{reason:?}");
    gw.shutdown().await;
}

/// The raw status line a gateway sends for one request in a tunnel.
#[tokio::test]
async fn the_status_line_is_canonical_on_the_wire() {
    let ca = test_ca();
    let (up, _) = upstream("api.test", &ca, Mode::ReasonEcho).await;
    let gw = gateway_to(up, &ca.pem).await;
    let (_, tunnel) = connect(gw.addr(), "api.test:443").await;
    let mut tls = tls_in_tunnel(tunnel.unwrap(), gw.ca_pem(), "api.test").await;
    tls.write_all(b"GET / HTTP/1.1\r\nhost: api.test\r\nconnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut raw = Vec::new();
    let _ = tls.read_to_end(&mut raw).await;
    assert!(!contains(&raw, TOKEN), "{}", String::from_utf8_lossy(&raw));
    assert!(
        raw.starts_with(b"HTTP/1.1 401 Unauthorized\r\n"),
        "{}",
        String::from_utf8_lossy(&raw)
    );
    gw.shutdown().await;
}

// ---- the built binary ----

fn spawn_binary(stdin: &str) -> std::process::Child {
    let mut child = Command::new(env!("CARGO_BIN_EXE_vault-gateway"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut i = child.stdin.take().unwrap();
    i.write_all(stdin.as_bytes()).unwrap();
    drop(i);
    child
}

#[test]
fn binary_bad_config_prints_an_error_line_and_exits_2() {
    let cases = [
        (
            r#"{"version": 2, "listen": "127.0.0.0/8", "port": 0, "allow": []}"#,
            "unsupported config version 2 (this vault-gateway speaks 1)",
        ),
        (
            r#"{"version": 1, "listen": "127.0.0.0/8", "port": 0, "allow": [], "mask": "hunter2-secret"}"#,
            "invalid config",
        ),
        (
            r#"{"version": 1, "listen": "127.0.0.0/8", "port": 0, "allow": ["x.test"]}"#,
            "a port is required",
        ),
        (
            r#"{"version": 1, "listen": "203.0.113.0/24", "port": 0, "allow": []}"#,
            "no address of this host's interfaces is inside 203.0.113.0/24",
        ),
    ];
    for (input, want) in cases {
        let out = spawn_binary(input).wait_with_output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{input}");
        let stdout = String::from_utf8(out.stdout).unwrap();
        let stderr = String::from_utf8(out.stderr).unwrap();
        assert_eq!(stdout.lines().count(), 1, "{stdout}");
        let v: serde_json::Value = serde_json::from_str(&stdout).unwrap();
        let msg = v["error"].as_str().unwrap();
        assert!(msg.contains(want), "{msg}");
        assert_eq!(stderr, format!("vault-gateway: {msg}\n"));
        assert!(!stdout.contains("hunter2") && !stderr.contains("hunter2"));
    }
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct ReadyLine {
    ready: Ready,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Ready {
    addr: SocketAddr,
    ca_pem: String,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct SummaryLine {
    summary: vault_gateway::Summary,
}

#[test]
fn binary_ready_then_summary_on_sigterm() {
    let ca = test_ca();
    let cfg = serde_json::json!({
        "version": 1, "listen": "127.0.0.0/8", "port": 0,
        "allow": ["api.test:443"],
        "inject": [{"host": "api.test", "header": "Authorization", "value": "Bearer hunter2-secret"}],
        "mask": ["hunter2-secret"],
        "roots_pem": ca.pem,
    });
    let mut child = spawn_binary(&cfg.to_string());
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    let ready: ReadyLine = serde_json::from_str(&line).unwrap();
    assert!(ready.ready.addr.ip().is_loopback());
    assert_ne!(ready.ready.addr.port(), 0);
    let certs: Vec<_> = CertificateDer::pem_slice_iter(ready.ready.ca_pem.as_bytes())
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(certs.len(), 1);

    // One refused CONNECT, so the summary has something in it.
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (status, _) = rt.block_on(connect(ready.ready.addr, "evil.test:443"));
    assert_eq!(status, StatusCode::FORBIDDEN);

    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(child.id()).unwrap()),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stdout, &mut rest).unwrap();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(0));
    assert_eq!(rest.lines().count(), 1, "{rest}");
    let summary: SummaryLine = serde_json::from_str(&rest).unwrap();
    assert_eq!(summary.summary.refused.get("evil.test:443"), Some(&1));
    assert!(summary.summary.contacted.is_empty());
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    assert_eq!(
        stderr,
        "vault-gateway: refused CONNECT evil.test:443: not in the allowlist\n"
    );
    assert!(!line.contains("hunter2") && !rest.contains("hunter2"));
}

/// Wait up to `limit` for `child` to exit; kill it and fail if it does not.
fn wait_at_most(child: &mut std::process::Child, limit: std::time::Duration) -> i32 {
    let start = std::time::Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status.code().unwrap_or(-1);
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the gateway still ran after {limit:?}");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

#[test]
fn binary_stops_at_the_end_of_its_lifetime() {
    let ca = test_ca();
    let cfg = serde_json::json!({
        "version": 1, "listen": "127.0.0.0/8", "port": 0,
        "allow": ["api.test:443"],
        "inject": [{"host": "api.test", "header": "Authorization", "value": "Bearer hunter2-secret"}],
        "roots_pem": ca.pem,
        "lifetime_s": 1,
    });
    let mut child = spawn_binary(&cfg.to_string());
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    let ready_at = std::time::Instant::now();
    let ready: ReadyLine = serde_json::from_str(&line).unwrap();

    // Two runtime workers and the main thread, nothing else yet.
    let tasks = std::fs::read_dir(format!("/proc/{}/task", child.id()))
        .unwrap()
        .count();
    assert!(tasks <= 3, "{tasks} threads");

    let rt = tokio::runtime::Runtime::new().unwrap();
    let (status, _) = rt.block_on(connect(ready.ready.addr, "evil.test:443"));
    assert_eq!(status, StatusCode::FORBIDDEN);

    // No signal: the lifetime alone ends it.
    let code = wait_at_most(&mut child, std::time::Duration::from_secs(10));
    let waited = ready_at.elapsed();
    assert_eq!(code, 0);
    assert!(
        waited >= std::time::Duration::from_millis(900),
        "{waited:?}"
    );
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stdout, &mut rest).unwrap();
    assert_eq!(rest.lines().count(), 1, "{rest}");
    let summary: SummaryLine = serde_json::from_str(&rest).unwrap();
    assert_eq!(summary.summary.refused.get("evil.test:443"), Some(&1));
    assert!(summary.summary.contacted.is_empty());
    assert!(!line.contains("hunter2") && !rest.contains("hunter2"));
    // Afterwards nothing listens there any more.
    assert!(std::net::TcpStream::connect(ready.ready.addr).is_err());
}

#[test]
fn binary_with_a_huge_lifetime_serves_until_a_signal() {
    let cfg = serde_json::json!({
        "version": 1, "listen": "127.0.0.0/8", "port": 0,
        "allow": ["api.test:443"],
        "lifetime_s": u64::MAX,
    });
    let mut child = spawn_binary(&cfg.to_string());
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    let ready: ReadyLine = serde_json::from_str(&line).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert!(child.try_wait().unwrap().is_none(), "exited early");
    assert!(std::net::TcpStream::connect(ready.ready.addr).is_ok());
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(child.id()).unwrap()),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    assert_eq!(
        wait_at_most(&mut child, std::time::Duration::from_secs(10)),
        0
    );
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stdout, &mut rest).unwrap();
    let _: SummaryLine = serde_json::from_str(&rest).unwrap();
}
