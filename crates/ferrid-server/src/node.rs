//! The node API: node attestation, agent SVID renewal, SVID minting for authorized
//! entries, and the entry/bundle watch.
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ferrid_attest::{AttestError, Challenger, MAX_PAYLOAD};
use ferrid_ca::{JwtSvidRequest, WitSvidRequest, X509SvidRequest};
use ferrid_proto::node::v1::{self as pb, node_server::Node};
use ferrid_proto::types::v1 as tpb;
use ferrid_store::StoreError;
use ferrid_types::{AgentRecord, RegistrationEntry, Selector, SpiffeId};
use futures::Stream;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use crate::error::{attest_status, ca_status, store_status};
use crate::state::Shared;
use crate::tls::PeerInfo;

/// How long an agent has to answer an attestation challenge.
const CHALLENGE_TIMEOUT: Duration = Duration::from_secs(30);

/// The node service.
#[derive(Debug, Clone)]
pub(crate) struct NodeService {
    pub(crate) shared: Arc<Shared>,
    /// Flips to `true` when the server shuts down; open watches end then, so a graceful
    /// shutdown does not wait for agents to hang up.
    pub(crate) stop: tokio::sync::watch::Receiver<bool>,
}

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

/// The refusal an evicted agent gets (the datastore's own words for a ban).
fn evicted(id: &SpiffeId) -> Status {
    store_status(StoreError::Banned(id.clone()))
}

/// The caller's X.509-SVID (mutual TLS), parsed once per connection by the TLS layer,
/// which has already verified its chain against the bundle.
pub(crate) fn caller<T>(req: &Request<T>) -> Result<&ferrid_tls::PeerLeaf, Status> {
    let leaf = req
        .extensions()
        .get::<PeerInfo>()
        .and_then(|p| p.leaf.as_deref())
        .ok_or_else(|| Status::unauthenticated("this call needs the caller's X.509-SVID (mutual TLS)"))?;
    leaf.as_ref().map_err(|e| Status::unauthenticated(format!("client certificate: {e}")))
}

/// Converts a minted X.509-SVID to its wire form.
pub(crate) fn x509_to_proto(s: &ferrid_ca::X509Svid, entry: Option<&RegistrationEntry>) -> tpb::X509Svid {
    tpb::X509Svid {
        spiffe_id: s.spiffe_id.to_string(),
        cert_chain: s.cert_chain_der.clone(),
        expires_at: s.not_after,
        // The CA's serials never start with a zero byte, so this is already the form
        // `serial_of` would parse out of the certificate.
        serial: s.serial_hex.clone(),
        entry_id: entry.map(|e| e.id.0.clone()).unwrap_or_default(),
        hint: entry.map(|e| e.hint.clone()).unwrap_or_default(),
    }
}

/// Converts a minted JWT-SVID to its wire form.
pub(crate) fn jwt_to_proto(s: &ferrid_ca::JwtSvid, hint: &str) -> tpb::JwtSvid {
    tpb::JwtSvid {
        token: s.token.clone(),
        spiffe_id: s.spiffe_id.to_string(),
        expires_at: s.expires_at,
        issued_at: s.issued_at,
        jti: s.jti.clone(),
        hint: hint.to_owned(),
    }
}

/// The bundle in wire form.
pub(crate) fn bundle_to_proto(b: &ferrid_ca::TrustBundle) -> tpb::Bundle {
    tpb::Bundle {
        trust_domain: b.trust_domain.to_string(),
        x509_authorities: b.x509_authorities.clone(),
        jwt_authorities: b
            .jwt_authorities
            .iter()
            .map(|k| tpb::JwtKey {
                key_id: k.key_id.clone(),
                public_key: k.public_key_spki_der.clone(),
                expires_at: k.expires_at,
            })
            .collect(),
        sequence: b.sequence,
        refresh_hint: b.refresh_hint_secs,
        spiffe_bundle_json: b.to_spiffe_json().into_bytes(),
    }
}

