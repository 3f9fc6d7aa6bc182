//! The SPIFFE Workload API on a Unix socket.
//!
//! Every call must carry the `workload.spiffe.io: true` metadata (`InvalidArgument`
//! otherwise). The caller is identified from the socket's peer credentials by every
//! enabled workload attestor (`unix`, and `k8s` when configured), concurrently; its
//! selectors are the union of theirs. An attestor that does not apply to the caller
//! (`k8s` for a host process) adds nothing; any other attestor error fails the call
//! (`Unavailable` when a dependency such as the kubelet is, `PermissionDenied`
//! otherwise). Entries whose selectors are all attested decide its identities
//! (`PermissionDenied` when none do). While the agent is starting every call
//! gets `Unavailable`. Streams send the full state at once and again on every change.
use std::collections::{BTreeMap, HashMap, HashSet};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;

use ferrid_attest::{AttestError, PeerCredentials};
use ferrid_proto::node::v1 as npb;
use ferrid_proto::types::v1 as tpb;
use ferrid_proto::workload::{self as wpb, spiffe_workload_api_server::SpiffeWorkloadApi};
use ferrid_tls::UdsPeer;
use ferrid_types::{RegistrationEntry, Selector, SelectorSet};
use futures::Stream;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tonic::{Request, Response, Status};

use crate::{AgentError, Shared, io_err};

#[path = "workload_wit.rs"]
mod wit;
pub(crate) use wit::WitCache;

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

/// JWT-SVID requests per `BatchMintJwtSvids` call (the agent's X.509 batches are 500 too).
const JWT_BATCH: usize = 500;

/// What a cached JWT-SVID was minted for: the entry at one revision and a sorted,
/// de-duplicated audience set.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct JwtKey {
    entry: String,
    revision: i64,
    audience: Vec<String>,
}

#[derive(Debug, Clone)]
struct CachedJwt {
    token: String,
    /// `jti`, `sub` and `iat`, read from the token, matched against revocations.
    jti: String,
    sub: String,
    iat: i64,
    /// Served until then: half-way through its life, like X.509-SVID rotation.
    refresh_at: i64,
    expires_at: i64,
}

/// A JWT's claims, read without verification (the token came from our server).
pub(crate) fn token_claims(token: &str) -> serde_json::Map<String, serde_json::Value> {
    use base64::Engine;
    token
        .split('.')
        .nth(1)
        .and_then(|p| base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(p).ok())
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default()
}

/// Most JWT-SVIDs kept; beyond it expired ones are dropped first, then everything.
const JWT_CACHE_MAX: usize = 10_000;

/// JWT-SVIDs by entry, revision and audience. A cached token is served while less than
/// half its life has passed, so callers asking repeatedly do not each cost a round trip
/// and a signature, and a token is never handed out close to its expiry. An entry
/// change (new revision) misses the cache.
#[derive(Debug, Default)]
pub(crate) struct JwtCache(std::sync::Mutex<HashMap<JwtKey, CachedJwt>>);

impl JwtCache {
    fn get(&self, key: &JwtKey, now: i64) -> Option<String> {
        let map = self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        map.get(key).filter(|c| now < c.refresh_at).map(|c| c.token.clone())
    }

    fn put(&self, key: JwtKey, token: String, issued_at: i64, expires_at: i64, now: i64) {
        let mut map = self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if map.len() >= JWT_CACHE_MAX {
            map.retain(|_, c| c.expires_at > now);
            if map.len() >= JWT_CACHE_MAX {
                map.clear();
            }
        }
        let issued_at = if issued_at > 0 { issued_at } else { now };
        let claims = token_claims(&token);
        let field = |n: &str| claims.get(n).and_then(serde_json::Value::as_str).unwrap_or("").to_owned();
        let (jti, sub) = (field("jti"), field("sub"));
        let iat = claims.get("iat").and_then(serde_json::Value::as_i64).unwrap_or(issued_at);
        map.insert(
            key,
            CachedJwt {
                token,
                jti,
                sub,
                iat,
                refresh_at: issued_at + (expires_at - issued_at) / 2,
                expires_at,
            },
        );
    }

