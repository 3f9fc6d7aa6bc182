//! The agent's side of node attestation: which evidence to present, and the answers to
//! the server attestor's challenges.

use crate::config::AgentConfig;

/// Evidence of one node attestor, gathered on this node.
#[async_trait::async_trait]
pub(crate) trait Evidence: Send + Sync {
    /// The attestor's name, as the server knows it.
    fn name(&self) -> &'static str;
    /// The first message's payload. Read afresh on every attestation (tokens rotate).
    async fn payload(&self) -> Result<Vec<u8>, String>;
    /// The answer to a challenge from the server's attestor.
    async fn respond(&self, _challenge: &[u8]) -> Result<Vec<u8>, String> {
        Err(format!("the {} attestor sent an unexpected challenge", self.name()))
    }
}

struct JoinToken {
    token: Option<String>,
    file: Option<std::path::PathBuf>,
}

#[async_trait::async_trait]
impl Evidence for JoinToken {
    fn name(&self) -> &'static str {
        "join_token"
    }

    async fn payload(&self) -> Result<Vec<u8>, String> {
        let token = match &self.file {
            Some(p) => std::fs::read_to_string(p)
                .map_err(|e| format!("reading join_token_file {}: {e}", p.display()))?,
            None => self
                .token
                .clone()
                .ok_or("this agent has no SVID yet and no join_token (or join_token_file) to attest with")?,
        };
        Ok(token.trim().as_bytes().to_vec())
    }
}

struct K8sPsat {
    cluster: String,
    token_path: std::path::PathBuf,
}

#[async_trait::async_trait]
impl Evidence for K8sPsat {
    fn name(&self) -> &'static str {
        "k8s_psat"
    }

    async fn payload(&self) -> Result<Vec<u8>, String> {
        let token = std::fs::read_to_string(&self.token_path)
            .map_err(|e| format!("reading the service-account token {}: {e}", self.token_path.display()))?;
        Ok(ferrid_attest_k8s_psat::payload(&self.cluster, &token))
    }
}

struct AwsIid(ferrid_attest_aws_iid::agent::AgentConfig);

#[async_trait::async_trait]
impl Evidence for AwsIid {
    fn name(&self) -> &'static str {
        ferrid_attest_aws_iid::NAME
    }

    async fn payload(&self) -> Result<Vec<u8>, String> {
        ferrid_attest_aws_iid::agent::collect(&self.0).await
    }
}

struct GcpIit(ferrid_attest_gcp_iit::agent::AgentConfig);

#[async_trait::async_trait]
impl Evidence for GcpIit {
    fn name(&self) -> &'static str {
        ferrid_attest_gcp_iit::NAME
    }

    async fn payload(&self) -> Result<Vec<u8>, String> {
        ferrid_attest_gcp_iit::agent::collect(&self.0).await
    }
}

/// Azure: the server challenges with a nonce, answered with the IMDS attested document
/// fetched with it.
struct Azure(ferrid_attest_azure::agent::AgentConfig);

#[async_trait::async_trait]
impl Evidence for Azure {
    fn name(&self) -> &'static str {
        ferrid_attest_azure::NAME
    }

    async fn payload(&self) -> Result<Vec<u8>, String> {
        ferrid_attest_azure::agent::initial_payload(&self.0).await
    }

    async fn respond(&self, challenge: &[u8]) -> Result<Vec<u8>, String> {
        ferrid_attest_azure::agent::respond(&self.0, challenge).await
    }
}

/// The evidence this agent presents: the configured platform attestor, else the join
/// token.
pub(crate) fn evidence(cfg: &AgentConfig) -> Result<Box<dyn Evidence>, String> {
    if let Some(c) = &cfg.aws_iid {
        return Ok(Box::new(AwsIid(c.clone())));
    }
    if let Some(c) = &cfg.gcp_iit {
        return Ok(Box::new(GcpIit(c.clone())));
    }
    if let Some(c) = &cfg.azure {
        return Ok(Box::new(Azure(c.clone())));
    }
    if let Some(psat) = &cfg.k8s_psat {
        return Ok(Box::new(K8sPsat { cluster: psat.cluster.clone(), token_path: psat.token_path.clone() }));
    }
    Ok(Box::new(JoinToken { token: cfg.join_token.clone(), file: cfg.join_token_file.clone() }))
}
