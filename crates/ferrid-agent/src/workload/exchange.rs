//! Token exchange for workloads through the agent (`ferrid.exchange.v1.AgentExchange`,
//! on the Workload API socket beside the SPIFFE Workload API). The agent attests the
//! caller exactly as for the Workload API, picks which of its identities acts, and
//! forwards to the server over its own mutual TLS naming that entry; the server checks
//! that this agent is authorized for the entry and decides as for any actor.
use ferrid_proto::exchange::v1::{self as xpb, agent_exchange_server::AgentExchange};
use ferrid_types::RegistrationEntry;
use tonic::{Request, Response, Status};

use super::WorkloadService;

impl WorkloadService {
    /// The caller's identity that acts: the one named, or the only one it has.
    fn acting_entry(
        &self,
        sels: &ferrid_types::SelectorSet,
        wanted: &str,
    ) -> Result<RegistrationEntry, Status> {
        let mut matches = self.matching(sels);
        if matches.is_empty() {
            return Err(Self::no_identity());
        }
        if !wanted.is_empty() {
            return matches
                .into_iter()
                .find(|e| e.spiffe_id.to_string() == wanted)
                .ok_or_else(|| Status::permission_denied(format!("the caller is not issued {wanted}")));
        }
        matches.sort_by_key(|e| e.spiffe_id.to_string());
        matches.dedup_by(|a, b| a.spiffe_id == b.spiffe_id);
        if matches.len() > 1 {
            let ids: Vec<String> = matches.iter().map(|e| e.spiffe_id.to_string()).collect();
            return Err(Status::failed_precondition(format!(
                "the caller has {} identities ({}); choose one with spiffe_id",
                ids.len(),
                ids.join(", ")
            )));
        }
        Ok(matches.remove(0))
    }

    fn exchange_client(
        &self,
    ) -> Result<xpb::exchange_client::ExchangeClient<tonic::transport::Channel>, Status> {
        self.shared
            .exchange
            .load_full()
            .as_ref()
            .clone()
            .ok_or_else(|| Status::unavailable("the agent cannot reach the server right now; retry shortly"))
    }
}

#[tonic::async_trait]
impl AgentExchange for WorkloadService {
    async fn exchange_token(
        &self,
        request: Request<xpb::AgentTokenExchangeRequest>,
    ) -> Result<Response<xpb::TokenExchangeResponse>, Status> {
        let sels = self.admit(&request).await?;
        let xpb::AgentTokenExchangeRequest { request: inner, spiffe_id } = request.into_inner();
        let mut inner = inner.ok_or_else(|| Status::invalid_argument("request is required"))?;
        inner.entry_id = self.acting_entry(&sels, &spiffe_id)?.id.0;
        self.exchange_client()?.exchange_token(inner).await
    }

    async fn issue_task_token(
        &self,
        request: Request<xpb::AgentTaskTokenRequest>,
    ) -> Result<Response<xpb::TokenExchangeResponse>, Status> {
        let sels = self.admit(&request).await?;
        let xpb::AgentTaskTokenRequest { request: inner, spiffe_id } = request.into_inner();
        let mut inner = inner.ok_or_else(|| Status::invalid_argument("request is required"))?;
        inner.entry_id = self.acting_entry(&sels, &spiffe_id)?.id.0;
        self.exchange_client()?.issue_task_token(inner).await
    }
}
