//! Feeds that keep a [`RevocationSet`] (and bundles) current (docs/revocation.md):
//!
//! - [`push_router`]: an RFC 8935 push receiver (an axum `Router`): `POST`
//!   `application/secevent+jwt`, verified, applied, `202`; or `400` with
//!   `{"err": …, "description": …}` and an RFC 8935 §2.4 error code.
//! - [`PollClient`]: an RFC 8936 poll client over HTTPS that trusts the trust bundle
//!   and accepts only the server's SPIFFE ID (`spiffe://<td>/ferrid/server`),
//!   acknowledging what it applied and reporting what it refused in `setErrs`.
//! - [`watch`]: the gRPC `ferrid.revocation.v1.Revocations/Watch` client, reconnecting
//!   with backoff and honouring `reset`.
//!
//! The server serves its feed only to callers with an SVID of its trust domain, so
//! the poll and watch clients take a [`FeedAuth`]: an X.509-SVID for mutual TLS or a
//! JWT-SVID bearer token, from the Workload API or from files.
//! - [`fetch_bundle`] / [`BundleEndpoint`]: the SPIFFE bundle endpoint (`https_spiffe`
//!   profile) kept fresh at the bundle's `spiffe_refresh_hint`.
//!
//! Every SET is verified with the trust domain's current JWT keys; `iss` must be the
//! server's SPIFFE ID and `aud` the trust domain's. Every message, heartbeat and
//! successful (even empty) poll marks the set fresh.
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use ferrid_types::{Clock, SpiffeId, TrustDomain};
use serde_json::{Map, Value, json};

use crate::authorize;
use crate::bundle::{BundleError, BundleSet, BundleSource, TrustBundle};
pub use crate::feed_auth::FeedAuth;
use crate::revocation::RevocationSet;
use crate::set::{MAX_SET_BYTES, SET_CONTENT_TYPE, SetError, VerifiedSet, verify_set};
use crate::tls::{SpiffeServerVerifier, VerifierConfig};

/// Why a feed operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FeedError {
    /// No bundle for the trust domain.
    #[error(transparent)]
    Bundle(#[from] BundleError),
    /// A SET was refused.
    #[error(transparent)]
    Set(#[from] SetError),
    /// Transport (HTTP, TLS, gRPC) failure.
    #[error("transport: {0}")]
    Transport(String),
    /// The server answered something unexpected.
    #[error("protocol: {0}")]
    Protocol(String),
    /// This client's own credential could not be read or fetched.
    #[error("credential: {0}")]
    Credential(String),
    /// The server did not accept the credential: none, expired, revoked, forged, or
    /// for another audience (HTTP 401, gRPC `Unauthenticated`). The server's reason.
    #[error("unauthenticated: {0}")]
    Unauthenticated(String),
    /// The server accepted the credential but this identity may not do what was
    /// asked, e.g. poll a receiver configured for another SPIFFE ID (HTTP 403, gRPC
    /// `PermissionDenied`). The server's reason.
    #[error("forbidden: {0}")]
    Forbidden(String),
}

impl FeedError {
    fn grpc(s: tonic::Status) -> Self {
        match s.code() {
            tonic::Code::Unauthenticated => Self::Unauthenticated(s.message().to_owned()),
            tonic::Code::PermissionDenied => Self::Forbidden(s.message().to_owned()),
            _ => Self::Transport(s.to_string()),
        }
    }
}

/// What every feed needs: the trust domain, its bundle, the set to keep current, a clock.
#[derive(Clone)]
pub struct Feed {
    /// The trust domain whose server publishes the feed.
    pub trust_domain: TrustDomain,
    /// The current bundle (JWT keys verify SETs; X.509 authorities the server's TLS).
    pub bundles: Arc<dyn BundleSource>,
    /// The set the feed keeps current.
    pub revocations: Arc<RevocationSet>,
    /// The clock.
    pub clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for Feed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Feed").field("trust_domain", &self.trust_domain).finish()
    }
}

impl Feed {
    /// The server's SPIFFE ID, the issuer of every SET.
    pub fn server_id(&self) -> SpiffeId {
        ferrid_types::server_id(&self.trust_domain)
    }

    /// Verifies one SET (not applied).
    pub fn verify(&self, token: &str) -> Result<VerifiedSet, FeedError> {
        let bundle = self
            .bundles
            .bundle(&self.trust_domain)
            .ok_or_else(|| BundleError::Unknown(self.trust_domain.to_string()))?;
        let aud = format!("spiffe://{}", self.trust_domain);
        Ok(verify_set(token, &bundle.jwt, &self.server_id().to_string(), &aud, self.clock.unix())?)
    }

    /// Verifies and applies one SET; `expires_at` as the feed says (gRPC), else `None`.
    pub fn apply(&self, token: &str, expires_at: Option<i64>) -> Result<VerifiedSet, FeedError> {
        let v = self.verify(token)?;
        let now = self.clock.unix();
        self.revocations.apply(&v.event, expires_at, now);
        self.revocations.forget_expired(now);
        Ok(v)
    }