fn ttl_of(secs: u32) -> Option<Duration> {
    (secs > 0).then(|| Duration::from_secs(u64::from(secs)))
}

impl NodeService {
    /// Identifies the calling agent from its mTLS certificate. The TLS layer has
    /// already verified the chain against the bundle; here the SVID must name an agent
    /// this server admitted and has not evicted.
    fn authenticate<T>(&self, req: &Request<T>) -> Result<AgentRecord, Status> {
        let leaf = caller(req)?;
        let id = &leaf.spiffe_id;
        let agent = self.shared.agent(id).ok_or_else(|| {
            Status::permission_denied(format!("{id} is not an attested agent of this server"))
        })?;
        if agent.banned {
            return Err(evicted(id));
        }
        crate::revocation::check_peer(&self.shared, leaf)?;
        Ok(agent)
    }

    /// Refuses a response to `agent` if it was evicted while the request ran. Called
    /// after the issuance is in the audit log: eviction bans before it scans the log for
    /// what the agent was issued, so a credential is either found by that scan or, its
    /// record having committed after the ban, refused here — never handed out unrevoked.
    fn still_admitted(&self, agent: &AgentRecord) -> Result<(), Status> {
        match self.shared.agent(&agent.spiffe_id) {
            Some(a) if !a.banned => Ok(()),
            _ => Err(evicted(&agent.spiffe_id)),
        }
    }

    /// Entry `entry_id` if `agent` may serve it; otherwise PermissionDenied, with a denial
    /// record naming `credential_type` when given.
    fn authorized_entry(
        &self,
        agent: &AgentRecord,
        entry_id: &str,
        credential_type: Option<&str>,
    ) -> Result<Arc<RegistrationEntry>, Status> {
        let idx = self.shared.entries();
        idx.authorize(agent, &self.shared.server_id, entry_id, self.shared.now()).ok_or_else(|| {
            self.shared.deny(
                crate::audit::unauthorized(agent, entry_id, credential_type),
                Status::permission_denied(format!(
                    "agent {} is not authorized for entry {entry_id:?}",
                    agent.spiffe_id
                )),
            )
        })
    }

    /// The life of a JWT- or WIT-SVID: the request's (seconds, 0 for the default), never
    /// longer than the entry's `jwt_svid_ttl` or, without one, the server's default.
    fn jwt_ttl(&self, requested: i32, entry: &RegistrationEntry) -> Option<Duration> {
        match (u64::try_from(requested).unwrap_or(0), entry.jwt_svid_ttl) {
            (0, e) => ttl_of(e),
            (r, 0) => Some(Duration::from_secs(r).min(self.shared.cfg.raw.svid.jwt_ttl)),
            (r, e) => Some(Duration::from_secs(r.min(u64::from(e)))),
        }
    }

    /// The runtime policy's decision on issuing `kind` for `entry` to a workload of
    /// `agent` (see [`crate::policy::decide`]).
    fn decide_issue(
        &self,
        agent: &AgentRecord,
        entry: &RegistrationEntry,
        kind: ferrid_policy::CredentialKind,
        audience: &[String],
        ttl: Option<Duration>,
    ) -> Result<(), Status> {
        crate::policy::decide(
            &self.shared,
            ferrid_policy::Action::Issue,
            &crate::policy::Who::entry(entry, &agent.attestor),
            &entry.spiffe_id.to_string(),
            kind,
            audience,
            ttl,
            crate::policy::Facts::default(),
        )
        .map(drop)
    }