    /// Forgets every token `covered(jti, sub, iat)` selects; returns how many.
    pub(crate) fn forget(&self, covered: impl Fn(&str, &str, i64) -> bool) -> usize {
        let mut map = self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let before = map.len();
        map.retain(|_, c| !covered(&c.jti, &c.sub, c.iat));
        before - map.len()
    }
}

/// The Workload API service.
#[derive(Clone)]
pub(crate) struct WorkloadService {
    shared: Arc<Shared>,
    /// Flips to `true` on shutdown; open streams end then, so clients reconnect to the
    /// next agent instead of holding this one open.
    stop: watch::Receiver<bool>,
}

/// Binds the socket (world-connectable: the caller's identity comes from attestation,
/// not from file permissions) and serves until `stop`.
pub(crate) async fn serve(
    shared: Arc<Shared>,
    path: &Path,
    stop: watch::Receiver<bool>,
    tasks: &mut JoinSet<()>,
) -> Result<(), AgentError> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(io_err(format!("creating {}", dir.display())))?;
    }
    if path.exists() {
        if tokio::net::UnixStream::connect(path).await.is_ok() {
            return Err(AgentError::Other(format!("another agent is already serving {}", path.display())));
        }
        std::fs::remove_file(path).map_err(io_err(format!("removing stale {}", path.display())))?;
    }
    let listener =
        tokio::net::UnixListener::bind(path).map_err(io_err(format!("binding {}", path.display())))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o777))
        .map_err(io_err("socket permissions"))?;
    let shared_for_exchange = shared.clone();
    let svc = wpb::spiffe_workload_api_server::SpiffeWorkloadApiServer::new(WorkloadService {
        shared,
        stop: stop.clone(),
    })
    .max_decoding_message_size(64 * 1024);
    let exchange =
        ferrid_proto::exchange::v1::agent_exchange_server::AgentExchangeServer::new(WorkloadService {
            shared: shared_for_exchange,
            stop: stop.clone(),
        })
        .max_decoding_message_size(64 * 1024);
    let router = tonic::transport::Server::builder().add_service(svc).add_service(exchange);
    tasks.spawn(ferrid_tls::serving::serve_unix(router, listener, stop, "Workload API"));
    Ok(())
}

mod exchange;

fn check_header<T>(req: &Request<T>) -> Result<(), Status> {
    match req.metadata().get("workload.spiffe.io").and_then(|v| v.to_str().ok()) {
        Some("true") => Ok(()),
        _ => Err(Status::invalid_argument("security header missing from request (workload.spiffe.io: true)")),
    }
}

fn td_key(shared: &Shared) -> String {
    shared.td.id_string()
}

impl WorkloadService {
    fn ready(&self) -> Result<(), Status> {
        if self.shared.is_ready() {
            Ok(())
        } else {
            Err(Status::unavailable("the agent is starting; retry shortly"))
        }
    }

    /// The checks every identity-bearing call starts with: the security header, the
    /// agent's readiness, then the caller's attestation into its selectors.
    async fn admit<T>(&self, req: &Request<T>) -> Result<SelectorSet, Status> {
        check_header(req)?;
        self.ready()?;
        self.identify(req).await
    }

    /// [`Self::admit`], and the caller must match at least one entry.
    async fn admit_with_identity<T>(&self, req: &Request<T>) -> Result<SelectorSet, Status> {
        let sels = self.admit(req).await?;
        if self.matching(&sels).is_empty() {
            return Err(Self::no_identity());
        }
        Ok(sels)
    }

    /// Attests the caller into its selectors.
    async fn identify<T>(&self, req: &Request<T>) -> Result<SelectorSet, Status> {
        let peer =
            req.extensions().get::<UdsPeer>().copied().unwrap_or(UdsPeer { uid: None, gid: None, pid: None });
        let (Some(pid), Some(uid), Some(gid)) = (peer.pid, peer.uid, peer.gid) else {
            return Err(Status::internal("the caller's credentials are not available"));
        };
        let peer = PeerCredentials { pid, uid, gid };
        let results = futures::future::join_all(
            self.shared.attestors.iter().map(|a| async move { (a.name(), a.attest(peer).await) }),
        )
        .await;
        combine(peer, results)
    }

