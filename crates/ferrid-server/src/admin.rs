//! The admin API, served on a local Unix socket. Every call first checks the caller's
//! user ID (SO_PEERCRED): only the server's own user, root, and configured UIDs pass.
use std::sync::Arc;
use std::time::Duration;

use ferrid_ca::{JwtSvidRequest, X509SvidRequest};
use ferrid_proto::admin::v1::{self as pb, admin_server::Admin};
use ferrid_proto::types::v1 as tpb;
use ferrid_store::EntryFilter;
use ferrid_types::{EntryId, SpiffeId};
use tonic::{Request, Response, Status};

use crate::error::{ca_status, store_status};
use crate::node::{bundle_to_proto, jwt_to_proto, x509_to_proto};
use crate::state::Shared;
use crate::tls::UdsPeer;

/// Longest join-token lifetime an operator may ask for.
const MAX_JOIN_TOKEN_TTL: Duration = Duration::from_secs(7 * 24 * 3600);

/// The admin service.
#[derive(Debug, Clone)]
pub(crate) struct AdminService {
    pub(crate) shared: Arc<Shared>,
}

/// Whether `uid` may use the admin API of a server running as `server_uid`.
pub(crate) fn uid_allowed(uid: Option<u32>, server_uid: u32, extra: &[u32]) -> bool {
    matches!(uid, Some(u) if u == server_uid || u == 0 || extra.contains(&u))
}

fn parse_id(field: &str, s: &str) -> Result<SpiffeId, Status> {
    SpiffeId::new(s)
        .map_err(|e| Status::invalid_argument(format!("{field} {s:?} is not a valid SPIFFE ID: {e}")))
}

impl AdminService {
    fn authorize<T>(&self, req: &Request<T>) -> Result<(), Status> {
        let uid = req.extensions().get::<UdsPeer>().and_then(|p| p.uid);
        let me = nix::unistd::geteuid().as_raw();
        if uid_allowed(uid, me, &self.shared.cfg.raw.admin_allowed_uids) {
            Ok(())
        } else {
            tracing::warn!(?uid, "admin call refused");
            Err(Status::permission_denied(format!(
                "user {} may not use the admin API (allowed: the server's user {me}, root, and admin_allowed_uids)",
                uid.map_or("<unknown>".to_owned(), |u| u.to_string())
            )))
        }
    }

    fn check_entry(&self, wire: Option<tpb::Entry>) -> Result<ferrid_types::RegistrationEntry, Status> {
        let wire = wire.ok_or_else(|| Status::invalid_argument("entry is missing"))?;
        let entry =
            ferrid_proto::entry_from_proto(&wire).map_err(|e| Status::invalid_argument(e.to_string()))?;
        entry.validate(&self.shared.td).map_err(|e| Status::invalid_argument(e.to_string()))?;
        let max = self.shared.cfg.raw.svid.max_ttl.as_secs();
        for (field, ttl) in [("x509_svid_ttl", entry.x509_svid_ttl), ("jwt_svid_ttl", entry.jwt_svid_ttl)] {
            if u64::from(ttl) > max {
                return Err(Status::invalid_argument(format!(
                    "{field} {ttl}s exceeds the server maximum of {max}s (svid.max_ttl)"
                )));
            }
        }
        Ok(entry)
    }

    fn requested_ttl(&self, secs: i32) -> Result<Option<Duration>, Status> {
        match u64::try_from(secs) {
            Ok(0) => Ok(None),
            Ok(s) => Ok(Some(Duration::from_secs(s))),
            Err(_) => Err(Status::invalid_argument("ttl must not be negative")),
        }
    }

    fn in_domain(&self, id: SpiffeId) -> Result<SpiffeId, Status> {
        if id.is_member_of(&self.shared.td) {
            Ok(id)
        } else {
            Err(Status::invalid_argument(format!("{id} is not in trust domain {}", self.shared.td)))
        }
    }
}

#[tonic::async_trait]
impl Admin for AdminService {
    async fn create_entry(
        &self,
        request: Request<pb::CreateEntryRequest>,
    ) -> Result<Response<tpb::Entry>, Status> {
        self.authorize(&request)?;
        let mut entry = self.check_entry(request.into_inner().entry)?;
        entry.id = EntryId(uuid::Uuid::new_v4().to_string());
        entry.created_at = self.shared.now();
        entry.revision = 1;
        let saved = self.shared.create_entry(entry).await.map_err(store_status)?;
        self.shared.metrics.entries.inc();
        tracing::info!(entry = %saved.id, spiffe_id = %saved.spiffe_id, parent = %saved.parent_id, "entry created");
        Ok(Response::new(ferrid_proto::entry_to_proto(&saved)))
    }