    /// A rustls client config trusting the bundle and accepting only the server's
    /// SPIFFE ID, presenting `auth`'s X.509-SVID if it is one. It does not consult the
    /// revocation set: a stale feed must be able to reach its server to become fresh
    /// again.
    pub fn server_tls(&self, auth: &FeedAuth) -> rustls::ClientConfig {
        let verifier = SpiffeServerVerifier::new(VerifierConfig {
            trust_domain: self.trust_domain.clone(),
            bundles: self.bundles.clone(),
            authorizer: Arc::new(authorize::exact(self.server_id())),
            revocations: None,
            clock: self.clock.clone(),
        });
        let builder = rustls::ClientConfig::builder_with_provider(crate::tls::provider())
            .with_safe_default_protocol_versions()
            .expect("default versions")
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(verifier));
        match auth.client_cert() {
            Some(resolver) => builder.with_client_cert_resolver(resolver),
            None => builder.with_no_client_auth(),
        }
    }
}

// ---------------------------------------------------------------------------------
// RFC 8935 push.

/// The RFC 8935 §2.4 error code for a refused SET.
pub fn push_error_code(e: &FeedError) -> &'static str {
    match e {
        FeedError::Set(SetError::WrongIssuer { .. }) => "invalid_issuer",
        FeedError::Set(SetError::WrongAudience { .. }) => "invalid_audience",
        FeedError::Set(
            SetError::UnknownKey(_)
            | SetError::BadSignature
            | SetError::MissingKid
            | SetError::AlgorithmNotAllowed(_)
            | SetError::AlgorithmKeyMismatch { .. },
        ) => "invalid_key",
        _ => "invalid_request",
    }
}

fn push_refusal(err: &str, description: &str) -> Response {
    (
        StatusCode::BAD_REQUEST,
        [(header::CONTENT_TYPE, "application/json")],
        json!({ "err": err, "description": description }).to_string(),
    )
        .into_response()
}

/// An RFC 8935 receiver at `/` (nest it where the server is configured to push):
/// `POST` with `Content-Type: application/secevent+jwt`, at most [`MAX_SET_BYTES`].
pub fn push_router(feed: Feed) -> Router {
    let feed = Arc::new(feed);
    Router::new()
        .route(
            "/",
            axum::routing::post(move |headers: HeaderMap, body: Bytes| {
                let feed = feed.clone();
                async move { receive(&feed, &headers, &body) }
            }),
        )
        .layer(axum::extract::DefaultBodyLimit::max(MAX_SET_BYTES + 1024))
}

fn receive(feed: &Feed, headers: &HeaderMap, body: &[u8]) -> Response {
    let ct = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or_default();
    if !ct.split(';').next().unwrap_or_default().trim().eq_ignore_ascii_case(SET_CONTENT_TYPE) {
        return push_refusal("invalid_request", "Content-Type must be application/secevent+jwt");
    }
    let Ok(token) = std::str::from_utf8(body) else {
        return push_refusal("invalid_request", "the SET is not UTF-8");
    };
    match feed.apply(token.trim(), None) {
        Ok(_) => StatusCode::ACCEPTED.into_response(),
        Err(e) => push_refusal(push_error_code(&e), &e.to_string()),
    }
}

// ---------------------------------------------------------------------------------
// RFC 8936 poll.

/// An RFC 8936 poll client for one receiver queue: by default the queue of the
/// identity `auth` proves (`/ssf/poll`), or a named receiver configured for it
/// ([`PollClient::receiver`]).
#[derive(Debug, Clone)]
pub struct PollClient {
    feed: Feed,
    http: reqwest::Client,
    auth: FeedAuth,
    base_url: String,
    url: String,
    /// `maxEvents` per poll (default 100).
    pub max_events: u32,
}

/// What one poll did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct PollOutcome {
    /// SET `jti`s applied (acknowledged on the next poll).
    pub applied: Vec<String>,
    /// SET `jti`s refused, with the error code and description (sent in `setErrs`).
    pub refused: Vec<(String, String, String)>,
    /// Whether the server has more.
    pub more_available: bool,
}

impl PollClient {
    /// A client of the caller's own queue, `https://<address>/ssf/poll`; `base_url` is
    /// `https://<revocation.address>`, `auth` the credential presented on every poll.
    pub fn new(feed: Feed, base_url: &str, auth: FeedAuth) -> Result<Self, FeedError> {
        let http = reqwest::Client::builder()
            .tls_backend_preconfigured(feed.server_tls(&auth))
            .timeout(Duration::from_secs(120))
            .build()
            .map_err(|e| FeedError::Transport(e.to_string()))?;
        let base_url = base_url.trim_end_matches('/').to_owned();
        Ok(Self { feed, http, auth, url: format!("{base_url}/ssf/poll"), base_url, max_events: 100 })
    }

