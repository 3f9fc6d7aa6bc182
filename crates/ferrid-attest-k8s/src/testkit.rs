//! Test helpers (feature `testkit`): a kubelet-shaped server, a realistic `PodList`,
//! and synthetic `/proc` trees.
//!
//! No real kubelet can run where Ferrid's tests run, so [`FakeKubelet`] follows the
//! kubelet's published `/pods` API: `GET /pods` answers a `v1.PodList` JSON document,
//! streamed with chunked transfer encoding as the kubelet's Go server does for large
//! bodies; on the secure port it demands `Authorization: Bearer <token>` and answers
//! `401 Unauthorized` otherwise, over TLS with a serving certificate for `127.0.0.1` and
//! `localhost` issued by a test CA; the read-only port is plain HTTP without
//! authentication.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Frame;
use hyper_util::rt::TokioIo;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

/// A realistic kubelet `/pods` answer for node `worker-1`: five pods covering the three
/// container runtimes' ID prefixes, init and ephemeral containers, owners of several
/// kinds, a static (mirror) pod with a hash UID and a pending pod whose container has no
/// ID yet. The `fixture` constants name its containers.
pub const POD_LIST_JSON: &str = include_str!("../testdata/podlist.json");

/// Names and IDs in [`POD_LIST_JSON`].
pub mod fixture {
    /// The `web` container of pod `shop/web-7d4b9c8f6d-x2k9p` (containerd).
    pub const WEB: &str = "4b5e57f6eb2f42b9039b3d1e13929295f231749c510cbe341cd68036d9af97e2";
    /// The `log-shipper` sidecar of the same pod.
    pub const LOG_SHIPPER: &str = "e7562220aee1d6e38c5633d241fdb4c1716fb104b37b1ab2abd0b7a2254ac0b2";
    /// The init container `migrate` of the same pod (terminated).
    pub const MIGRATE: &str = "3bc801a33ea83df414e1aeb962a52412835be99db28668ec25de73fdd4733804";
    /// The ephemeral container `debugger-7xk2p` of the same pod.
    pub const DEBUGGER: &str = "4c44d7c28ec0f6ca3e2624c6af1d3be324576d01ef6f6c2dc0af7e61664b8c2c";
    /// The UID of pod `shop/web-7d4b9c8f6d-x2k9p`.
    pub const WEB_POD_UID: &str = "8a5f3c2e-4b1d-4e6f-9a7b-1c2d3e4f5a6b";
    /// The `web` container's previous instance: only in `lastState`, so never matched.
    pub const WEB_PREVIOUS: &str = "6d3df7d1e4e4be1024d32e8a81bef555f82f338969574619d9c50396afcd7181";
    /// The `postgres` container of `shop/db-0` (CRI-O).
    pub const POSTGRES: &str = "a942b37ccfaf5a813b1432caa209a43b9d144e47ad0de1549c289c253e556cd5";
    /// The UID of pod `shop/db-0`.
    pub const DB_POD_UID: &str = "c1d2e3f4-a5b6-4c7d-8e9f-0a1b2c3d4e5f";
    /// The `node-exporter` container of `monitoring/node-exporter-9xq7w` (Docker).
    pub const NODE_EXPORTER: &str = "2303824a4e3dc61fe3195d1a6e978029d4774876cc9aba9d2c60ef85eb96a845";
    /// The UID of pod `monitoring/node-exporter-9xq7w`.
    pub const NODE_EXPORTER_POD_UID: &str = "0f1e2d3c-4b5a-4968-8776-a5b4c3d2e1f0";
    /// The `kube-apiserver` container of the static pod `kube-system/kube-apiserver-worker-1`.
    pub const APISERVER: &str = "3ddd18007da0e2a1e7da24b251a2d691f53a918f9e2dedf116c0bd39de1149fe";
    /// The hash UID of that static pod.
    pub const APISERVER_POD_UID: &str = "5c3f9d2b8e1a4f7c6b0d9e8a7f6c5b4a";
    /// A container ID no pod has.
    pub const UNKNOWN: &str = "a75140826639ee8f9ae1b187989a845fd8277c8cbdc7fee7511f03e7bad69bf1";
}

/// The `/proc/<pid>/cgroup` line of a container of a pod as containerd with the systemd
/// driver on cgroup v2 writes it (Burstable QoS).
pub fn containerd_cgroup(pod_uid: &str, container_id: &str) -> String {
    let u = pod_uid.replace('-', "_");
    format!(
        "0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{u}.slice/cri-containerd-{container_id}.scope\n"
    )
}