    fn matching(&self, sels: &SelectorSet) -> Vec<RegistrationEntry> {
        self.shared.entries.load().iter().filter(|e| sels.satisfies(&e.selectors)).cloned().collect()
    }

    fn no_identity() -> Status {
        Status::permission_denied("no identity issued")
    }

    /// The X.509-SVID response for entries, or None while none has been minted yet.
    fn x509_response(&self, entries: &[RegistrationEntry]) -> Option<wpb::X509svidResponse> {
        let svids = self.shared.svids.load();
        let bundle = self.shared.bundle.load();
        let bundle_der: Vec<u8> =
            bundle.as_ref().as_ref().map(|b| b.x509_authorities.concat()).unwrap_or_default();
        let mut hints = HashSet::new();
        let out: Vec<wpb::X509svid> = entries
            .iter()
            .filter_map(|e| svids.get(&e.id))
            // Hints are unique per response: a second SVID with the same hint is left out.
            .filter(|s| s.hint.is_empty() || hints.insert(s.hint.clone()))
            .map(|s| wpb::X509svid {
                spiffe_id: s.spiffe_id.to_string(),
                x509_svid: s.chain.concat(),
                x509_svid_key: s.key.to_vec(),
                bundle: bundle_der.clone(),
                hint: s.hint.clone(),
            })
            .collect();
        (!out.is_empty()).then(|| wpb::X509svidResponse { svids: out, ..Default::default() })
    }

    /// Asks the server for a JWT-SVID for each of `entries` (in order): one
    /// `MintJwtSvid` for one entry, one `BatchMintJwtSvids` for several (falling back to
    /// one call each on a server without it). Any refusal fails the whole request.
    async fn mint_jwts(
        &self,
        entries: &[&RegistrationEntry],
        audience: &[String],
    ) -> Result<Vec<tpb::JwtSvid>, Status> {
        if entries.is_empty() {
            return Ok(Vec::new());
        }
        let client = self.shared.node.load_full();
        let Some(client) = client.as_ref().as_ref() else {
            return Err(Status::unavailable("the agent cannot reach the server to mint a JWT-SVID"));
        };
        let params = |e: &RegistrationEntry| npb::MintJwtSvidRequest {
            entry_id: e.id.0.clone(),
            audience: audience.to_vec(),
            ttl: 0,
        };
        let failed = |e: &RegistrationEntry, code: tonic::Code, msg: &str| {
            Status::new(code, format!("minting a JWT-SVID for {}: {msg}", e.spiffe_id))
        };
        if entries.len() > 1 {
            let mut out = Vec::with_capacity(entries.len());
            // Chunks stay under the server's default `limits.max_batch` (1,000).
            for chunk in entries.chunks(JWT_BATCH) {
                let batch =
                    npb::BatchMintJwtSvidsRequest { params: chunk.iter().map(|e| params(e)).collect() };
                match client.clone().batch_mint_jwt_svids(batch).await {
                    Ok(resp) => {
                        let results = resp.into_inner().results;
                        if results.len() != chunk.len() {
                            return Err(Status::internal(format!(
                                "server answered {} of {} JWT-SVID requests",
                                results.len(),
                                chunk.len()
                            )));
                        }
                        for (e, r) in chunk.iter().zip(results) {
                            out.push(r.svid.ok_or_else(|| {
                                failed(e, tonic::Code::from(r.error_code), &r.error_message)
                            })?);
                        }
                    }
                    Err(s) if s.code() == tonic::Code::Unimplemented && out.is_empty() => {
                        tracing::debug!("server has no BatchMintJwtSvids; minting one at a time");
                        break;
                    }
                    Err(s) => {
                        return Err(Status::new(
                            s.code(),
                            format!("minting JWT-SVIDs for {} identities: {}", chunk.len(), s.message()),
                        ));
                    }
                }
            }
            if out.len() == entries.len() {
                return Ok(out);
            }
        }
        let mut out = Vec::with_capacity(entries.len());
        for e in entries {
            let svid = client
                .clone()
                .mint_jwt_svid(params(e))
                .await
                .map_err(|s| failed(e, s.code(), s.message()))?
                .into_inner()
                .svid
                .ok_or_else(|| Status::internal("server returned no JWT-SVID"))?;
            out.push(svid);
        }
        Ok(out)
    }