    /// Mints one X.509-SVID for entry `entry_id` from `csr` (authorization, policy,
    /// signature) and returns it with its audit record, which the caller commits before
    /// answering.
    fn mint_x509(
        &self,
        agent: &AgentRecord,
        entry_id: &str,
        csr: &[u8],
    ) -> Result<(tpb::X509Svid, ferrid_audit::AuditRecord), Status> {
        let entry = &*self.authorized_entry(agent, entry_id, Some("x509-svid"))?;
        let ttl = ttl_of(entry.x509_svid_ttl).unwrap_or(self.shared.cfg.raw.svid.x509_ttl);
        self.decide_issue(agent, entry, ferrid_policy::CredentialKind::X509, &[], Some(ttl))?;
        let started = Instant::now();
        let svid = self
            .shared
            .ca
            .mint_x509_svid(&X509SvidRequest {
                csr_der: csr,
                spiffe_id: &entry.spiffe_id,
                ttl: ttl_of(entry.x509_svid_ttl),
                dns_names: &entry.dns_names,
            })
            .map_err(|e| {
                self.shared.metrics.issue_failures.with_label_values(&["x509", "ca"]).inc();
                ca_status(e)
            })?;
        self.shared.metrics.issued.with_label_values(&["x509"]).inc();
        self.shared.metrics.latency.with_label_values(&["x509"]).observe(started.elapsed().as_secs_f64());
        tracing::debug!(spiffe_id = %entry.spiffe_id, entry = %entry.id, not_after = svid.not_after, "minted X.509-SVID");
        let wire = x509_to_proto(&svid, Some(entry));
        let rec = crate::audit::x509(
            ferrid_audit::RecordKind::Issuance,
            crate::audit::entry_who(agent, entry),
            &wire,
            "x509-svid",
            Some(entry),
            self.shared.now(),
        );
        Ok((wire, rec))
    }

    /// Mints one JWT-SVID for `req` (authorization, authority model, policy, signature)
    /// and returns it with its audit record, which the caller commits before answering.
    fn mint_jwt(
        &self,
        agent: &AgentRecord,
        req: &pb::MintJwtSvidRequest,
    ) -> Result<(tpb::JwtSvid, ferrid_audit::AuditRecord), Status> {
        let entry = self.authorized_entry(agent, &req.entry_id, None)?;
        match entry.authority_model() {
            Some(ferrid_types::AuthorityModel::Delegated) => {
                return Err(self.shared.deny(crate::audit::entry_denial(agent, &entry, "jwt-svid"), Status::permission_denied(format!(
                    "{} is delegated: it acts only for a principal, so its JWT credentials come from token exchange with a subject token",
                    entry.spiffe_id
                ))));
            }
            Some(ferrid_types::AuthorityModel::Bounded) => {
                return Err(self.shared.deny(crate::audit::entry_denial(agent, &entry, "jwt-svid"), Status::permission_denied(format!(
                    "{} is bounded: its JWT credentials are task tokens (IssueTaskToken, or token exchange with a task)",
                    entry.spiffe_id
                ))));
            }
            _ => {}
        }
        let ttl = self.jwt_ttl(req.ttl, &entry);
        self.decide_issue(
            agent,
            &entry,
            ferrid_policy::CredentialKind::Jwt,
            &req.audience,
            Some(ttl.unwrap_or(self.shared.cfg.raw.svid.jwt_ttl)),
        )?;
        let started = Instant::now();
        let svid = self
            .shared
            .ca
            .mint_jwt_svid(&JwtSvidRequest {
                spiffe_id: &entry.spiffe_id,
                audience: &req.audience,
                ttl,
                extra_claims: None,
            })
            .map_err(|e| {
                self.shared.metrics.issue_failures.with_label_values(&["jwt", "ca"]).inc();
                ca_status(e)
            })?;
        self.shared.metrics.issued.with_label_values(&["jwt"]).inc();
        self.shared.metrics.latency.with_label_values(&["jwt"]).observe(started.elapsed().as_secs_f64());
        let rec = crate::audit::jwt(
            ferrid_audit::RecordKind::Issuance,
            crate::audit::entry_who(agent, &entry),
            "jwt-svid",
            &entry.spiffe_id.to_string(),
            &svid.jti,
            &svid.kid,
            &req.audience,
            svid.issued_at,
            svid.expires_at,
            Some(&entry),
        );
        Ok((jwt_to_proto(&svid, &entry.hint), rec))
    }