/// Writes a synthetic `<root>/<pid>/{stat,status,cgroup}` for a process owned by `uid`
/// that started at `start_time` (clock ticks).
pub fn write_process(root: &Path, pid: i32, uid: u32, start_time: u64, cgroup: &str) {
    let dir = root.join(pid.to_string());
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("stat"),
        format!("{pid} (workload) S 1 {pid} {pid} 0 -1 4194560 0 0 0 0 0 0 0 0 20 0 1 0 {start_time} 0 0\n"),
    )
    .unwrap();
    std::fs::write(dir.join("status"), format!("Name:\tworkload\nUid:\t{uid}\t{uid}\t{uid}\t{uid}\n"))
        .unwrap();
    std::fs::write(dir.join("cgroup"), cgroup).unwrap();
}

/// Mirrors a real process into a synthetic tree: copies `/proc/<pid>/stat` and
/// `status` (what the pid-reuse guard reads) and writes `cgroup`.
pub fn mirror_process(root: &Path, pid: u32, cgroup: &str) {
    let dir = root.join(pid.to_string());
    std::fs::create_dir_all(&dir).unwrap();
    for f in ["stat", "status"] {
        std::fs::copy(format!("/proc/{pid}/{f}"), dir.join(f)).unwrap();
    }
    std::fs::write(dir.join("cgroup"), cgroup).unwrap();
}

/// A test CA and a serving certificate it issued.
pub struct TestPki {
    /// The CA certificate, PEM.
    pub ca_pem: String,
    /// The serving certificate, DER.
    pub cert: CertificateDer<'static>,
    /// Its PKCS#8 key, DER.
    pub key: Vec<u8>,
}

impl TestPki {
    /// Generates a new CA and a serving certificate for `127.0.0.1` and `localhost`.
    pub fn generate() -> Self {
        Self::generate_for(&["127.0.0.1", "localhost"])
    }

    /// Generates a new CA and a serving certificate for `names` (DNS names or IP
    /// addresses).
    pub fn generate_for(names: &[&str]) -> Self {
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca.key_usages = vec![rcgen::KeyUsagePurpose::KeyCertSign, rcgen::KeyUsagePurpose::CrlSign];
        // A distinct name per CA, as two real clusters' CAs have.
        static SERIAL: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        let n = SERIAL.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        ca.distinguished_name.push(rcgen::DnType::CommonName, format!("test kubelet CA {n}"));
        let ca_cert = ca.self_signed(&ca_key).unwrap();
        let issuer = rcgen::Issuer::new(ca, ca_key);
        let key = rcgen::KeyPair::generate().unwrap();
        let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
        let mut leaf = rcgen::CertificateParams::new(names).unwrap();
        leaf.distinguished_name.push(rcgen::DnType::CommonName, "worker-1@1717318447");
        let cert = leaf.signed_by(&key, &issuer).unwrap();
        Self { ca_pem: ca_cert.pem(), cert: cert.der().clone(), key: key.serialize_der() }
    }
}

type Hook = Arc<dyn Fn(u64) + Send + Sync>;

struct State {
    token: Option<String>,
    body: Bytes,
    later: Option<(u64, Bytes)>,
    requests: u64,
    on_request: Option<Hook>,
}

/// A kubelet-shaped `/pods` server on loopback (see the module documentation).
pub struct FakeKubelet {
    addr: SocketAddr,
    ca_pem: Option<String>,
    state: Arc<Mutex<State>>,
    held: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FakeKubelet {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FakeKubelet {
    /// The secure port: HTTPS with a certificate from a new test CA, requiring `token`.
    /// Serves [`POD_LIST_JSON`] until told otherwise.
    pub async fn https(token: &str) -> Self {
        Self::https_for(token, &["127.0.0.1", "localhost"]).await
    }

    /// [`FakeKubelet::https`] with a serving certificate for `names` only.
    pub async fn https_for(token: &str, names: &[&str]) -> Self {
        let pki = TestPki::generate_for(names);
        let cfg = rustls::ServerConfig::builder_with_provider(ferrid_tls::provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![pki.cert.clone()], PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(pki.key)))
            .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(cfg));
        Self::start(Some(acceptor), Some(token.to_owned()), Some(pki.ca_pem)).await
    }

    /// The read-only port: plain HTTP, no authentication.
    pub async fn http() -> Self {
        Self::start(None, None, None).await
    }