    /// Runs `make` now and on every change, sending what it returns when it differs
    /// from the last message; stops with its error.
    fn stream<T, F>(&self, make: F) -> BoxStream<T>
    where
        T: PartialEq + Clone + Send + 'static,
        F: Fn(&Self) -> Result<Option<T>, Status> + Send + 'static,
    {
        let this = self.clone();
        Box::pin(ferrid_tls::serving::state_stream(
            self.shared.changes.subscribe(),
            self.stop.clone(),
            "the agent is shutting down",
            move || make(&this),
        ))
    }
}

/// The caller's selectors from every attestor's result (see the module documentation).
fn combine(
    peer: PeerCredentials,
    results: Vec<(&'static str, Result<Vec<String>, AttestError>)>,
) -> Result<SelectorSet, Status> {
    let mut set = SelectorSet::new();
    for (name, result) in results {
        match result {
            Ok(values) => {
                for v in values {
                    match Selector::new(name, v) {
                        Ok(s) => set.insert(s),
                        Err(e) => tracing::debug!(attestor = name, error = %e, "selector dropped"),
                    }
                }
            }
            Err(AttestError::NotApplicable(why)) => {
                tracing::debug!(pid = peer.pid, attestor = name, reason = %why, "workload attestor does not apply");
            }
            Err(e) => {
                tracing::warn!(pid = peer.pid, uid = peer.uid, attestor = name, error = %e, "workload attestation failed");
                let msg = format!("workload attestation failed: {name}: {e}");
                return Err(match e {
                    AttestError::Unavailable(_) => Status::unavailable(msg),
                    _ => Status::permission_denied(msg),
                });
            }
        }
    }
    Ok(set)
}

fn json_to_prost(v: serde_json::Value) -> prost_types::Value {
    use prost_types::value::Kind;
    let kind = match v {
        serde_json::Value::Null => Kind::NullValue(0),
        serde_json::Value::Bool(b) => Kind::BoolValue(b),
        serde_json::Value::Number(n) => Kind::NumberValue(n.as_f64().unwrap_or_default()),
        serde_json::Value::String(s) => Kind::StringValue(s),
        serde_json::Value::Array(a) => {
            Kind::ListValue(prost_types::ListValue { values: a.into_iter().map(json_to_prost).collect() })
        }
        serde_json::Value::Object(o) => Kind::StructValue(prost_types::Struct {
            fields: o.into_iter().map(|(k, v)| (k, json_to_prost(v))).collect::<BTreeMap<_, _>>(),
        }),
    };
    prost_types::Value { kind: Some(kind) }
}

/// Algorithms a JWT-SVID may be signed with; `none` and HMAC never.
const ALLOWED_ALGS: [jsonwebtoken::Algorithm; 8] = [
    jsonwebtoken::Algorithm::ES256,
    jsonwebtoken::Algorithm::ES384,
    jsonwebtoken::Algorithm::RS256,
    jsonwebtoken::Algorithm::RS384,
    jsonwebtoken::Algorithm::RS512,
    jsonwebtoken::Algorithm::PS256,
    jsonwebtoken::Algorithm::PS384,
    jsonwebtoken::Algorithm::PS512,
];

/// Validates a JWT-SVID against the bundle's JWT keys for `audience`.
pub(crate) fn validate_jwt(
    bundle: &ferrid_ca::TrustBundle,
    audience: &str,
    token: &str,
) -> Result<(String, serde_json::Map<String, serde_json::Value>), String> {
    if token.len() > 16 * 1024 {
        return Err("token is larger than 16 KiB".into());
    }
    let header = jsonwebtoken::decode_header(token).map_err(|e| format!("malformed token: {e}"))?;
    if !ALLOWED_ALGS.contains(&header.alg) {
        return Err(format!("algorithm {:?} is not allowed", header.alg));
    }
    let kid = header.kid.ok_or("token has no kid")?;
    let jwks: jsonwebtoken::jwk::JwkSet =
        serde_json::from_str(&bundle.jwt_jwks_json()).map_err(|e| format!("bundle: {e}"))?;
    let jwk = jwks.find(&kid).ok_or_else(|| format!("key {kid:?} is not in the trust bundle"))?;
    let key = jsonwebtoken::DecodingKey::from_jwk(jwk).map_err(|e| format!("bundle key {kid:?}: {e}"))?;
    let mut v = jsonwebtoken::Validation::new(header.alg);
    v.set_audience(&[audience]);
    v.set_required_spec_claims(&["exp", "aud", "sub"]);
    v.leeway = 0;
    let data = jsonwebtoken::decode::<serde_json::Map<String, serde_json::Value>>(token, &key, &v)
        .map_err(|e| format!("invalid token: {e}"))?;
    let sub = data.claims.get("sub").and_then(|s| s.as_str()).ok_or("token has no sub")?;
    let id = ferrid_types::SpiffeId::new(sub).map_err(|e| format!("sub {sub:?} is not a SPIFFE ID: {e}"))?;
    if !id.is_member_of(&bundle.trust_domain) {
        return Err(format!("sub {id} is not in trust domain {}", bundle.trust_domain));
    }
    Ok((id.to_string(), data.claims))
}

#[tonic::async_trait]
impl SpiffeWorkloadApi for WorkloadService {
    type FetchX509SVIDStream = BoxStream<wpb::X509svidResponse>;
    type FetchX509BundlesStream = BoxStream<wpb::X509BundlesResponse>;
    type FetchJWTBundlesStream = BoxStream<wpb::JwtBundlesResponse>;
    type FetchWITSVIDStream = BoxStream<wpb::WitsvidResponse>;
    type FetchWITBundlesStream = BoxStream<wpb::WitBundlesResponse>;

    async fn fetch_x509svid(
        &self,
        request: Request<wpb::X509svidRequest>,
    ) -> Result<Response<Self::FetchX509SVIDStream>, Status> {
        let sels = self.admit_with_identity(&request).await?;
        Ok(Response::new(self.stream(move |this| {
            this.ready()?;
            let entries = this.matching(&sels);
            if entries.is_empty() {
                return Err(Self::no_identity());
            }
            Ok(this.x509_response(&entries))
        })))
    }

    async fn fetch_x509_bundles(
        &self,
        request: Request<wpb::X509BundlesRequest>,
    ) -> Result<Response<Self::FetchX509BundlesStream>, Status> {
        self.admit_with_identity(&request).await?;
        Ok(Response::new(self.stream(|this| {
            let b = this.shared.bundle.load();
            Ok(b.as_ref().as_ref().map(|b| wpb::X509BundlesResponse {
                crl: vec![],
                bundles: [(td_key(&this.shared), b.x509_authorities.concat())].into_iter().collect(),
            }))
        })))
    }

    async fn fetch_jwtsvid(
        &self,
        request: Request<wpb::JwtsvidRequest>,
    ) -> Result<Response<wpb::JwtsvidResponse>, Status> {
        let sels = self.admit(&request).await?;
        let req = request.into_inner();
        if req.audience.is_empty() || req.audience.iter().any(String::is_empty) {
            return Err(Status::invalid_argument("audience must be specified"));
        }
        let mut entries = self.matching(&sels);
        if !req.spiffe_id.is_empty() {
            entries.retain(|e| e.spiffe_id.to_string() == req.spiffe_id);
        }
        if entries.is_empty() {
            return Err(Self::no_identity());
        }
        let mut audience = req.audience.clone();
        audience.sort();
        audience.dedup();
        // Cached tokens first; the misses are minted together, in one call.
        let now = self.shared.clock.unix();
        let mut hints = HashSet::new();
        let mut picked: Vec<(RegistrationEntry, JwtKey, Option<String>)> = Vec::new();
        for e in entries {
            if !e.hint.is_empty() && !hints.insert(e.hint.clone()) {
                continue;
            }
            let key = JwtKey { entry: e.id.0.clone(), revision: e.revision, audience: audience.clone() };
            let cached = self.shared.jwt_cache.get(&key, now);
            picked.push((e, key, cached));
        }
        let misses: Vec<&RegistrationEntry> =
            picked.iter().filter(|(_, _, t)| t.is_none()).map(|(e, _, _)| e).collect();
        let mut minted = self.mint_jwts(&misses, &req.audience).await?.into_iter();
        let mut svids = Vec::with_capacity(picked.len());
        for (e, key, cached) in picked {
            let token = match cached {
                Some(t) => t,
                None => {
                    let m =
                        minted.next().ok_or_else(|| Status::internal("server returned too few JWT-SVIDs"))?;
                    self.shared.jwt_cache.put(key, m.token.clone(), m.issued_at, m.expires_at, now);
                    m.token
                }
            };
            svids.push(wpb::Jwtsvid {
                spiffe_id: e.spiffe_id.to_string(),
                svid: token,
                hint: e.hint.clone(),
            });
        }
        Ok(Response::new(wpb::JwtsvidResponse { svids }))
    }

    async fn fetch_jwt_bundles(
        &self,
        request: Request<wpb::JwtBundlesRequest>,
    ) -> Result<Response<Self::FetchJWTBundlesStream>, Status> {
        self.admit_with_identity(&request).await?;
        Ok(Response::new(self.stream(|this| {
            let b = this.shared.bundle.load();
            Ok(b.as_ref().as_ref().map(|b| wpb::JwtBundlesResponse {
                bundles: [(td_key(&this.shared), b.jwt_jwks_json().into_bytes())].into_iter().collect(),
            }))
        })))
    }

    async fn validate_jwtsvid(
        &self,
        request: Request<wpb::ValidateJwtsvidRequest>,
    ) -> Result<Response<wpb::ValidateJwtsvidResponse>, Status> {
        check_header(&request)?;
        self.ready()?;
        let req = request.into_inner();
        if req.audience.is_empty() {
            return Err(Status::invalid_argument("audience must be specified"));
        }
        if req.svid.is_empty() {
            return Err(Status::invalid_argument("svid must be specified"));
        }
        let bundle = self.shared.bundle.load_full();
        let bundle = bundle.as_ref().as_ref().ok_or_else(|| Status::unavailable("no trust bundle yet"))?;
        let (spiffe_id, claims) =
            validate_jwt(bundle, &req.audience, &req.svid).map_err(Status::invalid_argument)?;
        let claims =
            prost_types::Struct { fields: claims.into_iter().map(|(k, v)| (k, json_to_prost(v))).collect() };
        Ok(Response::new(wpb::ValidateJwtsvidResponse { spiffe_id, claims: Some(claims) }))
    }

    async fn fetch_witsvid(
        &self,
        request: Request<wpb::WitsvidRequest>,
    ) -> Result<Response<Self::FetchWITSVIDStream>, Status> {
        let sels = self.admit(&request).await?;
        let only = request.into_inner().spiffe_id;
        if self.wit_entries(&sels, &only).is_empty() {
            return Err(Self::no_identity());
        }
        Ok(Response::new(Box::pin(self.wit_stream(sels, only))))
    }

    async fn fetch_wit_bundles(
        &self,
        request: Request<wpb::WitBundlesRequest>,
    ) -> Result<Response<Self::FetchWITBundlesStream>, Status> {
        self.admit_with_identity(&request).await?;
        Ok(Response::new(self.stream(|this| {
            let b = this.shared.bundle.load();
            Ok(b.as_ref().as_ref().map(|b| wpb::WitBundlesResponse {
                bundles: [(td_key(&this.shared), b.wit_jwks_json())].into_iter().collect(),
            }))
        })))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(rev: i64, aud: &[&str]) -> JwtKey {
        JwtKey { entry: "e1".into(), revision: rev, audience: aud.iter().map(|a| (*a).to_owned()).collect() }
    }

    #[test]
    fn jwt_cache_serves_until_half_life_and_misses_on_change() {
        let c = JwtCache::default();
        c.put(key(1, &["a"]), "tok".into(), 1000, 1300, 1000);
        assert_eq!(c.get(&key(1, &["a"]), 1149).as_deref(), Some("tok"));
        assert_eq!(c.get(&key(1, &["a"]), 1150), None, "half-life reached: mint a fresh one");
        assert_eq!(c.get(&key(2, &["a"]), 1001), None, "entry changed");
        assert_eq!(c.get(&key(1, &["a", "b"]), 1001), None, "other audience");
    }

    #[test]
    fn jwt_cache_forgets_revoked_tokens() {
        use base64::Engine;
        let tok = |jti: &str, sub: &str, iat: i64| {
            let p = serde_json::json!({"jti": jti, "sub": sub, "iat": iat}).to_string();
            format!("e30.{}.sig", base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(p))
        };
        let c = JwtCache::default();
        c.put(key(1, &["a"]), tok("j1", "spiffe://td/a", 100), 100, 400, 100);
        c.put(key(1, &["b"]), tok("j2", "spiffe://td/a", 150), 150, 400, 150);
        c.put(key(2, &["a"]), tok("j3", "spiffe://td/b", 100), 100, 400, 100);
        // By jti.
        assert_eq!(c.forget(|jti, _, _| jti == "j3"), 1);
        assert_eq!(c.get(&key(2, &["a"]), 101), None);
        // By SPIFFE ID cut-off: only tokens issued before it.
        assert_eq!(c.forget(|_, sub, iat| sub == "spiffe://td/a" && iat < 120), 1);
        assert_eq!(c.get(&key(1, &["a"]), 101), None);
        assert!(c.get(&key(1, &["b"]), 151).is_some());
    }

    #[test]
    fn attestor_results_combine() {
        let peer = PeerCredentials { pid: 7, uid: 1, gid: 1 };
        let ok = |v: &[&str]| Ok(v.iter().map(|s| (*s).to_owned()).collect());
        // Union, each value under its attestor's name; invalid values are dropped.
        let set =
            combine(peer, vec![("unix", ok(&["uid:1"])), ("k8s", ok(&["ns:shop", "bad\nvalue"]))]).unwrap();
        let got: Vec<String> = set.iter().map(ToString::to_string).collect();
        assert_eq!(got, ["k8s:ns:shop", "unix:uid:1"]);
        // An attestor that does not apply adds nothing and fails nothing.
        let set = combine(
            peer,
            vec![("unix", ok(&["uid:1"])), ("k8s", Err(AttestError::NotApplicable("host".into())))],
        )
        .unwrap();
        assert_eq!(set.len(), 1);
        // Any other error fails the whole attestation, with the attestor's name.
        let e = combine(
            peer,
            vec![("unix", ok(&["uid:1"])), ("k8s", Err(AttestError::Unavailable("kubelet".into())))],
        )
        .unwrap_err();
        assert_eq!(e.code(), tonic::Code::Unavailable);
        assert!(e.message().contains("k8s:") && e.message().contains("kubelet"), "{e:?}");
        let e =
            combine(peer, vec![("k8s", Err(AttestError::Rejected("gone".into()))), ("unix", ok(&["uid:1"]))])
                .unwrap_err();
        assert_eq!(e.code(), tonic::Code::PermissionDenied);
    }

    #[test]
    fn jwt_cache_is_bounded() {
        let c = JwtCache::default();
        for i in 0..JWT_CACHE_MAX + 5 {
            c.put(key(i64::try_from(i).unwrap(), &["a"]), "t".into(), 0, 100, 50);
        }
        assert!(c.0.lock().unwrap().len() <= JWT_CACHE_MAX);
    }
}