    async fn batch_create_entry(
        &self,
        request: Request<pb::BatchCreateEntryRequest>,
    ) -> Result<Response<pb::BatchCreateEntryResponse>, Status> {
        self.authorize(&request)?;
        let wire = request.into_inner().entries;
        self.shared.check_batch(wire.len(), "entries")?;
        let now = self.shared.now();
        // Invalid entries are answered here; the valid ones go to the datastore together.
        let mut results: Vec<Option<Result<tpb::Entry, Status>>> = Vec::with_capacity(wire.len());
        let mut valid = Vec::new();
        for w in wire {
            match self.check_entry(Some(w)) {
                Ok(mut e) => {
                    e.id = EntryId(uuid::Uuid::new_v4().to_string());
                    e.created_at = now;
                    e.revision = 1;
                    valid.push(e);
                    results.push(None);
                }
                Err(s) => results.push(Some(Err(s))),
            }
        }
        let mut saved = self.shared.create_entries(valid).await.map_err(store_status)?.into_iter();
        let mut created = 0;
        let results = results
            .into_iter()
            .map(|r| {
                let r = r.unwrap_or_else(|| match saved.next() {
                    Some(Ok(e)) => {
                        created += 1;
                        Ok(ferrid_proto::entry_to_proto(&e))
                    }
                    Some(Err(e)) => Err(store_status(e)),
                    None => Err(Status::internal("the datastore answered fewer entries than it was given")),
                });
                match r {
                    Ok(entry) => pb::EntryResult { entry: Some(entry), ..Default::default() },
                    Err(s) => pb::EntryResult {
                        entry: None,
                        error_code: s.code() as i32,
                        error_message: s.message().to_owned(),
                    },
                }
            })
            .collect::<Vec<_>>();
        self.shared.metrics.entries.add(created);
        tracing::info!(created, refused = results.len() as i64 - created, "entries created in a batch");
        Ok(Response::new(pb::BatchCreateEntryResponse { results }))
    }

    async fn update_entry(
        &self,
        request: Request<pb::UpdateEntryRequest>,
    ) -> Result<Response<tpb::Entry>, Status> {
        self.authorize(&request)?;
        let entry = self.check_entry(request.into_inner().entry)?;
        if entry.id.0.is_empty() {
            return Err(Status::invalid_argument("entry id is required for an update"));
        }
        let expected = (entry.revision != 0).then_some(entry.revision);
        let saved = self.shared.update_entry(entry, expected).await.map_err(store_status)?;
        tracing::info!(entry = %saved.id, revision = saved.revision, "entry updated");
        Ok(Response::new(ferrid_proto::entry_to_proto(&saved)))
    }

    async fn delete_entry(
        &self,
        request: Request<pb::DeleteEntryRequest>,
    ) -> Result<Response<tpb::Entry>, Status> {
        self.authorize(&request)?;
        let id = EntryId(request.into_inner().id);
        let gone = self.shared.delete_entry(&id).await.map_err(store_status)?;
        self.shared.metrics.entries.dec();
        tracing::info!(entry = %gone.id, "entry deleted");
        Ok(Response::new(ferrid_proto::entry_to_proto(&gone)))
    }

    async fn get_entry(&self, request: Request<pb::GetEntryRequest>) -> Result<Response<tpb::Entry>, Status> {
        self.authorize(&request)?;
        let id = EntryId(request.into_inner().id);
        let idx = self.shared.entries();
        let e = idx.by_id.get(&id).ok_or_else(|| Status::not_found(format!("entry {id} not found")))?;
        Ok(Response::new(ferrid_proto::entry_to_proto(e)))
    }

