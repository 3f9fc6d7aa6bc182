//! Direct exchange (`ferrid.exchange.v1.Exchange`): a workload with no node agent (a CI
//! job) trades its platform's OIDC token for an SVID.
//!
//! The flow, in order, with nothing written until the end:
//!
//! 1. Route the token by its (unverified) `iss` to the attestor configured for that
//!    issuer; an unknown issuer is refused before any key is fetched.
//! 2. Attest: signature, issuer, audience, time, the provider's allow list.
//! 3. Match the entries parented to `spiffe://<td>/ferrid/exchange` whose selectors the
//!    token's selectors all satisfy; pick the one asked for (or the only one).
//! 4. Cap the lifetime: the request's, the entry's (or the server default) and the
//!    token's remaining life, whichever is shortest.
//! 5. Mint (this also validates the CSR), then record the token's replay key: a bad
//!    CSR does not burn a token, and a replayed token gets no credential.
use std::sync::Arc;
use std::time::Duration;

use ferrid_attest::{AttestError, NoChallenges, NodeAttestor};
use ferrid_ca::{JwtSvidRequest, X509SvidRequest};
use ferrid_proto::exchange::v1::{self as pb, exchange_server::Exchange};
use ferrid_store::StoreError;
use ferrid_types::{RegistrationEntry, Selector, SelectorSet, SpiffeId};
use tonic::{Request, Response, Status};

use crate::error::{attest_status, ca_status, store_status};
use crate::node::{bundle_to_proto, jwt_to_proto, x509_to_proto};
use crate::state::Shared;

/// Most audiences one JWT-SVID may name.
const MAX_AUDIENCES: usize = 16;

/// An attestor that accepts tokens from one issuer.
#[derive(Debug, Clone)]
pub(crate) struct ExchangeAttestor {
    /// The `iss` it verifies.
    pub(crate) issuer: String,
    /// The attestor.
    pub(crate) attestor: Arc<dyn NodeAttestor>,
}

/// The exchange service.
#[derive(Debug, Clone)]
pub(crate) struct ExchangeService {
    pub(crate) shared: Arc<Shared>,
}

impl ExchangeService {
    fn route(&self, token: &str) -> Result<Arc<dyn NodeAttestor>, Status> {
        let iss = ferrid_jwt::unverified_issuer(token)
            .map_err(|e| Status::invalid_argument(format!("token: {e}")))?;
        let all = &self.shared.exchange;
        all.iter().find(|a| a.issuer == iss).map(|a| a.attestor.clone()).ok_or_else(|| {
            if all.is_empty() {
                Status::failed_precondition(
                    "direct exchange is not enabled on this server (configure [github_actions], [gitlab_ci] or [[oidc]])",
                )
            } else {
                // The configured issuers are not echoed to an unauthenticated caller.
                let shown: String = iss.chars().take(200).collect();
                tracing::warn!(issuer = %shown, "exchange: no attestor for this token issuer");
                self.shared.metrics.attest_failures.with_label_values(&["exchange", "unknown_issuer"]).inc();
                Status::permission_denied(format!("no attestor is configured for token issuer {shown:?}"))
            }
        })
    }

    fn pick(
        &self,
        matches: Vec<Arc<RegistrationEntry>>,
        wanted: &str,
        selectors: &[String],
    ) -> Result<Arc<RegistrationEntry>, Status> {
        if matches.is_empty() {
            return Err(Status::permission_denied(format!(
                "no registration entry under {} matches this token's selectors [{}]",
                ferrid_types::exchange_parent_id(&self.shared.td),
                selectors.join(", ")
            )));
        }
        if !wanted.is_empty() {
            let id = SpiffeId::new(wanted)
                .map_err(|e| Status::invalid_argument(format!("spiffe_id {wanted:?}: {e}")))?;
            return matches
                .into_iter()
                .find(|e| e.spiffe_id == id)
                .ok_or_else(|| Status::permission_denied(format!("this token is not entitled to {id}")));
        }
        let distinct: std::collections::BTreeSet<String> =
            matches.iter().map(|e| e.spiffe_id.to_string()).collect();
        if distinct.len() > 1 {
            return Err(Status::failed_precondition(format!(
                "{} SPIFFE IDs match this token ({}); choose one with spiffe_id",
                distinct.len(),
                distinct.into_iter().collect::<Vec<_>>().join(", ")
            )));
        }
        Ok(matches.into_iter().next().expect("non-empty"))
    }
}

/// The shortest of the requested, the entry's (or default) and the remaining lifetimes.
fn lifetime(requested: i32, entry: u32, default: Duration, remaining: i64) -> Duration {
    let mut ttl = if entry > 0 { Duration::from_secs(u64::from(entry)) } else { default };
    if let Ok(r) = u64::try_from(requested)
        && r > 0
    {
        ttl = ttl.min(Duration::from_secs(r));
    }
    ttl.min(Duration::from_secs(u64::try_from(remaining).unwrap_or(0)))
}