    /// Mints an agent SVID for `id` from `csr` (this also validates the CSR).
    fn mint_agent_svid(&self, id: &SpiffeId, csr: &[u8]) -> Result<ferrid_ca::X509Svid, Status> {
        self.shared
            .ca
            .mint_x509_svid(&X509SvidRequest {
                csr_der: csr,
                spiffe_id: id,
                ttl: Some(self.shared.cfg.raw.svid.agent_ttl),
                dns_names: &[],
            })
            .map_err(ca_status)
    }

    /// Records the agent with its new SVID and returns the SVID's wire form; an agent
    /// evicted since it was authenticated gets `PermissionDenied` and the certificate,
    /// minted but never recorded, is dropped here.
    async fn record_agent(
        &self,
        mut agent: AgentRecord,
        svid: &ferrid_ca::X509Svid,
    ) -> Result<tpb::X509Svid, Status> {
        let wire = x509_to_proto(svid, None);
        agent.svid_serial = wire.serial.clone();
        agent.svid_expires_at = svid.not_after;
        agent.last_seen = self.shared.now();
        self.shared.record_agent_svid(agent).await.map_err(store_status)?;
        self.shared.metrics.issued.with_label_values(&["agent"]).inc();
        Ok(wire)
    }

    async fn attest_flow(
        &self,
        mut inbound: Streaming<pb::AttestAgentRequest>,
        out: mpsc::Sender<Result<pb::AttestAgentResponse, Status>>,
    ) -> Result<pb::AttestResult, Status> {
        let shared = &self.shared;
        let first = inbound.message().await?.ok_or_else(|| {
            Status::invalid_argument("stream closed before attestation parameters were sent")
        })?;
        let Some(pb::attest_agent_request::Step::Params(params)) = first.step else {
            return Err(Status::invalid_argument("the first message must carry attestation parameters"));
        };
        let data = params.data.ok_or_else(|| Status::invalid_argument("attestation data is missing"))?;
        let attestor = shared.attestors.get(&data.r#type).ok_or_else(|| {
            Status::invalid_argument(format!(
                "node attestor {:?} is not enabled on this server (enabled: {})",
                data.r#type,
                shared.attestors.names().join(", ")
            ))
        })?;
        let name = attestor.name();
        let fail = |e: AttestError| {
            shared.metrics.attest_failures.with_label_values(&[name, e.reason()]).inc();
            tracing::warn!(attestor = name, reason = e.reason(), error = %e, "node attestation failed");
            shared.deny(
                crate::audit::evidence_denial(name, &data.payload, Some("agent-svid")),
                attest_status(&e),
            )
        };
        if data.payload.len() > MAX_PAYLOAD {
            return Err(fail(AttestError::TooLarge { limit: MAX_PAYLOAD, got: data.payload.len() }));
        }
        if params.csr.is_empty() {
            return Err(Status::invalid_argument("a CSR for the agent SVID is required"));
        }
        let mut challenger = StreamChallenger { inbound: &mut inbound, out: &out };
        let attested =
            attestor.attest(&data.payload, &mut challenger, shared.clock.now()).await.map_err(fail)?;

