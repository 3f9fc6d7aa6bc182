//! The revocation feed for relying parties over HTTP (docs/revocation.md): the SSF poll
//! endpoint (RFC 8936) and the SPIFFE bundle endpoint on an HTTPS listener that
//! presents the server's SVID, and push delivery (RFC 8935) to configured receivers.
use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Json;
use axum::Router;
use axum::extract::{ConnectInfo, Path, State};
use axum::http::HeaderMap;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;

use crate::follower::{self, Refusal};
use crate::revocation::PushReceiver;
use crate::state::Shared;
use crate::{ServerError, io_err};

/// Most SETs in one poll answer.
const MAX_EVENTS: usize = 1000;
/// Most receiver queues kept; idle ones are dropped first.
const MAX_RECEIVERS: usize = 1000;
/// A receiver queue unused this long is forgotten.
const RECEIVER_IDLE: Duration = Duration::from_secs(3600);
/// Largest poll request body.
const MAX_BODY: usize = 256 * 1024;

/// Per-receiver poll state: the SETs it acknowledged.
#[derive(Debug, Default)]
pub(crate) struct PollQueues(std::sync::Mutex<HashMap<String, Queue>>);

#[derive(Debug)]
struct Queue {
    acked: HashSet<String>,
    used: Instant,
}

/// An RFC 8936 poll request.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct PollRequest {
    #[serde(default)]
    max_events: Option<usize>,
    #[serde(default)]
    return_immediately: bool,
    #[serde(default)]
    ack: Vec<String>,
    #[serde(default)]
    set_errs: HashMap<String, Value>,
}

fn error(status: StatusCode, err: &str, description: impl Into<String>) -> Response {
    (status, Json(json!({ "err": err, "description": description.into() }))).into_response()
}

/// The challenge sent in `WWW-Authenticate` with every 401.
const CHALLENGE: &str = "Bearer realm=\"ferrid-ssf\"";

/// The verified client certificate of a poll connection, read once per connection.
#[derive(Debug, Clone)]
pub(crate) struct PollPeer(Option<Arc<Result<ferrid_tls::PeerLeaf, String>>>);

impl axum::extract::connect_info::Connected<axum::serve::IncomingStream<'_, TlsListener>> for PollPeer {
    fn connect_info(stream: axum::serve::IncomingStream<'_, TlsListener>) -> Self {
        Self(ferrid_tls::peer_leaf(stream.io().get_ref().1))
    }
}

/// The RFC 8936 error answer for a refused poll: 401 (with `WWW-Authenticate`) and
/// `authentication_failed`, or 403 and `access_denied` (RFC 8935 §2.3 codes).
fn refusal(r: Refusal) -> Response {
    match r {
        Refusal::Unauthenticated(why) => {
            let mut resp = error(StatusCode::UNAUTHORIZED, "authentication_failed", why);
            resp.headers_mut().insert(header::WWW_AUTHENTICATE, header::HeaderValue::from_static(CHALLENGE));
            resp
        }
        Refusal::Forbidden(why) => error(StatusCode::FORBIDDEN, "access_denied", why),
    }
}

/// Authenticates the poll and picks its queue (`name` `None`: the caller's own).
fn poll_queue(
    shared: &Shared,
    peer: &PollPeer,
    headers: &HeaderMap,
    name: Option<&str>,
) -> Result<String, Refusal> {
    let auth = headers.get(header::AUTHORIZATION).map(header::HeaderValue::as_bytes);
    let caller = follower::authenticate(shared, peer.0.as_deref(), auth)?;
    follower::queue_for(&shared.cfg.raw.revocation.poll, name, &caller)
}

async fn poll_named(
    State(shared): State<Arc<Shared>>,
    ConnectInfo(peer): ConnectInfo<PollPeer>,
    Path(receiver): Path<String>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    if !follower::valid_receiver(&receiver) {
        return error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "receiver names are 1 to 64 of a-z 0-9 - _ .",
        );
    }
    match poll_queue(&shared, &peer, &headers, Some(&receiver)) {
        Ok(q) => poll(shared, q, body).await,
        Err(r) => refusal(r),
    }
}

async fn poll_own(
    State(shared): State<Arc<Shared>>,
    ConnectInfo(peer): ConnectInfo<PollPeer>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    match poll_queue(&shared, &peer, &headers, None) {
        Ok(q) => poll(shared, q, body).await,
        Err(r) => refusal(r),
    }
}