    /// Polls the named receiver `name` (`/ssf/poll/<name>`) instead: one the server
    /// configures for this client's SPIFFE ID (`[[revocation.poll]]`), else every poll
    /// is refused with [`FeedError::Forbidden`].
    pub fn receiver(mut self, name: &str) -> Self {
        self.url = format!("{}/ssf/poll/{name}", self.base_url);
        self
    }

    /// One poll: acknowledges `prev`'s applied SETs and reports its refusals, then
    /// applies what comes back.
    pub async fn poll_once(
        &self,
        prev: &PollOutcome,
        return_immediately: bool,
    ) -> Result<PollOutcome, FeedError> {
        let mut errs = Map::new();
        for (jti, err, description) in &prev.refused {
            errs.insert(jti.clone(), json!({ "err": err, "description": description }));
        }
        let body = json!({
            "maxEvents": self.max_events,
            "returnImmediately": return_immediately,
            "ack": prev.applied,
            "setErrs": errs,
        });
        let mut req = self
            .http
            .post(&self.url)
            .header(header::CONTENT_TYPE, "application/json")
            .header(header::ACCEPT, "application/json");
        if let Some(value) = self.auth.authorization(&self.feed.server_id().to_string()).await? {
            req = req.header(header::AUTHORIZATION, value);
        }
        let res = req.body(body.to_string()).send().await.map_err(|e| FeedError::Transport(e.to_string()))?;
        let status = res.status();
        let bytes = res.bytes().await.map_err(|e| FeedError::Transport(e.to_string()))?;
        if !status.is_success() {
            return Err(poll_refusal(status, &bytes));
        }
        if bytes.len() > 16 << 20 {
            return Err(FeedError::Protocol("poll answer over 16 MiB".into()));
        }
        let doc: Value = serde_json::from_slice(&bytes).map_err(|e| FeedError::Protocol(e.to_string()))?;
        let sets = doc
            .get("sets")
            .and_then(Value::as_object)
            .ok_or_else(|| FeedError::Protocol("no sets".into()))?;
        let mut out = PollOutcome {
            more_available: doc.get("moreAvailable").and_then(Value::as_bool).unwrap_or(false),
            ..Default::default()
        };
        let mut ordered: Vec<(&String, &Value)> = sets.iter().collect();
        ordered.sort_by_key(|(_, t)| {
            t.as_str().and_then(|t| self.feed.verify(t).ok()).map(|v| v.iat).unwrap_or(i64::MIN)
        });
        for (jti, token) in ordered {
            match token
                .as_str()
                .ok_or_else(|| FeedError::Protocol("SET is not a string".into()))
                .and_then(|t| self.feed.apply(t, None))
            {
                Ok(_) => out.applied.push(jti.clone()),
                Err(e) => out.refused.push((jti.clone(), push_error_code(&e).to_owned(), e.to_string())),
            }
        }
        self.feed.revocations.heard(self.feed.clock.unix());
        Ok(out)
    }

    /// Polls forever: long polls while there is nothing, immediate ones while the
    /// server has more, backoff (1 s doubling to 30 s) after failures.
    pub async fn run(self) {
        let mut prev = PollOutcome::default();
        let mut backoff = Duration::from_secs(1);
        loop {
            match self.poll_once(&prev, prev.more_available).await {
                Ok(out) => {
                    prev = out;
                    backoff = Duration::from_secs(1);
                }
                Err(e) => {
                    tracing::warn!(error = %e, "revocation poll failed");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(30));
                }
            }
        }
    }
}

/// The error for a poll answered `status`: 401 and 403 carry the server's RFC 8936
/// error (`{"err", "description"}`).
fn poll_refusal(status: StatusCode, body: &[u8]) -> FeedError {
    let doc: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let field = |k: &str| doc.get(k).and_then(Value::as_str).unwrap_or_default().to_owned();
    let why = match (field("err"), field("description")) {
        (e, d) if e.is_empty() && d.is_empty() => format!("poll answered {status}"),
        (e, d) => format!("{e}: {d}"),
    };
    match status {
        StatusCode::UNAUTHORIZED => FeedError::Unauthenticated(why),
        StatusCode::FORBIDDEN => FeedError::Forbidden(why),
        _ => FeedError::Protocol(format!("poll answered {status}: {why}")),
    }
}

// ---------------------------------------------------------------------------------
// gRPC watch.

pub mod watch {
    //! The `ferrid.revocation.v1.Revocations/Watch` client.
    use super::*;
    use ferrid_proto::revocation::v1 as pb;

