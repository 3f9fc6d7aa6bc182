//! Fetching the kubelet's pod list, and the short cache in front of it.
//!
//! The client is hyper's own HTTP/1.1 client connection over a `tokio-rustls` stream:
//! one GET per fetch, on a fresh connection, to one configured host. Why not reqwest or
//! hyper-util's pooled client: a fetch happens at most once per cache period, so a
//! connection pool buys nothing; reqwest follows `HTTPS_PROXY`/`NO_PROXY` from the
//! environment by default, and a proxy must never see the agent's service-account
//! token on its way to the node's own kubelet; and both are new dependencies, while
//! hyper, hyper-util and tokio-rustls are already in the agent through tonic and
//! `ferrid-tls`. TLS uses the workspace's rustls (aws-lc-rs provider).
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use ferrid_attest::AttestError;
use http_body_util::BodyExt;
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

use crate::pods::PodList;

/// How the agent reaches the kubelet.
#[derive(Clone)]
pub(crate) enum Transport {
    /// HTTPS on the secure port with a bearer token.
    Secure {
        tls: tokio_rustls::TlsConnector,
        server_name: ServerName<'static>,
        token_path: std::path::PathBuf,
    },
    /// Plain HTTP on the read-only port, no token.
    ReadOnly,
}

/// The kubelet's `/pods` endpoint.
#[derive(Clone)]
pub(crate) struct Kubelet {
    host: String,
    port: u16,
    /// `<host>:<port>` (IPv6 in brackets), the `Host` header.
    authority: String,
    /// `https://<host>:<port>/pods`, for messages.
    pub(crate) url: String,
    transport: Transport,
    timeout: Duration,
    max_bytes: usize,
}

impl std::fmt::Debug for Kubelet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Kubelet").field("url", &self.url).finish_non_exhaustive()
    }
}

impl Kubelet {
    pub(crate) fn new(
        host: String,
        port: u16,
        transport: Transport,
        timeout: Duration,
        max_bytes: usize,
    ) -> Self {
        let scheme = match transport {
            Transport::Secure { .. } => "https",
            Transport::ReadOnly => "http",
        };
        let authority =
            if host.contains(':') { format!("[{host}]:{port}") } else { format!("{host}:{port}") };
        Self {
            url: format!("{scheme}://{authority}/pods"),
            authority,
            host,
            port,
            transport,
            timeout,
            max_bytes,
        }
    }

    fn unavailable(&self, what: impl std::fmt::Display) -> AttestError {
        AttestError::Unavailable(format!("kubelet {}: {what}", self.url))
    }

    /// `GET /pods`: the body, at most `max_bytes`, within the timeout.
    pub(crate) async fn fetch(&self) -> Result<Bytes, AttestError> {
        match tokio::time::timeout(self.timeout, self.fetch_inner()).await {
            Ok(r) => r,
            Err(_) => Err(self.unavailable(format_args!("no complete answer within {:?}", self.timeout))),
        }
    }

    async fn fetch_inner(&self) -> Result<Bytes, AttestError> {
        let tcp = TcpStream::connect((self.host.as_str(), self.port))
            .await
            .map_err(|e| self.unavailable(format_args!("cannot connect: {e}")))?;
        let _ = tcp.set_nodelay(true);
        match &self.transport {
            Transport::ReadOnly => self.get(tcp, None).await,
            Transport::Secure { tls, server_name, token_path } => {
                // Re-read at every request: the kubelet rotates projected tokens.
                let token = std::fs::read_to_string(token_path).map_err(|e| {
                    self.unavailable(format_args!(
                        "cannot read the service-account token {}: {e}",
                        token_path.display()
                    ))
                })?;
                let mut auth =
                    http::HeaderValue::try_from(format!("Bearer {}", token.trim())).map_err(|_| {
                        self.unavailable(format_args!(
                            "the service-account token {} holds characters not allowed in a header",
                            token_path.display()
                        ))
                    })?;
                auth.set_sensitive(true);
                let stream = tls
                    .connect(server_name.clone(), tcp)
                    .await
                    .map_err(|e| self.unavailable(format_args!("TLS handshake failed: {e}")))?;
                self.get(stream, Some((auth, token_path))).await
            }
        }
    }