/// One poll of an authenticated caller's queue `receiver`.
async fn poll(shared: Arc<Shared>, receiver: String, body: axum::body::Bytes) -> Response {
    let req: PollRequest = if body.is_empty() {
        PollRequest::default()
    } else {
        match serde_json::from_slice(&body) {
            Ok(r) => r,
            Err(e) => return error(StatusCode::BAD_REQUEST, "invalid_request", format!("request body: {e}")),
        }
    };
    for (jti, err) in &req.set_errs {
        tracing::warn!(receiver, jti, error = %err, "a poll receiver reports a SET error");
    }
    let max = req.max_events.unwrap_or(MAX_EVENTS).min(MAX_EVENTS);
    let mut changes = shared.revocations.subscribe();
    let deadline = tokio::time::Instant::now() + shared.cfg.raw.revocation.poll_wait;
    let mut acks = Some(req.ack);
    loop {
        changes.borrow_and_update();
        let feed = shared.revocations.feed();
        let (sets, more) = {
            let mut queues = shared.polls.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            if !queues.contains_key(&receiver) && queues.len() >= MAX_RECEIVERS {
                queues.retain(|_, q| q.used.elapsed() < RECEIVER_IDLE);
                if queues.len() >= MAX_RECEIVERS {
                    return error(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "too_many_receivers",
                        "too many poll receivers",
                    );
                }
            }
            let q = queues
                .entry(receiver.clone())
                .or_insert_with(|| Queue { acked: HashSet::new(), used: Instant::now() });
            q.used = Instant::now();
            if let Some(acks) = acks.take() {
                q.acked.extend(acks);
            }
            let live: HashSet<&str> = feed.records.iter().map(|r| r.id.as_str()).collect();
            q.acked.retain(|a| live.contains(a.as_str()));
            let pending: Vec<_> = feed.records.iter().filter(|r| !q.acked.contains(&r.id)).collect();
            let more = pending.len() > max;
            let sets: serde_json::Map<String, Value> = pending
                .into_iter()
                .take(max)
                .map(|r| (r.id.clone(), Value::String(r.token.clone())))
                .collect();
            (sets, more)
        };
        if !sets.is_empty() || req.return_immediately || max == 0 {
            return Json(json!({ "sets": sets, "moreAvailable": more })).into_response();
        }
        tokio::select! {
            r = changes.changed() => if r.is_err() { return error(StatusCode::SERVICE_UNAVAILABLE, "unavailable", "server shutting down") },
            () = tokio::time::sleep_until(deadline) => {
                return Json(json!({ "sets": {}, "moreAvailable": false })).into_response();
            }
        }
    }
}

async fn bundle(State(shared): State<Arc<Shared>>) -> Response {
    ([(header::CONTENT_TYPE, "application/json")], shared.bundle().to_spiffe_json()).into_response()
}

/// Accepted TLS connections, for `axum::serve`.
struct TlsListener {
    rx: mpsc::Receiver<(tokio_rustls::server::TlsStream<tokio::net::TcpStream>, SocketAddr)>,
    addr: SocketAddr,
}

impl axum::serve::Listener for TlsListener {
    type Io = tokio_rustls::server::TlsStream<tokio::net::TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.rx.recv().await {
            Some(c) => c,
            // The acceptor ended (shutdown): never yield again.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.addr)
    }
}

/// Serves the poll and bundle endpoints on `addr` until `stop`.
pub(crate) async fn serve(
    addr: SocketAddr,
    shared: Arc<Shared>,
    stop: watch::Receiver<bool>,
    tasks: &mut JoinSet<()>,
) -> Result<SocketAddr, ServerError> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(io_err(format!("binding revocation.address {addr}")))?;
    let bound = listener.local_addr().map_err(io_err("reading the revocation address"))?;
    let (tx, rx) = mpsc::channel(64);
    let tls_of = shared.clone();
    tasks.spawn(crate::accept_tls(
        listener,
        move || {
            let mut cfg = (*tls_of.tls.load_full()).clone();
            cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
            Arc::new(cfg)
        },
        tx,
        |tls, remote| (tls, remote),
        stop.clone(),
    ));
    let app = Router::new()
        .route("/ssf/poll", post(poll_own))
        .route("/ssf/poll/{receiver}", post(poll_named))
        .route("/bundle", get(bundle))
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY))
        .with_state(shared);
    let mut stop = stop;
    tasks.spawn(async move {
        let r = axum::serve(
            TlsListener { rx, addr: bound },
            app.into_make_service_with_connect_info::<PollPeer>(),
        )
        .with_graceful_shutdown(async move {
            let _ = stop.changed().await;
        })
        .await;
        if let Err(e) = r {
            tracing::error!(error = %e, "revocation listener stopped");
        }
    });
    Ok(bound)
}