    async fn list_entries(
        &self,
        request: Request<pb::ListEntriesRequest>,
    ) -> Result<Response<pb::ListEntriesResponse>, Status> {
        self.authorize(&request)?;
        let r = request.into_inner();
        let filter = EntryFilter {
            spiffe_id: (!r.spiffe_id.is_empty()).then(|| parse_id("spiffe_id", &r.spiffe_id)).transpose()?,
            parent_id: (!r.parent_id.is_empty()).then(|| parse_id("parent_id", &r.parent_id)).transpose()?,
            selector: r
                .selector
                .as_ref()
                .map(|s| {
                    ferrid_proto::selector_from_proto(s).map_err(|e| Status::invalid_argument(e.to_string()))
                })
                .transpose()?,
        };
        let entries = self.shared.store.list_entries(&filter).await.map_err(store_status)?;
        Ok(Response::new(pb::ListEntriesResponse {
            entries: entries.iter().map(ferrid_proto::entry_to_proto).collect(),
        }))
    }

    async fn create_join_token(
        &self,
        request: Request<pb::CreateJoinTokenRequest>,
    ) -> Result<Response<pb::CreateJoinTokenResponse>, Status> {
        self.authorize(&request)?;
        let ttl = match u64::try_from(request.into_inner().ttl) {
            Ok(0) => self.shared.cfg.raw.join_token.default_ttl,
            Ok(s) if Duration::from_secs(s) <= MAX_JOIN_TOKEN_TTL => Duration::from_secs(s),
            Ok(s) => {
                return Err(Status::invalid_argument(format!(
                    "ttl {s}s is longer than the maximum of {}s",
                    MAX_JOIN_TOKEN_TTL.as_secs()
                )));
            }
            Err(_) => return Err(Status::invalid_argument("ttl must not be negative")),
        };
        if !self.shared.cfg.raw.join_token.enabled {
            return Err(Status::failed_precondition(
                "the join_token attestor is disabled (join_token.enabled = false)",
            ));
        }
        let now = self.shared.now();
        let secs = i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX);
        let t = ferrid_attest_join_token::generate(now, secs);
        self.shared.store.create_join_token(&t.record).await.map_err(store_status)?;
        let agent_id = ferrid_types::agent_id(&self.shared.td, "join_token", &[t.record.id.as_str()])
            .map_err(|e| Status::internal(e.to_string()))?;
        tracing::info!(token_id = %t.record.id, expires_at = t.record.expires_at, "join token created");
        Ok(Response::new(pb::CreateJoinTokenResponse {
            token: t.token.clone(),
            id: t.record.id.clone(),
            expires_at: t.record.expires_at,
            agent_id: agent_id.to_string(),
        }))
    }

    async fn list_agents(
        &self,
        request: Request<pb::ListAgentsRequest>,
    ) -> Result<Response<pb::ListAgentsResponse>, Status> {
        self.authorize(&request)?;
        let agents = self.shared.list_agents();
        Ok(Response::new(pb::ListAgentsResponse {
            agents: agents.iter().map(ferrid_proto::agent_to_proto).collect(),
        }))
    }

    async fn get_agent(&self, request: Request<pb::GetAgentRequest>) -> Result<Response<tpb::Agent>, Status> {
        self.authorize(&request)?;
        let id = parse_id("spiffe_id", &request.into_inner().spiffe_id)?;
        let a = self.shared.agent(&id).ok_or_else(|| Status::not_found(format!("agent {id} not found")))?;
        Ok(Response::new(ferrid_proto::agent_to_proto(&a)))
    }

    async fn evict_agent(
        &self,
        request: Request<pb::EvictAgentRequest>,
    ) -> Result<Response<tpb::Agent>, Status> {
        self.authorize(&request)?;
        let who = crate::audit::admin_who(&request);
        let id = parse_id("spiffe_id", &request.into_inner().spiffe_id)?;
        // Eviction is revocation by agent: the ban, its SVID and what it was issued.
        match crate::revocation::revoke(
            &self.shared,
            crate::revocation::Target::Agent(id.clone()),
            "agent evicted",
            who,
        )
        .await
        {
            Ok(_) => {}
            Err(s) if s.code() == tonic::Code::AlreadyExists => {}
            Err(s) => return Err(s),
        }
        let a = self.shared.agent(&id).ok_or_else(|| Status::not_found(format!("no agent {id}")))?;
        tracing::warn!(agent = %id, "agent evicted");
        Ok(Response::new(ferrid_proto::agent_to_proto(&a)))
    }

    async fn revoke(
        &self,
        request: Request<pb::RevokeRequest>,
    ) -> Result<Response<pb::RevokeResponse>, Status> {
        self.authorize(&request)?;
        let who = crate::audit::admin_who(&request);
        let r = request.into_inner();
        let target = crate::revocation::Target::from_proto(r.target)?;
        let (txn, records) = crate::revocation::revoke(&self.shared, target, r.reason.trim(), who).await?;
        Ok(Response::new(pb::RevokeResponse {
            txn,
            revocations: records.iter().map(crate::revocation::info).collect(),
        }))
    }

    async fn list_revocations(
        &self,
        request: Request<pb::ListRevocationsRequest>,
    ) -> Result<Response<pb::ListRevocationsResponse>, Status> {
        self.authorize(&request)?;
        let feed = self.shared.revocations.feed();
        Ok(Response::new(pb::ListRevocationsResponse {
            revocations: feed.records.iter().map(|r| crate::revocation::info(r)).collect(),
        }))
    }

    async fn get_bundle(
        &self,
        request: Request<pb::GetBundleRequest>,
    ) -> Result<Response<tpb::Bundle>, Status> {
        self.authorize(&request)?;
        Ok(Response::new(bundle_to_proto(&self.shared.bundle())))
    }

    async fn mint_x509_svid(
        &self,
        request: Request<pb::MintX509SvidRequest>,
    ) -> Result<Response<pb::MintX509SvidResponse>, Status> {
        self.authorize(&request)?;
        let who = crate::audit::admin_who(&request);
        let r = request.into_inner();
        let id = self.in_domain(parse_id("spiffe_id", &r.spiffe_id)?)?;
        let ttl = self.requested_ttl(r.ttl)?;
        let (key, csr) = if r.csr.is_empty() {
            let (key, csr) =
                ferrid_ca::generate_key_and_csr(self.shared.ca.config().key_algorithm, Some(&id))
                    .map_err(ca_status)?;
            (Some(key), csr)
        } else {
            (None, r.csr)
        };
        let svid = self
            .shared
            .ca
            .mint_x509_svid(&X509SvidRequest { csr_der: &csr, spiffe_id: &id, ttl, dns_names: &r.dns_names })
            .map_err(ca_status)?;
        self.shared.metrics.issued.with_label_values(&["x509"]).inc();
        tracing::info!(spiffe_id = %id, not_after = svid.not_after, "operator minted X.509-SVID");
        let wire = x509_to_proto(&svid, None);
        let now = self.shared.now();
        self.shared
            .audit(crate::audit::x509(ferrid_audit::RecordKind::Issuance, who, &wire, "x509-svid", None, now))
            .await?;
        Ok(Response::new(pb::MintX509SvidResponse {
            svid: Some(wire),
            private_key: key.map(|k| k.to_vec()).unwrap_or_default(),
            bundle: Some(bundle_to_proto(&self.shared.bundle())),
        }))
    }

    async fn mint_jwt_svid(
        &self,
        request: Request<pb::MintJwtSvidRequest>,
    ) -> Result<Response<tpb::JwtSvid>, Status> {
        self.authorize(&request)?;
        let who = crate::audit::admin_who(&request);
        let r = request.into_inner();
        let id = self.in_domain(parse_id("spiffe_id", &r.spiffe_id)?)?;
        let ttl = self.requested_ttl(r.ttl)?;
        let svid = self
            .shared
            .ca
            .mint_jwt_svid(&JwtSvidRequest { spiffe_id: &id, audience: &r.audience, ttl, extra_claims: None })
            .map_err(ca_status)?;
        self.shared.metrics.issued.with_label_values(&["jwt"]).inc();
        tracing::info!(spiffe_id = %id, jti = %svid.jti, "operator minted JWT-SVID");
        let rec = crate::audit::jwt(
            ferrid_audit::RecordKind::Issuance,
            who,
            "jwt-svid",
            &id.to_string(),
            &svid.jti,
            &svid.kid,
            &r.audience,
            svid.issued_at,
            svid.expires_at,
            None,
        );
        self.shared.audit(rec).await?;
        Ok(Response::new(jwt_to_proto(&svid, "")))
    }
}

#[cfg(test)]
mod tests {
    use super::uid_allowed;

    #[test]
    fn only_the_server_user_root_and_listed_uids_pass() {
        assert!(uid_allowed(Some(1000), 1000, &[]));
        assert!(uid_allowed(Some(0), 1000, &[]));
        assert!(uid_allowed(Some(2000), 1000, &[2000]));
        assert!(!uid_allowed(Some(2001), 1000, &[2000]));
        assert!(!uid_allowed(None, 1000, &[]));
    }
}