    /// Applies one watch message: a `reset` replaces everything held; every
    /// revocation is verified and applied (a refused one is logged and skipped, the
    /// rest still apply); the sequence and freshness advance. Returns how many
    /// revocations were refused.
    pub fn apply_message(feed: &Feed, msg: &pb::WatchResponse) -> usize {
        let now = feed.clock.unix();
        let mut refused = 0;
        let mut verified = Vec::new();
        for r in &msg.revocations {
            match feed.verify(&r.set) {
                Ok(v) => verified.push((v.event, r.expires_at)),
                Err(e) => {
                    refused += 1;
                    tracing::warn!(sequence = r.sequence, error = %e, "refused a revocation SET");
                }
            }
        }
        let events = verified.iter().map(|(e, exp)| (e, Some(*exp).filter(|x| *x > 0)));
        if msg.reset {
            feed.revocations.replace_all(events, now);
        } else {
            for (e, exp) in events {
                feed.revocations.apply(e, exp, now);
            }
        }
        feed.revocations.forget_expired(now);
        feed.revocations.set_sequence(msg.sequence);
        feed.revocations.heard(now);
        refused
    }

    /// Watches `endpoint` (the server's node API, `https://host:port`) forever as the
    /// identity `auth` proves, resuming after the last sequence applied and
    /// reconnecting with backoff (1 s doubling to 30 s).
    pub async fn run(feed: Feed, endpoint: String, auth: FeedAuth) {
        let mut backoff = Duration::from_secs(1);
        loop {
            match once(&feed, &endpoint, &auth).await {
                Ok(()) => backoff = Duration::from_secs(1),
                Err(e) => tracing::warn!(error = %e, "revocation watch failed"),
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(30));
        }
    }