        let parts: Vec<&str> = attested.agent_path.iter().map(String::as_str).collect();
        let agent_id = ferrid_types::agent_id(&shared.td, name, &parts)
            .map_err(|e| Status::internal(format!("attestor {name} produced an invalid agent ID: {e}")))?;
        let selectors = attested
            .selectors
            .iter()
            .map(|v| Selector::new(name, v.clone()))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| Status::internal(format!("attestor {name} produced an invalid selector: {e}")))?;
        if let Some(existing) = shared.agent(&agent_id) {
            if existing.banned {
                return Err(fail(AttestError::Rejected(format!("agent {agent_id} has been evicted"))));
            }
            if !existing.can_reattest && attested.replay_key.is_none() {
                return Err(fail(AttestError::Replayed(format!("agent {agent_id} has already attested"))));
            }
        }
        let now = shared.now();
        let who = crate::audit::attested_who(
            &agent_id,
            name,
            &selectors.iter().map(ToString::to_string).collect::<Vec<_>>(),
            &data.payload,
        );
        // Mint first (this validates the CSR), then consume the evidence: a bad CSR must
        // not burn a one-time token, and a replay must not get a certificate.
        let agent = AgentRecord {
            spiffe_id: agent_id.clone(),
            attestor: name.to_owned(),
            selectors,
            svid_serial: String::new(),
            svid_expires_at: 0,
            can_reattest: attested.can_reattest,
            banned: false,
            attested_at: now,
            last_seen: now,
        };
        let svid = self.mint_agent_svid(&agent_id, &params.csr)?;
        if let Some(key) = &attested.replay_key {
            match shared.store.record_replay(key, attested.replay_expires_at.max(now + 1), now).await {
                Ok(()) => {}
                Err(StoreError::AlreadyExists(_)) => {
                    return Err(fail(AttestError::Replayed(
                        "this attestation evidence has already been used".into(),
                    )));
                }
                Err(e) => return Err(store_status(e)),
            }
            if name == "join_token"
                && let Some(id) = key.strip_prefix("join_token:")
            {
                shared.store.consume_join_token(id, now).await.map_err(store_status)?;
            }
        }
        let wire = self.record_agent(agent, &svid).await?;
        let rec =
            crate::audit::x509(ferrid_audit::RecordKind::Attestation, who, &wire, "agent-svid", None, now);
        shared.audit(rec).await?;
        shared.metrics.attestations.with_label_values(&[name]).inc();
        tracing::info!(agent = %agent_id, attestor = name, "agent attested");
        Ok(pb::AttestResult {
            svid: Some(wire),
            reattestable: attested.can_reattest,
            bundle: Some(bundle_to_proto(&shared.bundle())),
        })
    }

    /// The agent's state (entries, bundle) and the revocations after `*sent`; `None`
    /// when neither changed since `last`.
    fn watch_state(
        &self,
        agent_id: &SpiffeId,
        sent: &mut u64,
        last: &mut Option<(Vec<ferrid_proto::types::v1::Entry>, Option<ferrid_proto::types::v1::Bundle>)>,
    ) -> Result<Option<pb::WatchAuthorizedResponse>, Status> {
        let agent =
            self.shared.agent(agent_id).ok_or_else(|| Status::permission_denied("agent no longer exists"))?;
        if agent.banned {
            return Err(Status::permission_denied(format!("agent {agent_id} has been evicted")));
        }
        let entries = self.shared.entries().authorized(&agent, &self.shared.server_id, self.shared.now());
        let state = (
            entries.iter().map(|e| ferrid_proto::entry_to_proto(e)).collect::<Vec<_>>(),
            Some(bundle_to_proto(&self.shared.bundle())),
        );
        let feed = self.shared.revocations.feed();
        let revocations: Vec<_> = feed.after(*sent).iter().map(|r| crate::revocation::to_proto(r)).collect();
        *sent = (*sent).max(feed.last_seq());
        if revocations.is_empty() && last.as_ref() == Some(&state) {
            return Ok(None);
        }
        *last = Some(state.clone());
        Ok(Some(pb::WatchAuthorizedResponse { entries: state.0, bundle: state.1, revocations }))
    }
}

/// Sends challenges down the response stream and reads the answers.
struct StreamChallenger<'a> {
    inbound: &'a mut Streaming<pb::AttestAgentRequest>,
    out: &'a mpsc::Sender<Result<pb::AttestAgentResponse, Status>>,
}

