//! A raw RFC 8936 poll client for the end-to-end tests: one HTTP/1.1 request over TLS
//! to the server's revocation listener (the server authenticated by its SPIFFE ID),
//! with whatever credential the test wants to present, so every answer (401, 403,
//! handshake refused) can be looked at as it is.
use std::path::Path;
use std::sync::Arc;

use serde_json::Value;

use super::{Server, TD};

/// What a poller presents.
#[derive(Clone, Default)]
pub struct Creds {
    /// A client certificate chain (leaf first, DER) and its PKCS#8 key.
    pub x509: Option<(Vec<Vec<u8>>, Vec<u8>)>,
    /// An `Authorization` header value, sent as is.
    pub authorization: Option<String>,
}

impl Creds {
    /// No credential at all.
    pub fn none() -> Self {
        Self::default()
    }

    /// An X.509-SVID for `spiffe_id` minted with `ferrid x509 mint` into `dir`.
    pub fn x509(server: &Server, spiffe_id: &str, dir: &Path) -> Self {
        server.ok(&[
            "x509",
            "mint",
            "--spiffe-id",
            spiffe_id,
            "--ttl",
            "1h",
            "--out-dir",
            dir.to_str().unwrap(),
        ]);
        Self::x509_files(dir)
    }

    /// The X.509-SVID in `dir`/svid.pem and `dir`/key.pem.
    pub fn x509_files(dir: &Path) -> Self {
        let chain = pem::parse_many(std::fs::read(dir.join("svid.pem")).unwrap())
            .unwrap()
            .into_iter()
            .map(pem::Pem::into_contents)
            .collect();
        let key = pem::parse(std::fs::read(dir.join("key.pem")).unwrap()).unwrap().into_contents();
        Self { x509: Some((chain, key)), authorization: None }
    }

    /// `Authorization: Bearer <token>`.
    pub fn bearer(token: &str) -> Self {
        Self { x509: None, authorization: Some(format!("Bearer {token}")) }
    }

    /// A JWT-SVID for `spiffe_id` with `audience`, minted with `ferrid jwt mint`; the
    /// token and its `jti`.
    pub fn jwt(server: &Server, spiffe_id: &str, audience: &str, ttl: &str) -> (String, String) {
        let v = server.json(&["jwt", "mint", "--spiffe-id", spiffe_id, "--audience", audience, "--ttl", ttl]);
        (v["token"].as_str().unwrap().to_owned(), v["jti"].as_str().unwrap().to_owned())
    }
}

/// The server's SPIFFE ID, the audience of a bearer JWT-SVID on the feed.
pub fn server_id() -> String {
    format!("spiffe://{TD}/ferrid/server")
}

/// One answer of the poll endpoint.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub www_authenticate: Option<String>,
    pub body: Value,
}

/// POSTs `body` to `path` (`/ssf/poll` or `/ssf/poll/<name>`) on `addr`. `Err` when
/// the connection fails or is refused during the handshake (no HTTP answer).
pub async fn request(
    addr: &str,
    bundle_pem: &str,
    who: &Creds,
    path: &str,
    body: &Value,
) -> Result<Answer, String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let roots: Vec<Vec<u8>> =
        pem::parse_many(bundle_pem).unwrap().into_iter().map(pem::Pem::into_contents).collect();
    let server_id = spiffe::SpiffeId::new(server_id()).unwrap();
    let client = who.x509.as_ref().map(|(c, k)| (c.as_slice(), k.as_slice()));
    let mut cfg = ferrid_server::tls::client_config(&roots, server_id, client).unwrap();
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    let tcp = tokio::net::TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    let name = rustls::pki_types::ServerName::try_from("ferrid-server").unwrap();
    let mut tls = tokio_rustls::TlsConnector::from(Arc::new(cfg))
        .connect(name, tcp)
        .await
        .map_err(|e| e.to_string())?;
    let body = body.to_string();
    let auth = who.authorization.as_ref().map(|a| format!("Authorization: {a}\r\n")).unwrap_or_default();
    let req = format!(
        "POST {path} HTTP/1.1\r\nHost: ferrid\r\nContent-Type: application/json\r\n{auth}\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    // With TLS 1.3 the server judges the client certificate after the client's
    // handshake is done: a refusal shows up here as an alert.
    tls.write_all(req.as_bytes()).await.map_err(|e| e.to_string())?;
    let mut resp = Vec::new();
    tls.read_to_end(&mut resp).await.map_err(|e| e.to_string())?;
    let text = String::from_utf8(resp).map_err(|e| e.to_string())?;
    let (head, json) = text.split_once("\r\n\r\n").ok_or_else(|| format!("no HTTP answer: {text:?}"))?;
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("no status line: {head:?}"))?;
    let www_authenticate = head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.eq_ignore_ascii_case("www-authenticate").then(|| v.trim().to_owned())
    });
    let body = serde_json::from_str(json).unwrap_or(Value::Null);
    Ok(Answer { status, www_authenticate, body })
}

/// A poll that must succeed (200); its JSON.
pub async fn poll_ok(addr: &str, bundle_pem: &str, who: &Creds, path: &str, body: &Value) -> Value {
    let a = request(addr, bundle_pem, who, path, body).await.unwrap_or_else(|e| panic!("poll {path}: {e}"));
    assert_eq!(a.status, 200, "poll {path}: {a:?}");
    a.body
}

/// A gRPC channel to the node API on `addr` presenting `who`'s X.509-SVID (if any).
pub async fn node_channel(addr: &str, bundle_pem: &str, who: &Creds) -> tonic::transport::Channel {
    let roots: Vec<Vec<u8>> =
        pem::parse_many(bundle_pem).unwrap().into_iter().map(pem::Pem::into_contents).collect();
    let server_id = spiffe::SpiffeId::new(server_id()).unwrap();
    let client = who.x509.as_ref().map(|(c, k)| (c.as_slice(), k.as_slice()));
    let cfg = ferrid_server::tls::client_config(&roots, server_id, client).unwrap();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(cfg));
    let addr = addr.to_owned();
    tonic::transport::Endpoint::from_static("http://ferrid-server")
        .connect_with_connector(tower::service_fn(move |_: tonic::transport::Uri| {
            let (connector, addr) = (connector.clone(), addr.clone());
            async move {
                let tcp = tokio::net::TcpStream::connect(addr).await?;
                let name = rustls::pki_types::ServerName::try_from("ferrid-server").unwrap();
                let tls = connector.connect(name, tcp).await?;
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(tls))
            }
        }))
        .await
        .unwrap()
}

/// Opens `Revocations/Watch` as `who` and waits for the first message: `Ok` with it, or
/// the status the server refused the stream with.
pub async fn watch_first(
    addr: &str,
    bundle_pem: &str,
    who: &Creds,
) -> Result<ferrid_proto::revocation::v1::WatchResponse, tonic::Status> {
    use ferrid_proto::revocation::v1 as pb;
    let channel = node_channel(addr, bundle_pem, who).await;
    let mut client = pb::revocations_client::RevocationsClient::new(channel);
    let mut req = tonic::Request::new(pb::WatchRequest { after_sequence: 0 });
    if let Some(a) = &who.authorization {
        req.metadata_mut().insert("authorization", a.parse().unwrap());
    }
    let mut stream = client.watch(req).await?.into_inner();
    let first = tokio::time::timeout(std::time::Duration::from_secs(20), stream.message())
        .await
        .map_err(|_| tonic::Status::deadline_exceeded("no watch message in 20 s"))??;
    first.ok_or_else(|| tonic::Status::aborted("the watch ended without a message"))
}