impl ExchangeService {
    /// The acting workload: the caller itself (its X.509-SVID), or, when a node agent
    /// forwards for a workload it attested, the entry `entry_id` the agent is
    /// authorized for.
    fn actor<T>(&self, req: &Request<T>, entry_id: &str) -> Result<crate::delegation::Actor, Status> {
        let leaf = crate::node::caller(req)?;
        crate::revocation::check_peer(&self.shared, leaf)?;
        let id = leaf.spiffe_id.clone();
        if entry_id.is_empty() {
            return crate::delegation::actor(&self.shared, id)
                .map_err(crate::delegation::OAuthError::into_status);
        }
        let agent = self.shared.agent(&id).filter(|a| !a.banned).ok_or_else(|| {
            Status::permission_denied(format!(
                "entry_id is for node agents forwarding for a workload; {id} is not one"
            ))
        })?;
        let entries = self.shared.entries();
        let entry =
            entries.authorize(&agent, &self.shared.server_id, entry_id, self.shared.now()).ok_or_else(
                || Status::permission_denied(format!("agent {id} is not authorized for entry {entry_id:?}")),
            )?;
        crate::delegation::actor(&self.shared, entry.spiffe_id.clone())
            .map_err(crate::delegation::OAuthError::into_status)
    }
}

#[tonic::async_trait]
impl Exchange for ExchangeService {
    async fn exchange_token(
        &self,
        request: Request<pb::TokenExchangeRequest>,
    ) -> Result<Response<pb::TokenExchangeResponse>, Status> {
        let actor = self.actor(&request, &request.get_ref().entry_id)?;
        let issued = crate::delegation::exchange(&self.shared, &actor, request.get_ref()).await?;
        Ok(Response::new(issued.response))
    }

    async fn issue_task_token(
        &self,
        request: Request<pb::TaskTokenRequest>,
    ) -> Result<Response<pb::TokenExchangeResponse>, Status> {
        let actor = self.actor(&request, &request.get_ref().entry_id)?;
        let issued = crate::delegation::task_token(&self.shared, &actor, request.get_ref()).await?;
        Ok(Response::new(issued.response))
    }