#[async_trait::async_trait]
impl Challenger for StreamChallenger<'_> {
    async fn challenge(&mut self, challenge: Vec<u8>) -> Result<Vec<u8>, AttestError> {
        let msg =
            pb::AttestAgentResponse { step: Some(pb::attest_agent_response::Step::Challenge(challenge)) };
        self.out.send(Ok(msg)).await.map_err(|_| AttestError::Malformed("agent went away".into()))?;
        let answer = tokio::time::timeout(CHALLENGE_TIMEOUT, self.inbound.message())
            .await
            .map_err(|_| AttestError::Rejected("no answer to the attestation challenge in time".into()))?
            .map_err(|e| AttestError::Malformed(format!("reading challenge response: {}", e.message())))?
            .ok_or_else(|| {
                AttestError::Malformed("stream closed before the challenge was answered".into())
            })?;
        match answer.step {
            Some(pb::attest_agent_request::Step::ChallengeResponse(r)) => Ok(r),
            _ => Err(AttestError::Malformed("expected a challenge response".into())),
        }
    }
}

#[tonic::async_trait]
impl Node for NodeService {
    type AttestAgentStream = BoxStream<pb::AttestAgentResponse>;
    type WatchAuthorizedStream = BoxStream<pb::WatchAuthorizedResponse>;