/// Pushes every SET, in order, to one receiver (RFC 8935), with a heartbeat when idle.
pub(crate) async fn push(shared: Arc<Shared>, receiver: PushReceiver, mut stop: watch::Receiver<bool>) {
    let client = match reqwest::Client::builder().timeout(Duration::from_secs(10)).build() {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(url = %receiver.url, error = %e, "cannot build the push client");
            return;
        }
    };
    let authorization = match &receiver.authorization_file {
        Some(p) => match std::fs::read_to_string(p) {
            Ok(s) => Some(s.trim().to_owned()),
            Err(e) => {
                tracing::error!(url = %receiver.url, file = %p.display(), error = %e, "cannot read the push authorization file");
                return;
            }
        },
        None => None,
    };
    let heartbeat = shared.cfg.raw.revocation.heartbeat_interval;
    let mut changes = shared.revocations.subscribe();
    let mut sent = 0u64;
    let mut last_contact = Instant::now() - heartbeat;
    let mut backoff = Duration::from_millis(500);
    loop {
        changes.borrow_and_update();
        let feed = shared.revocations.feed();
        let pending: Vec<_> = feed.after(sent).to_vec();
        let mut failed = false;
        for r in &pending {
            match deliver(&client, &receiver.url, authorization.as_deref(), &r.token).await {
                Delivery::Accepted => {}
                Delivery::Refused(why) => {
                    tracing::warn!(url = %receiver.url, set = %r.id, reason = %why, "push receiver refused a SET");
                }
                Delivery::Failed(why) => {
                    shared.metrics.push_failures.with_label_values(&[&receiver.url]).inc();
                    tracing::warn!(url = %receiver.url, error = %why, retry_in = ?backoff, "SET push failed");
                    failed = true;
                    break;
                }
            }
            sent = r.seq;
            last_contact = Instant::now();
        }
        if !failed && last_contact.elapsed() >= heartbeat {
            let beat = crate::revocation::heartbeat_set(&shared, feed.last_seq());
            match beat {
                Ok(t) => match deliver(&client, &receiver.url, authorization.as_deref(), &t).await {
                    Delivery::Accepted | Delivery::Refused(_) => last_contact = Instant::now(),
                    Delivery::Failed(why) => {
                        shared.metrics.push_failures.with_label_values(&[&receiver.url]).inc();
                        tracing::debug!(url = %receiver.url, error = %why, "heartbeat push failed");
                        failed = true;
                    }
                },
                Err(e) => tracing::warn!(error = %e.message(), "cannot sign a heartbeat SET"),
            }
        }
        let wait = if failed {
            let w = backoff;
            backoff = (backoff * 2).min(Duration::from_secs(60));
            w
        } else {
            backoff = Duration::from_millis(500);
            heartbeat.saturating_sub(last_contact.elapsed()).max(Duration::from_millis(10))
        };
        tokio::select! {
            r = changes.changed(), if !failed => if r.is_err() { return },
            () = tokio::time::sleep(wait) => {}
            _ = stop.changed() => return,
        }
    }
}

enum Delivery {
    Accepted,
    Refused(String),
    Failed(String),
}

async fn deliver(client: &reqwest::Client, url: &str, authorization: Option<&str>, set: &str) -> Delivery {
    let mut req = client
        .post(url)
        .header(header::CONTENT_TYPE.as_str(), "application/secevent+jwt")
        .header(header::ACCEPT.as_str(), "application/json")
        .body(set.to_owned());
    if let Some(a) = authorization {
        req = req.header(header::AUTHORIZATION.as_str(), a);
    }
    match req.send().await {
        Ok(r) if r.status().as_u16() == 202 || r.status().as_u16() == 200 => Delivery::Accepted,
        Ok(r) if r.status().as_u16() == 400 => {
            let body = r.text().await.unwrap_or_default();
            Delivery::Refused(body.chars().take(512).collect())
        }
        Ok(r) => Delivery::Failed(format!("HTTP {}", r.status())),
        Err(e) => Delivery::Failed(e.to_string()),
    }
}