    async fn start(
        tls: Option<tokio_rustls::TlsAcceptor>,
        token: Option<String>,
        ca_pem: Option<String>,
    ) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(Mutex::new(State {
            token,
            body: Bytes::from_static(POD_LIST_JSON.as_bytes()),
            later: None,
            requests: 0,
            on_request: None,
        }));
        let (held, gate) = tokio::sync::watch::channel(false);
        let st = state.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else { continue };
                let (st, gate, tls) = (st.clone(), gate.clone(), tls.clone());
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req| handle(st.clone(), gate.clone(), req));
                    let http = hyper::server::conn::http1::Builder::new();
                    let _ = match tls {
                        Some(acceptor) => {
                            let Ok(stream) = acceptor.accept(tcp).await else { return };
                            http.serve_connection(TokioIo::new(stream), svc).await
                        }
                        None => http.serve_connection(TokioIo::new(tcp), svc).await,
                    };
                });
            }
        });
        Self { addr, ca_pem, state, held, task }
    }

    /// The port it listens on (on 127.0.0.1).
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// The PEM certificate of the CA that issued its serving certificate (HTTPS only).
    pub fn ca_pem(&self) -> &str {
        self.ca_pem.as_deref().unwrap_or_default()
    }

    /// `GET /pods` requests received so far, whatever their answer.
    pub fn requests(&self) -> u64 {
        self.state.lock().unwrap().requests
    }

    /// Serves `body` from now on.
    pub fn set_body(&self, body: impl Into<Bytes>) {
        let mut s = self.state.lock().unwrap();
        s.body = body.into();
        s.later = None;
    }

    /// Serves the current body to requests up to number `after`, then `body`.
    pub fn set_body_after(&self, after: u64, body: impl Into<Bytes>) {
        self.state.lock().unwrap().later = Some((after, body.into()));
    }

    /// Requires `token` from now on.
    pub fn set_token(&self, token: &str) {
        self.state.lock().unwrap().token = Some(token.to_owned());
    }

    /// Calls `f` with each request's number (from 1) as it arrives, before answering.
    pub fn on_request(&self, f: impl Fn(u64) + Send + Sync + 'static) {
        self.state.lock().unwrap().on_request = Some(Arc::new(f));
    }

    /// Holds every answer until [`FakeKubelet::release`].
    pub fn hold(&self) {
        self.held.send_replace(true);
    }

    /// Lets held and later answers go.
    pub fn release(&self) {
        self.held.send_replace(false);
    }
}

type Body = BoxBody<Bytes, Infallible>;

fn text(status: u16, msg: &'static str) -> hyper::Response<Body> {
    hyper::Response::builder()
        .status(status)
        .body(Full::new(Bytes::from_static(msg.as_bytes())).boxed())
        .unwrap()
}

async fn handle(
    state: Arc<Mutex<State>>,
    mut gate: tokio::sync::watch::Receiver<bool>,
    req: hyper::Request<hyper::body::Incoming>,
) -> Result<hyper::Response<Body>, Infallible> {
    if req.method() != hyper::Method::GET || req.uri().path() != "/pods" {
        return Ok(text(404, "404 page not found\n"));
    }
    let (n, hook) = {
        let mut s = state.lock().unwrap();
        s.requests += 1;
        (s.requests, s.on_request.clone())
    };
    if let Some(f) = hook {
        f(n);
    }
    let _ = gate.wait_for(|held| !held).await;
    let (token, body) = {
        let s = state.lock().unwrap();
        let body = match &s.later {
            Some((after, later)) if n > *after => later.clone(),
            _ => s.body.clone(),
        };
        (s.token.clone(), body)
    };
    if let Some(token) = token {
        let sent = req.headers().get(hyper::header::AUTHORIZATION).and_then(|v| v.to_str().ok());
        if sent != Some(format!("Bearer {token}").as_str()) {
            return Ok(text(401, "Unauthorized"));
        }
    }
    // Chunked, as the kubelet streams large lists.
    let chunks: Vec<Result<Frame<Bytes>, Infallible>> = (0..body.len())
        .step_by(64 * 1024)
        .map(|i| Ok(Frame::data(body.slice(i..(i + 64 * 1024).min(body.len())))))
        .collect();
    let stream = StreamBody::new(futures::stream::iter(chunks));
    Ok(hyper::Response::builder()
        .status(200)
        .header(hyper::header::CONTENT_TYPE, "application/json")
        .body(BodyExt::boxed(stream))
        .unwrap())
}