    async fn attest_agent(
        &self,
        request: Request<Streaming<pb::AttestAgentRequest>>,
    ) -> Result<Response<Self::AttestAgentStream>, Status> {
        let inbound = request.into_inner();
        let (tx, rx) = mpsc::channel(4);
        let this = self.clone();
        tokio::spawn(async move {
            let result = this.attest_flow(inbound, tx.clone()).await;
            let msg = result
                .map(|r| pb::AttestAgentResponse { step: Some(pb::attest_agent_response::Step::Result(r)) });
            let _ = tx.send(msg).await;
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn renew_agent(
        &self,
        request: Request<pb::RenewAgentRequest>,
    ) -> Result<Response<pb::RenewAgentResponse>, Status> {
        let agent = self.authenticate(&request)?;
        let svid = self.mint_agent_svid(&agent.spiffe_id, &request.into_inner().csr)?;
        let who = crate::audit::agent_who(&agent);
        let wire = self.record_agent(agent, &svid).await?;
        let now = self.shared.now();
        let rec = crate::audit::x509(ferrid_audit::RecordKind::Issuance, who, &wire, "agent-svid", None, now);
        self.shared.audit(rec).await?;
        Ok(Response::new(pb::RenewAgentResponse { svid: Some(wire) }))
    }

    async fn batch_mint_x509_svids(
        &self,
        request: Request<pb::BatchMintX509SvidsRequest>,
    ) -> Result<Response<pb::BatchMintX509SvidsResponse>, Status> {
        let agent = self.authenticate(&request)?;
        let params = request.into_inner().params;
        self.shared.check_batch(params.len(), "CSRs")?;
        let mut records = Vec::with_capacity(params.len());
        let results = params
            .into_iter()
            .map(|p| match self.mint_x509(&agent, &p.entry_id, &p.csr) {
                Ok((svid, rec)) => {
                    records.push(rec);
                    pb::X509SvidResult { entry_id: p.entry_id, svid: Some(svid), ..Default::default() }
                }
                Err(s) => pb::X509SvidResult {
                    entry_id: p.entry_id,
                    svid: None,
                    error_code: s.code() as i32,
                    error_message: s.message().to_owned(),
                },
            })
            .collect();
        self.shared.audit_all(records).await?;
        self.still_admitted(&agent)?;
        Ok(Response::new(pb::BatchMintX509SvidsResponse { results }))
    }

    async fn mint_jwt_svid(
        &self,
        request: Request<pb::MintJwtSvidRequest>,
    ) -> Result<Response<pb::MintJwtSvidResponse>, Status> {
        let agent = self.authenticate(&request)?;
        let (svid, rec) = self.mint_jwt(&agent, &request.into_inner())?;
        self.shared.audit(rec).await?;
        self.still_admitted(&agent)?;
        Ok(Response::new(pb::MintJwtSvidResponse { svid: Some(svid) }))
    }

    async fn batch_mint_jwt_svids(
        &self,
        request: Request<pb::BatchMintJwtSvidsRequest>,
    ) -> Result<Response<pb::BatchMintJwtSvidsResponse>, Status> {
        let agent = self.authenticate(&request)?;
        let params = request.into_inner().params;
        self.shared.check_batch(params.len(), "JWT-SVID requests")?;
        let mut records = Vec::with_capacity(params.len());
        let results = params
            .into_iter()
            .map(|p| match self.mint_jwt(&agent, &p) {
                Ok((svid, rec)) => {
                    records.push(rec);
                    pb::JwtSvidResult { entry_id: p.entry_id, svid: Some(svid), ..Default::default() }
                }
                Err(s) => pb::JwtSvidResult {
                    entry_id: p.entry_id,
                    svid: None,
                    error_code: s.code() as i32,
                    error_message: s.message().to_owned(),
                },
            })
            .collect();
        self.shared.audit_all(records).await?;
        self.still_admitted(&agent)?;
        Ok(Response::new(pb::BatchMintJwtSvidsResponse { results }))
    }

    async fn watch_authorized(
        &self,
        request: Request<pb::WatchAuthorizedRequest>,
    ) -> Result<Response<Self::WatchAuthorizedStream>, Status> {
        let agent = self.authenticate(&request)?;
        let this = self.clone();
        let (mut sent, mut last) = (0, None);
        Ok(Response::new(Box::pin(ferrid_tls::serving::state_stream(
            self.shared.subscribe(),
            self.stop.clone(),
            "server shutting down",
            move || this.watch_state(&agent.spiffe_id, &mut sent, &mut last),
        ))))
    }

    async fn mint_wit_svid(
        &self,
        request: Request<pb::MintWitSvidRequest>,
    ) -> Result<Response<pb::MintWitSvidResponse>, Status> {
        let agent = self.authenticate(&request)?;
        let req = request.into_inner();
        let entry = self.authorized_entry(&agent, &req.entry_id, None)?;
        let ttl = self.jwt_ttl(req.ttl, &entry);
        self.decide_issue(
            &agent,
            &entry,
            ferrid_policy::CredentialKind::Wit,
            &[],
            Some(ttl.unwrap_or(self.shared.cfg.raw.svid.jwt_ttl)),
        )?;
        let started = Instant::now();
        let svid = self
            .shared
            .ca
            .mint_wit_svid(&WitSvidRequest {
                spiffe_id: &entry.spiffe_id,
                public_key_jwk: &req.public_key_jwk,
                ttl,
            })
            .map_err(|e| {
                self.shared.metrics.issue_failures.with_label_values(&["wit", "ca"]).inc();
                ca_status(e)
            })?;
        self.shared.metrics.issued.with_label_values(&["wit"]).inc();
        self.shared.metrics.latency.with_label_values(&["wit"]).observe(started.elapsed().as_secs_f64());
        tracing::debug!(spiffe_id = %entry.spiffe_id, entry = %entry.id, expires_at = svid.expires_at, "minted WIT-SVID");
        let who = crate::audit::entry_who(&agent, &entry);
        let id = entry.spiffe_id.to_string();
        let rec = crate::audit::jwt(
            ferrid_audit::RecordKind::Issuance,
            who,
            "wit-svid",
            &id,
            &svid.jti,
            &svid.kid,
            &[],
            svid.issued_at,
            svid.expires_at,
            Some(&entry),
        );
        self.shared.audit(rec).await?;
        self.still_admitted(&agent)?;
        Ok(Response::new(pb::MintWitSvidResponse {
            token: svid.token,
            spiffe_id: svid.spiffe_id.to_string(),
            expires_at: svid.expires_at,
            issued_at: svid.issued_at,
            jti: svid.jti,
            hint: entry.hint.clone(),
        }))
    }
}