    /// One watch stream until it ends or fails.
    pub async fn once(feed: &Feed, endpoint: &str, auth: &FeedAuth) -> Result<(), FeedError> {
        let tls = feed.server_tls(auth);
        let connector = tokio_rustls::TlsConnector::from(Arc::new({
            let mut t = tls;
            t.alpn_protocols = vec![b"h2".to_vec()];
            t
        }));
        let uri: http::Uri =
            endpoint.parse().map_err(|e: http::uri::InvalidUri| FeedError::Transport(e.to_string()))?;
        let channel = tonic::transport::Endpoint::from(uri)
            .connect_with_connector(tower::service_fn(move |uri: http::Uri| {
                let connector = connector.clone();
                async move {
                    let host = uri.host().unwrap_or("localhost").to_owned();
                    let port = uri.port_u16().unwrap_or(443);
                    let tcp = tokio::net::TcpStream::connect((host.as_str(), port)).await?;
                    let name = rustls_pki_types::ServerName::try_from(host)
                        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
                    let tls = connector.connect(name, tcp).await?;
                    Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(tls))
                }
            }))
            .await
            .map_err(|e| FeedError::Transport(e.to_string()))?;
        let mut client = pb::revocations_client::RevocationsClient::new(channel);
        let mut req = tonic::Request::new(pb::WatchRequest { after_sequence: feed.revocations.sequence() });
        if let Some(value) = auth.authorization(&feed.server_id().to_string()).await? {
            let value = value
                .parse()
                .map_err(|_| FeedError::Credential("the JWT-SVID is not a valid header value".into()))?;
            req.metadata_mut().insert("authorization", value);
        }
        let mut stream = client.watch(req).await.map_err(FeedError::grpc)?.into_inner();
        while let Some(msg) = stream.message().await.map_err(FeedError::grpc)? {
            apply_message(feed, &msg);
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------
// SPIFFE bundle endpoint.

/// Fetches `url` (the server's `GET /bundle`, `https_spiffe` profile): the endpoint
/// must present an SVID with `endpoint_id`, validated with the bundle `bundles`
/// currently holds for `td` (the previous bundle).
pub async fn fetch_bundle(
    td: &TrustDomain,
    url: &str,
    endpoint_id: &SpiffeId,
    bundles: Arc<dyn BundleSource>,
    clock: Arc<dyn Clock>,
) -> Result<TrustBundle, FeedError> {
    let verifier = SpiffeServerVerifier::new(VerifierConfig {
        trust_domain: td.clone(),
        bundles,
        authorizer: Arc::new(authorize::exact(endpoint_id.clone())),
        revocations: None,
        clock,
    });
    let tls = rustls::ClientConfig::builder_with_provider(crate::tls::provider())
        .with_safe_default_protocol_versions()
        .expect("default versions")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    let http = reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        .timeout(Duration::from_secs(30))
        .build()
        .map_err(|e| FeedError::Transport(e.to_string()))?;
    let res = http.get(url).send().await.map_err(|e| FeedError::Transport(e.to_string()))?;
    if !res.status().is_success() {
        return Err(FeedError::Protocol(format!("bundle endpoint answered {}", res.status())));
    }
    let bytes = res.bytes().await.map_err(|e| FeedError::Transport(e.to_string()))?;
    Ok(TrustBundle::from_spiffe_json(td.clone(), &bytes)?)
}

/// A bundle endpoint kept fresh in a [`BundleSet`].
#[derive(Debug, Clone)]
pub struct BundleEndpoint {
    /// The trust domain.
    pub trust_domain: TrustDomain,
    /// `https://…/bundle`.
    pub url: String,
    /// The SPIFFE ID the endpoint presents (Ferrid: `spiffe://<td>/ferrid/server`).
    pub endpoint_id: SpiffeId,
    /// Refresh interval when the bundle gives no `spiffe_refresh_hint` (default 5 min).
    pub default_refresh: Duration,
}

impl BundleEndpoint {
    /// Refreshes `set` forever: at the bundle's refresh hint (or `default_refresh`),
    /// retrying failures after 5 s doubling to the refresh interval. `set` must hold a
    /// bundle for the trust domain already (the bootstrap bundle).
    pub async fn run(self, set: Arc<BundleSet>, clock: Arc<dyn Clock>) {
        let mut retry = Duration::from_secs(5);
        loop {
            match fetch_bundle(&self.trust_domain, &self.url, &self.endpoint_id, set.clone(), clock.clone())
                .await
            {
                Ok(b) => {
                    let wait = b.refresh_hint.unwrap_or(self.default_refresh).max(Duration::from_secs(1));
                    set.set(b);
                    retry = Duration::from_secs(5);
                    tokio::time::sleep(wait).await;
                }
                Err(e) => {
                    tracing::warn!(error = %e, url = %self.url, "bundle refresh failed");
                    tokio::time::sleep(retry).await;
                    retry = (retry * 2).min(self.default_refresh);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    //! The feeds against loopback stand-ins for the server. The real server's end-to-end
    //! run (its poll, push and watch endpoints) is covered by the lead's e2e tests.
    use super::*;
    use crate::keys::test_keys::*;
    use crate::set::{Revocation, SetEvent};
    use crate::testing::*;
    use crate::tls::SvidResolver;
    use axum::body::Body;
    use ferrid_types::ManualClock;
    use std::sync::Mutex;
    use tower::ServiceExt;

    const ISS: &str = "spiffe://example.org/ferrid/server";
    const AUD: &str = "spiffe://example.org";

    struct Fixture {
        ca: TestCa,
        key: TestKey,
        feed: Feed,
    }

    fn fixture() -> Fixture {
        let ca = TestCa::new("example.org");
        let key = TestKey::es256("k1");
        let bundles = Arc::new(BundleSet::of([TrustBundle::new(ca.bundle(), set_of(&[&key]))]));
        let feed = Feed {
            trust_domain: TrustDomain::new("example.org").unwrap(),
            bundles,
            revocations: Arc::new(RevocationSet::new(Duration::from_secs(60))),
            clock: Arc::new(ManualClock::at_unix(NOW)),
        };
        Fixture { ca, key, feed }
    }

    fn set_token(k: &TestKey, e: &SetEvent, jti: &str) -> String {
        k.sign(Some("secevent+jwt"), &e.claims(ISS, AUD, jti, NOW))
    }

    fn jwt_revocation(jti: &str) -> SetEvent {
        SetEvent::new(Revocation::Jwt { jti: jti.into(), iss: ISS.into() }, Some(NOW))
    }

    #[tokio::test]
    async fn push_receiver_accepts_verified_sets_and_refuses_others() {
        let f = fixture();
        let app = push_router(f.feed.clone());
        let post = |ct: &'static str, body: String| {
            let app = app.clone();
            async move {
                let req =
                    axum::http::Request::post("/").header("content-type", ct).body(Body::from(body)).unwrap();
                let res = app.oneshot(req).await.unwrap();
                let status = res.status();
                let b = axum::body::to_bytes(res.into_body(), 1 << 16).await.unwrap();
                (status, serde_json::from_slice::<Value>(&b).unwrap_or(Value::Null))
            }
        };
        assert!(f.feed.revocations.check_fresh(NOW).is_err(), "never heard: stale");
        let (s, _) = post("application/secevent+jwt", set_token(&f.key, &jwt_revocation("j1"), "s1")).await;
        assert_eq!(s, StatusCode::ACCEPTED);
        assert_eq!(f.feed.revocations.len(), 1);
        assert!(f.feed.revocations.check_fresh(NOW).is_ok());
        let (s, _) =
            post("application/secevent+jwt", set_token(&f.key, &SetEvent::heartbeat("2"), "s2")).await;
        assert_eq!(s, StatusCode::ACCEPTED);

        let (s, body) = post("application/json", set_token(&f.key, &jwt_revocation("j2"), "s3")).await;
        assert_eq!((s, body["err"].as_str()), (StatusCode::BAD_REQUEST, Some("invalid_request")));
        let stranger = TestKey::es256("k1");
        let (s, body) =
            post("application/secevent+jwt", set_token(&stranger, &jwt_revocation("j2"), "s4")).await;
        assert_eq!((s, body["err"].as_str()), (StatusCode::BAD_REQUEST, Some("invalid_key")));
        assert!(body["description"].as_str().is_some());
        let other_iss = f.key.sign(
            Some("secevent+jwt"),
            &jwt_revocation("j2").claims("spiffe://example.org/x", AUD, "s5", NOW),
        );
        let (_, body) = post("application/secevent+jwt", other_iss).await;
        assert_eq!(body["err"], "invalid_issuer");
        let other_aud = f
            .key
            .sign(Some("secevent+jwt"), &jwt_revocation("j2").claims(ISS, "spiffe://other.org", "s6", NOW));
        let (_, body) = post("application/secevent+jwt", other_aud).await;
        assert_eq!(body["err"], "invalid_audience");
        assert_eq!(f.feed.revocations.len(), 1, "nothing refused was applied");
    }

    /// Serves `app` over HTTPS on loopback, presenting an SVID for `id` from `ca`.
    async fn https(ca: &TestCa, id: &str, app: Router) -> String {
        https_with(ca, id, app, None).await
    }

    /// [`https`], requiring a client X.509-SVID of `ca`'s trust domain when
    /// `client_td` is set.
    async fn https_with(ca: &TestCa, id: &str, app: Router, client_td: Option<&Feed>) -> String {
        let leaf = ca.leaf(id, LeafOpts { window: Some((NOW - 60, NOW + 3600)), ..Default::default() });
        let resolver = Arc::new(SvidResolver::new(leaf.chain, leaf.key_der).unwrap());
        let builder = rustls::ServerConfig::builder_with_provider(crate::tls::provider())
            .with_safe_default_protocol_versions()
            .unwrap();
        let builder = match client_td {
            None => builder.with_no_client_auth(),
            Some(feed) => builder.with_client_cert_verifier(Arc::new(crate::tls::SpiffeClientVerifier::new(
                VerifierConfig {
                    trust_domain: feed.trust_domain.clone(),
                    bundles: feed.bundles.clone(),
                    authorizer: Arc::new(authorize::any()),
                    revocations: None,
                    clock: feed.clock.clone(),
                },
            ))),
        };
        let cfg = builder.with_cert_resolver(resolver);
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(cfg));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else { return };
                let acceptor = acceptor.clone();
                let app = app.clone();
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else { return };
                    let svc = hyper_util::service::TowerToHyperService::new(app);
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(tls), svc)
                        .await;
                });
            }
        });
        format!("https://127.0.0.1:{}", addr.port())
    }

    fn pem(label: &str, der: &[u8]) -> String {
        use base64::Engine as _;
        let b64 = base64::engine::general_purpose::STANDARD.encode(der);
        let lines: Vec<&str> = b64.as_bytes().chunks(64).map(|c| std::str::from_utf8(c).unwrap()).collect();
        format!("-----BEGIN {label}-----\n{}\n-----END {label}-----\n", lines.join("\n"))
    }

    /// Writes `leaf` as `svid.pem` / `key.pem` in `dir`.
    fn write_svid(
        dir: &std::path::Path,
        leaf: &crate::testing::Leaf,
    ) -> (std::path::PathBuf, std::path::PathBuf) {
        let chain: String = leaf.chain.iter().map(|c| pem("CERTIFICATE", c)).collect();
        let (cert, key) = (dir.join("svid.pem"), dir.join("key.pem"));
        std::fs::write(&cert, chain).unwrap();
        std::fs::write(&key, pem("PRIVATE KEY", &leaf.key_der)).unwrap();
        (cert, key)
    }

    #[tokio::test]
    async fn poll_client_applies_acks_and_reports_errors() {
        let f = fixture();
        let good = set_token(&f.key, &jwt_revocation("j1"), "s1");
        let forged = set_token(&TestKey::es256("k1"), &jwt_revocation("j2"), "s2");
        // Each poll's Authorization header and body.
        type Seen = Vec<(Option<String>, Value)>;
        let seen: Arc<Mutex<Seen>> = Arc::default();
        let seen2 = seen.clone();
        let app = Router::new().route(
            "/ssf/poll/{receiver}",
            axum::routing::post(
                move |axum::extract::Path(r): axum::extract::Path<String>,
                      headers: HeaderMap,
                      body: Bytes| {
                    let seen = seen2.clone();
                    let (good, forged) = (good.clone(), forged.clone());
                    async move {
                        assert_eq!(r, "rp-1");
                        let auth = headers.get("authorization").map(|v| v.to_str().unwrap().to_owned());
                        let req: Value = serde_json::from_slice(&body).unwrap();
                        let first = seen.lock().unwrap().is_empty();
                        seen.lock().unwrap().push((auth, req));
                        let sets = if first { json!({"s1": good, "s2": forged}) } else { json!({}) };
                        axum::Json(json!({"sets": sets, "moreAvailable": false}))
                    }
                },
            ),
        );
        let dir = tempfile::tempdir().unwrap();
        let token = dir.path().join("jwt");
        std::fs::write(&token, "header.payload.sig\n").unwrap();
        let auth = FeedAuth::jwt_file(&token);
        let base = https(&f.ca, "spiffe://example.org/ferrid/server", app.clone()).await;
        let client = PollClient::new(f.feed.clone(), &base, auth.clone()).unwrap().receiver("rp-1");
        let out = client.poll_once(&PollOutcome::default(), true).await.unwrap();
        assert_eq!(out.applied, ["s1"]);
        assert_eq!(out.refused.len(), 1);
        assert_eq!(out.refused[0].1, "invalid_key");
        assert!(f.feed.revocations.check_fresh(NOW).is_ok());
        assert_eq!(f.feed.revocations.len(), 1);
        // The file is read for every poll: a refreshed token is sent next time.
        std::fs::write(&token, "header.payload.sig2").unwrap();
        let out2 = client.poll_once(&out, true).await.unwrap();
        assert!(out2.applied.is_empty());
        let seen = seen.lock().unwrap().clone();
        assert_eq!(seen[0].0.as_deref(), Some("Bearer header.payload.sig"));
        assert_eq!(seen[1].0.as_deref(), Some("Bearer header.payload.sig2"));
        let second = &seen[1].1;
        assert_eq!(second["ack"], json!(["s1"]));
        assert_eq!(second["setErrs"]["s2"]["err"], "invalid_key");
        assert_eq!(second["returnImmediately"], true);

        // A server presenting another SPIFFE ID is not the feed.
        let impostor = https(&f.ca, "spiffe://example.org/not-the-server", app).await;
        let client = PollClient::new(f.feed.clone(), &impostor, auth.clone()).unwrap().receiver("rp-1");
        assert!(matches!(
            client.poll_once(&PollOutcome::default(), true).await,
            Err(FeedError::Transport(_))
        ));

        // A token file that cannot be read fails before anything is sent.
        let client = PollClient::new(f.feed.clone(), &base, FeedAuth::jwt_file(dir.path().join("missing")))
            .unwrap()
            .receiver("rp-1");
        let e = client.poll_once(&PollOutcome::default(), true).await.unwrap_err();
        assert!(matches!(&e, FeedError::Credential(m) if m.contains("missing")), "{e}");
    }

    #[tokio::test]
    async fn poll_client_presents_its_x509_svid_and_reports_refusals() {
        let f = fixture();
        let sets = json!({"s1": set_token(&f.key, &jwt_revocation("j1"), "s1")});
        let app = Router::new()
            .route(
                "/ssf/poll",
                axum::routing::post(move || {
                    let sets = sets.clone();
                    async move { axum::Json(json!({"sets": sets})) }
                }),
            )
            .route(
                "/ssf/poll/{receiver}",
                axum::routing::post(|axum::extract::Path(r): axum::extract::Path<String>| async move {
                    let (status, err) = if r == "stale" {
                        (StatusCode::UNAUTHORIZED, "authentication_failed")
                    } else {
                        (StatusCode::FORBIDDEN, "access_denied")
                    };
                    (status, axum::Json(json!({"err": err, "description": format!("not for {r}")})))
                }),
            );
        // The server requires a client certificate of the trust domain.
        let base = https_with(&f.ca, "spiffe://example.org/ferrid/server", app, Some(&f.feed)).await;
        let dir = tempfile::tempdir().unwrap();
        let leaf = f.ca.leaf(
            "spiffe://example.org/rp",
            LeafOpts { window: Some((NOW - 60, NOW + 3600)), ..Default::default() },
        );
        let (cert, key) = write_svid(dir.path(), &leaf);
        let auth = FeedAuth::x509_files(&cert, &key).unwrap();
        let client = PollClient::new(f.feed.clone(), &base, auth.clone()).unwrap();
        let out = client.poll_once(&PollOutcome::default(), true).await.unwrap();
        assert_eq!(out.applied, ["s1"]);

        let e = PollClient::new(f.feed.clone(), &base, auth.clone())
            .unwrap()
            .receiver("stale")
            .poll_once(&PollOutcome::default(), true)
            .await
            .unwrap_err();
        assert!(
            matches!(&e, FeedError::Unauthenticated(m) if m == "authentication_failed: not for stale"),
            "{e}"
        );
        let e = PollClient::new(f.feed.clone(), &base, auth)
            .unwrap()
            .receiver("payments")
            .poll_once(&PollOutcome::default(), true)
            .await
            .unwrap_err();
        assert!(matches!(&e, FeedError::Forbidden(m) if m == "access_denied: not for payments"), "{e}");

        // Without a certificate the handshake is refused.
        let client =
            PollClient::new(f.feed.clone(), &base, FeedAuth::jwt_file(dir.path().join("none"))).unwrap();
        std::fs::write(dir.path().join("none"), "t").unwrap();
        assert!(matches!(
            client.poll_once(&PollOutcome::default(), true).await,
            Err(FeedError::Transport(_))
        ));
    }

    #[test]
    fn x509_files_follow_rotation_and_refuse_bad_files() {
        use rustls::client::ResolvesClientCert;
        let f = fixture();
        let dir = tempfile::tempdir().unwrap();
        let opts = || LeafOpts { window: Some((NOW - 60, NOW + 3600)), ..Default::default() };
        let first = f.ca.leaf("spiffe://example.org/rp", opts());
        let (cert, key) = write_svid(dir.path(), &first);
        let auth = FeedAuth::x509_files(&cert, &key).unwrap();
        let resolver = auth.client_cert().unwrap();
        let presented = |r: &Arc<dyn ResolvesClientCert>| r.resolve(&[], &[]).unwrap().cert[0].to_vec();
        assert_eq!(presented(&resolver), first.chain[0]);
        let second = f.ca.leaf("spiffe://example.org/rp", opts());
        write_svid(dir.path(), &second);
        // Make the change visible even on filesystems with coarse timestamps.
        let later = std::time::SystemTime::now() + Duration::from_secs(5);
        std::fs::File::options().write(true).open(&cert).unwrap().set_modified(later).unwrap();
        assert_eq!(presented(&resolver), second.chain[0], "the rotated SVID is presented");
        // A broken rewrite keeps the last good SVID (the server judges its validity).
        std::fs::write(&cert, "garbage").unwrap();
        std::fs::File::options()
            .write(true)
            .open(&cert)
            .unwrap()
            .set_modified(later + Duration::from_secs(5))
            .unwrap();
        assert_eq!(presented(&resolver), second.chain[0]);

        let e = FeedAuth::x509_files(&cert, &key).unwrap_err();
        assert!(matches!(&e, FeedError::Credential(m) if m.contains("holds no CERTIFICATE")), "{e}");
        write_svid(dir.path(), &first);
        std::fs::write(&key, pem("EC PRIVATE KEY", &first.key_der)).unwrap();
        let e = FeedAuth::x509_files(&cert, &key).unwrap_err();
        assert!(matches!(&e, FeedError::Credential(m) if m.contains("PKCS#8")), "{e}");
        let e = FeedAuth::x509_files(dir.path().join("nope.pem"), &key).unwrap_err();
        assert!(matches!(&e, FeedError::Credential(m) if m.contains("nope.pem")), "{e}");
        // A key that does not match the certificate.
        std::fs::write(&key, pem("PRIVATE KEY", &second.key_der)).unwrap();
        assert!(FeedAuth::x509_files(&cert, &key).is_err());
    }

    #[tokio::test]
    async fn bundle_endpoint_serves_the_next_bundle() {
        let f = fixture();
        let next = TestCa::new("example.org");
        let doc = json!({
            "keys": [{"kty": "EC", "crv": "P-256", "use": "x509-svid",
                "x": "MKBCTNIcKUSDii11ySs3526iDZ8AiTo7Tu6KPAqv7D4", "y": "4Etl6SRW2YiLUrN5vfvVHuhp7x8PxltmWWlbbM4IFyM",
                "x5c": [base64::Engine::encode(&base64::engine::general_purpose::STANDARD, &next.cert_der)]}],
            "spiffe_refresh_hint": 60,
        })
        .to_string();
        let app = Router::new().route("/bundle", axum::routing::get(move || async move { doc }));
        let base = https(&f.ca, "spiffe://example.org/ferrid/server", app).await;
        let b = fetch_bundle(
            &f.feed.trust_domain,
            &format!("{base}/bundle"),
            &f.feed.server_id(),
            f.feed.bundles.clone(),
            f.feed.clock.clone(),
        )
        .await
        .unwrap();
        assert_eq!(b.x509.authorities()[0].as_ref(), next.cert_der.as_slice());
        assert_eq!(b.refresh_hint, Some(Duration::from_secs(60)));
    }

    #[test]
    fn watch_messages_apply_and_reset() {
        use ferrid_proto::revocation::v1 as pb;
        let f = fixture();
        let msg = pb::WatchResponse {
            revocations: vec![
                pb::Revocation {
                    sequence: 1,
                    set: set_token(&f.key, &jwt_revocation("j1"), "s1"),
                    expires_at: NOW + 300,
                },
                pb::Revocation {
                    sequence: 2,
                    set: set_token(&TestKey::es256("k1"), &jwt_revocation("j2"), "s2"),
                    expires_at: NOW + 300,
                },
            ],
            sequence: 2,
            server_time: NOW,
            reset: false,
        };
        assert_eq!(watch::apply_message(&f.feed, &msg), 1, "the forged SET is refused");
        assert_eq!(f.feed.revocations.len(), 1);
        assert_eq!(f.feed.revocations.sequence(), 2);
        assert!(f.feed.revocations.check_fresh(NOW).is_ok());
        let reset = pb::WatchResponse { revocations: vec![], sequence: 0, server_time: NOW, reset: true };
        watch::apply_message(&f.feed, &reset);
        assert!(f.feed.revocations.is_empty());
        f.feed.revocations.forget_expired(NOW + 301);
    }
}