    async fn get<IO>(
        &self,
        io: IO,
        auth: Option<(http::HeaderValue, &std::path::Path)>,
    ) -> Result<Bytes, AttestError>
    where
        IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
            .await
            .map_err(|e| self.unavailable(format_args!("HTTP handshake failed: {e}")))?;
        let mut req = http::Request::get("/pods")
            .header(http::header::HOST, self.authority.as_str())
            .header(http::header::ACCEPT, "application/json")
            .header(http::header::CONNECTION, "close")
            .header(http::header::USER_AGENT, concat!("ferrid-agent/", env!("CARGO_PKG_VERSION")));
        let token_path = auth.as_ref().map(|(_, p)| *p);
        if let Some((value, _)) = auth {
            req = req.header(http::header::AUTHORIZATION, value);
        }
        let req = req
            .body(http_body_util::Empty::<Bytes>::new())
            .map_err(|e| AttestError::Internal(format!("building the kubelet request: {e}")))?;
        let max = self.max_bytes;
        let exchange = async move {
            let resp = sender
                .send_request(req)
                .await
                .map_err(|e| self.unavailable(format_args!("request failed: {e}")))?;
            let status = resp.status();
            if !status.is_success() {
                return Err(self.status_error(status, token_path));
            }
            let too_large =
                || self.unavailable(format_args!("the pod list is larger than the {max}-byte limit"));
            let declared = resp
                .headers()
                .get(http::header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u64>().ok());
            if declared.is_some_and(|n| n > max as u64) {
                return Err(too_large());
            }
            match http_body_util::Limited::new(resp.into_body(), max).collect().await {
                Ok(body) => Ok(body.to_bytes()),
                Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(too_large()),
                Err(e) => Err(self.unavailable(format_args!("reading the answer failed: {e}"))),
            }
        };
        // The connection task runs beside the exchange and ends when the exchange drops
        // its sender (or the kubelet closes the connection).
        let (result, _conn) = tokio::join!(exchange, conn);
        result
    }

    fn status_error(&self, status: http::StatusCode, token_path: Option<&std::path::Path>) -> AttestError {
        let hint = match (status, token_path) {
            (http::StatusCode::UNAUTHORIZED, Some(p)) => {
                format!("; the kubelet did not accept the service-account token from {}", p.display())
            }
            (http::StatusCode::FORBIDDEN, _) => {
                "; the agent's service account may not read the kubelet's pods (it needs get on nodes/proxy)"
                    .to_owned()
            }
            _ => String::new(),
        };
        self.unavailable(format_args!("answered {status}{hint}"))
    }
}

/// One fetch's outcome, shared by every lookup that used it.
#[derive(Debug, Clone)]
pub(crate) struct Snapshot {
    /// Increases with every fetch.
    pub(crate) generation: u64,
    fetched_at: Instant,
    pub(crate) pods: Result<Arc<PodList>, AttestError>,
}

/// The pod list, fetched at most once per `ttl` however many lookups ask, with one
/// fetch in flight at a time: lookups that arrive during a fetch wait for it and share
/// its outcome. A failure is shared the same way, so a burst of callers against a
/// kubelet that is down costs one attempt, not one each.
#[derive(Debug)]
pub(crate) struct PodCache {
    kubelet: Kubelet,
    ttl: Duration,
    /// Generation of the last completed fetch (readable without the lock).
    completed: AtomicU64,
    last: tokio::sync::Mutex<Option<Snapshot>>,
}

impl PodCache {
    pub(crate) fn new(kubelet: Kubelet, ttl: Duration) -> Self {
        Self { kubelet, ttl, completed: AtomicU64::new(0), last: tokio::sync::Mutex::new(None) }
    }

    pub(crate) fn url(&self) -> &str {
        &self.kubelet.url
    }

    /// A pod list no older than the cache period, or one fetched while this call
    /// waited; with `newer_than`, only a list from a later fetch than that generation.
    pub(crate) async fn get(&self, newer_than: Option<u64>) -> Snapshot {
        let seen = self.completed.load(Ordering::Acquire);
        let mut last = self.last.lock().await;
        if let Some(s) = last.as_ref() {
            let shared = s.generation > seen;
            let fresh = s.fetched_at.elapsed() < self.ttl;
            let newer = newer_than.is_none_or(|g| s.generation > g);
            if newer && (shared || fresh) {
                return s.clone();
            }
        }
        let generation = last.as_ref().map_or(1, |s| s.generation + 1);
        let pods = match self.kubelet.fetch().await {
            Ok(body) => PodList::parse(&body).map(Arc::new).map_err(|e| {
                AttestError::Malformed(format!(
                    "kubelet {}: the pod list is not valid PodList JSON: {e}",
                    self.url()
                ))
            }),
            Err(e) => Err(e),
        };
        if let Err(e) = &pods {
            tracing::warn!(error = %e, "fetching the kubelet's pod list failed");
        }
        let snap = Snapshot { generation, fetched_at: Instant::now(), pods };
        *last = Some(snap.clone());
        self.completed.store(generation, Ordering::Release);
        snap
    }
}