    async fn exchange_svid(
        &self,
        request: Request<pb::ExchangeSvidRequest>,
    ) -> Result<Response<pb::ExchangeSvidResponse>, Status> {
        let shared = &self.shared;
        let req = request.into_inner();
        if req.csr.is_empty() && req.jwt_audience.is_empty() {
            return Err(Status::invalid_argument(
                "ask for at least one credential: a CSR for an X.509-SVID and/or a JWT audience",
            ));
        }
        if req.jwt_audience.len() > MAX_AUDIENCES || req.jwt_audience.iter().any(String::is_empty) {
            return Err(Status::invalid_argument(format!(
                "jwt_audience: 1 to {MAX_AUDIENCES} non-empty audiences"
            )));
        }
        if req.ttl < 0 {
            return Err(Status::invalid_argument("ttl must not be negative"));
        }
        let token = req.token.trim();
        if token.len() > ferrid_jwt::MAX_TOKEN_BYTES {
            return Err(attest_status(&AttestError::TooLarge {
                limit: ferrid_jwt::MAX_TOKEN_BYTES,
                got: token.len(),
            }));
        }
        let attestor = self.route(token)?;
        let name = attestor.name();
        let fail = |e: AttestError| {
            shared.metrics.attest_failures.with_label_values(&[name, e.reason()]).inc();
            tracing::warn!(attestor = name, reason = e.reason(), error = %e, "exchange: token refused");
            shared.deny(crate::audit::evidence_denial(name, token.as_bytes(), None), attest_status(&e))
        };
        let attested =
            attestor.attest(token.as_bytes(), &mut NoChallenges, shared.clock.now()).await.map_err(fail)?;
        let now = shared.now();
        let parts: Vec<&str> = attested.agent_path.iter().map(String::as_str).collect();
        let attested_id = ferrid_types::agent_id(&shared.td, name, &parts)
            .map_err(|e| Status::internal(format!("attestor {name} produced an invalid ID: {e}")))?;
        let mut set = SelectorSet::new();
        for v in &attested.selectors {
            set.insert(Selector::new(name, v.clone()).map_err(|e| {
                Status::internal(format!("attestor {name} produced an invalid selector: {e}"))
            })?);
        }
        let selectors: Vec<String> = set.iter().map(ToString::to_string).collect();
        let parent = ferrid_types::exchange_parent_id(&shared.td);
        let entry = self.pick(shared.entries().matching(&parent, &set, now), &req.spiffe_id, &selectors)?;

        // One second off: the CA reads its own clock a moment later and counts the
        // lifetime from then, which must still end by the token's `exp`.
        let remaining = attested.evidence_expires_at.map_or(i64::MAX, |exp| exp.saturating_sub(now) - 1);
        if remaining < 1 {
            return Err(fail(AttestError::Expired(
                "the token expires now; ask the platform for a fresh one".into(),
            )));
        }
        let svid_cfg = &shared.cfg.raw.svid;
        let who = crate::policy::Who {
            spiffe_id: attested_id.to_string(),
            selectors: selectors.clone(),
            attestor: name,
            model: entry.authority_model(),
        };
        for (kind, wanted, aud, ttl) in [
            (ferrid_policy::CredentialKind::X509, !req.csr.is_empty(), &[][..], entry.x509_svid_ttl),
            (
                ferrid_policy::CredentialKind::Jwt,
                !req.jwt_audience.is_empty(),
                &req.jwt_audience[..],
                entry.jwt_svid_ttl,
            ),
        ] {
            if wanted {
                let default = if kind == ferrid_policy::CredentialKind::X509 {
                    svid_cfg.x509_ttl
                } else {
                    svid_cfg.jwt_ttl
                };
                crate::policy::decide(
                    shared,
                    ferrid_policy::Action::Issue,
                    &who,
                    &entry.spiffe_id.to_string(),
                    kind,
                    aud,
                    Some(lifetime(req.ttl, ttl, default, remaining)),
                    crate::policy::Facts::default(),
                )?;
            }
        }
        let x509 = if req.csr.is_empty() {
            None
        } else {
            let ttl = lifetime(req.ttl, entry.x509_svid_ttl, svid_cfg.x509_ttl, remaining);
            let svid = shared
                .ca
                .mint_x509_svid(&X509SvidRequest {
                    csr_der: &req.csr,
                    spiffe_id: &entry.spiffe_id,
                    ttl: Some(ttl),
                    dns_names: &entry.dns_names,
                })
                .map_err(ca_status)?;
            Some(x509_to_proto(&svid, Some(&entry)))
        };
        let jwt = if req.jwt_audience.is_empty() {
            None
        } else {
            let ttl = lifetime(req.ttl, entry.jwt_svid_ttl, svid_cfg.jwt_ttl, remaining);
            let svid = shared
                .ca
                .mint_jwt_svid(&JwtSvidRequest {
                    spiffe_id: &entry.spiffe_id,
                    audience: &req.jwt_audience,
                    ttl: Some(ttl),
                    extra_claims: None,
                })
                .map_err(ca_status)?;
            Some(jwt_to_proto(&svid, &entry.hint))
        };
        if let Some(key) = &attested.replay_key {
            match shared.store.record_replay(key, attested.replay_expires_at.max(now + 1), now).await {
                Ok(()) => {}
                Err(StoreError::AlreadyExists(_)) => {
                    return Err(fail(AttestError::Replayed("this token has already been exchanged".into())));
                }
                Err(e) => return Err(store_status(e)),
            }
        }
        let who = crate::audit::attested_who(&attested_id, name, &selectors, token.as_bytes());
        let recs = crate::audit::exchanged(who, &entry, x509.as_ref(), jwt.as_ref(), &req.jwt_audience, now);
        shared.audit_all(recs).await?;
        if x509.is_some() {
            shared.metrics.issued.with_label_values(&["x509"]).inc();
        }
        if jwt.is_some() {
            shared.metrics.issued.with_label_values(&["jwt"]).inc();
        }
        shared.metrics.attestations.with_label_values(&[name]).inc();
        tracing::info!(
            attestor = name,
            attested = %attested_id,
            spiffe_id = %entry.spiffe_id,
            entry = %entry.id,
            x509 = x509.is_some(),
            jwt = jwt.is_some(),
            "exchanged a token for an SVID"
        );
        Ok(Response::new(pb::ExchangeSvidResponse {
            x509_svid: x509,
            jwt_svid: jwt,
            bundle: Some(bundle_to_proto(&shared.bundle())),
            attestor: name.to_owned(),
            attested_id: attested_id.to_string(),
            selectors,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lifetime_is_the_shortest_of_all_bounds() {
        let d = Duration::from_secs(3600);
        assert_eq!(lifetime(0, 0, d, i64::MAX), d);
        assert_eq!(lifetime(0, 600, d, i64::MAX), Duration::from_secs(600));
        assert_eq!(lifetime(120, 600, d, i64::MAX), Duration::from_secs(120));
        assert_eq!(lifetime(900, 600, d, i64::MAX), Duration::from_secs(600));
        assert_eq!(lifetime(0, 600, d, 45), Duration::from_secs(45));
        assert_eq!(lifetime(-5, 0, d, 10), Duration::from_secs(10));
    }
}
