//! The `aws_iid` node attestor: an agent on an EC2 instance proves which instance it
//! runs on with the instance identity document (IID) that the instance metadata
//! service (IMDS) serves, signed by AWS.
//!
//! The agent ([`agent::collect`]) fetches the document and one of its three proofs
//! over IMDSv2 and sends `{"document": "<the document, byte for byte>", "<proof>":
//! "<the proof, base64 as served>"}` ([`payload`]), where `<proof>` is one of
//!
//! - `rsa2048`: PKCS#7 SignedData, SHA-256 with RSA-2048, one certificate per region;
//! - `pkcs7`: the legacy PKCS#7 SignedData, SHA-1 with DSA, one global certificate;
//! - `signature`: RSA PKCS#1 v1.5 over the SHA-256 of the document (RSA-1024, one
//!   certificate per region).
//!
//! The server verifies the proof with the certificate AWS publishes for the region the
//! document names (built in, see `certs/README.md`; replaceable and extendable in
//! configuration), and for the PKCS#7 proofs that the signed content is the presented
//! document byte for byte. Then: the account must be on `accounts`, the region on
//! `regions` (when set), and the instance no older than `max_instance_age` (when set,
//! from `pendingTime`). The certificates' own validity dates are not checked: AWS still
//! signs with keys whose certificates have expired.
//!
//! Agent ID: `spiffe://<td>/ferrid/agent/aws_iid/<account>/<region>/<instance-id>`.
//! Selectors (`aws_iid:<value>`): `account:<id>`, `region:<region>`, `az:<zone>`,
//! `instance_id:<id>`, `image_id:<ami>`, `instance_type:<type>`, and with an
//! [`lookup::InstanceLookup`] plugged in, `tag:<key>:<value>` and `iam_role:<arn>`.
//!
//! The document never expires and any process on the instance can read it, so an
//! instance attests once (trust on first use): the replay key is
//! `aws_iid:<account>:<instance-id>`, kept forever, unless `allow_reattestation = true`.
#![forbid(unsafe_code)]

pub mod agent;
mod builtin;
pub mod lookup;
mod oid;
mod pkcs7;
mod trust;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use ferrid_attest::{AttestError, Attested, Challenger, MAX_PAYLOAD, NodeAttestor};
use serde::Deserialize;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::lookup::InstanceLookup;
use crate::trust::{ANY_REGION, TrustStore};

/// The attestor's name: selector type and agent-ID segment.
pub const NAME: &str = "aws_iid";

/// The largest identity document accepted, in bytes (real ones are about 500).
pub const MAX_DOCUMENT_BYTES: usize = 8 * 1024;

/// The largest proof accepted, in bytes of base64 text (an `rsa2048` proof is about
/// 1,500).
pub const MAX_PROOF_BYTES: usize = 16 * 1024;

/// Until when (Unix seconds, 9999-12-31T23:59:59Z) a first attestation's replay key is
/// kept: for ever, since an identity document never expires.
pub const REPLAY_KEPT_UNTIL: i64 = 253_402_300_799;

/// One of the three proofs of an instance identity document, named as in the IMDS
/// path `/latest/dynamic/instance-identity/<proof>`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Proof {
    /// PKCS#7 SignedData, SHA-256 with RSA-2048, per-region certificates.
    #[default]
    Rsa2048,
    /// Legacy PKCS#7 SignedData, SHA-1 with DSA, one global certificate.
    Pkcs7,
    /// Base64 RSA PKCS#1 v1.5 signature over the SHA-256 of the document, per-region
    /// RSA-1024 certificates.
    Signature,
}

impl Proof {
    /// Every proof.
    pub const ALL: [Proof; 3] = [Proof::Rsa2048, Proof::Pkcs7, Proof::Signature];

    /// The proof's name: its IMDS path segment and its key in the payload.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Rsa2048 => "rsa2048",
            Self::Pkcs7 => "pkcs7",
            Self::Signature => "signature",
        }
    }
}

impl std::fmt::Display for Proof {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A certificate to trust besides (or, with `builtin_certs = false`, instead of) AWS's
/// built-in ones: `[[aws_iid.extra_certs]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CertConfig {
    /// The proof it verifies.
    pub proof: Proof,
    /// The region whose documents it verifies, or `*` for every region (as AWS's DSA
    /// certificate for `pkcs7`).
    pub region: String,
    /// A PEM file with one or more certificates (read at start).
    #[serde(default)]
    pub pem_file: Option<PathBuf>,
    /// The PEM text itself, instead of `pem_file`.
    #[serde(default)]
    pub pem: Option<String>,
}

/// `[aws_iid]` in the server configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AwsIidConfig {
    /// AWS account IDs (12 digits) whose instances may attest. Required: any AWS
    /// customer can launch an instance and get a genuine signed document, so without
    /// this list anyone could join the trust domain.
    pub accounts: Vec<String>,
    /// Regions whose instances may attest; empty (the default): every region with a
    /// certificate.
    #[serde(default)]
    pub regions: Vec<String>,
    /// Proofs accepted; default all three.
    #[serde(default = "all_proofs")]
    pub proofs: Vec<Proof>,
    /// Let an instance attest again (no replay key). Off by default: the document
    /// never expires and any process on the instance can read it, so the first
    /// attestation wins and a second one is refused.
    #[serde(default)]
    pub allow_reattestation: bool,
    /// Refuse instances that entered the pending state longer ago than this
    /// (`pendingTime`), e.g. `"10m"`. Unset (the default): no limit.
    #[serde(default, with = "humantime_serde")]
    pub max_instance_age: Option<Duration>,
    /// Trust AWS's published certificates built into Ferrid (default `true`).
    #[serde(default = "yes")]
    pub builtin_certs: bool,
    /// More certificates, by proof and region.
    #[serde(default)]
    pub extra_certs: Vec<CertConfig>,
}

impl Default for AwsIidConfig {
    fn default() -> Self {
        Self {
            accounts: Vec::new(),
            regions: Vec::new(),
            proofs: all_proofs(),
            allow_reattestation: false,
            max_instance_age: None,
            builtin_certs: true,
            extra_certs: Vec::new(),
        }
    }
}

fn all_proofs() -> Vec<Proof> {
    Proof::ALL.to_vec()
}

fn yes() -> bool {
    true
}

/// What a verified identity document says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceIdentity {
    /// `accountId`.
    pub account: String,
    /// `region`.
    pub region: String,
    /// `instanceId`.
    pub instance_id: String,
    /// `availabilityZone`.
    pub availability_zone: Option<String>,
    /// `imageId`.
    pub image_id: Option<String>,
    /// `instanceType`.
    pub instance_type: Option<String>,
    /// `pendingTime`: when the instance last entered the pending state (launch or
    /// start).
    pub pending_time: Option<OffsetDateTime>,
    /// The proof it was verified with.
    pub proof: Proof,
}

/// What the agent sends.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Payload {
    document: String,
    #[serde(default)]
    rsa2048: Option<String>,
    #[serde(default)]
    pkcs7: Option<String>,
    #[serde(default)]
    signature: Option<String>,
}

/// Builds the agent's payload: the document exactly as IMDS served it and one proof,
/// as served (base64).
pub fn payload(document: &str, proof: Proof, value: &str) -> Vec<u8> {
    let mut m = serde_json::Map::new();
    m.insert("document".into(), document.into());
    m.insert(proof.as_str().into(), value.into());
    serde_json::Value::Object(m).to_string().into_bytes()
}

/// The fields of an identity document the attestor uses; AWS adds fields over time,
/// so others are ignored.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Document {
    account_id: String,
    instance_id: String,
    region: String,
    #[serde(default)]
    availability_zone: Option<String>,
    #[serde(default)]
    image_id: Option<String>,
    #[serde(default)]
    instance_type: Option<String>,
    #[serde(default)]
    pending_time: Option<String>,
}

fn valid_account(s: &str) -> bool {
    s.len() == 12 && s.bytes().all(|b| b.is_ascii_digit())
}

fn valid_region(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 32
        && !s.starts_with('-')
        && !s.ends_with('-')
        && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

fn valid_segment(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s != "."
        && s != ".."
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b))
}

fn decode_base64(what: &str, text: &str) -> Result<Vec<u8>, AttestError> {
    let clean: Vec<u8> = text.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
    base64::engine::general_purpose::STANDARD
        .decode(clean)
        .map_err(|e| AttestError::Malformed(format!("{what} proof is not base64: {e}")))
}

/// The attestor.
#[derive(Debug)]
pub struct AwsIidAttestor {
    accounts: BTreeSet<String>,
    regions: BTreeSet<String>,
    proofs: BTreeSet<Proof>,
    allow_reattestation: bool,
    max_instance_age: Option<Duration>,
    trust: TrustStore,
    lookup: Option<Arc<dyn InstanceLookup>>,
}

impl AwsIidAttestor {
    /// Checks `cfg` and loads the certificates (built-in ones and `extra_certs`, whose
    /// files are read now). Errors name the configuration key at fault. The attestor
    /// holds no clock: [`NodeAttestor::attest`] and [`Self::verify`] take `now`.
    pub fn from_config(cfg: &AwsIidConfig) -> Result<Self, String> {
        if cfg.accounts.is_empty() {
            return Err("aws_iid.accounts: list at least one AWS account ID; any AWS customer can produce a genuine identity document, so the account is what is trusted".into());
        }
        if let Some(bad) = cfg.accounts.iter().find(|a| !valid_account(a)) {
            return Err(format!("aws_iid.accounts: {bad:?} is not an AWS account ID (12 digits)"));
        }
        if let Some(bad) = cfg.regions.iter().find(|r| !valid_region(r)) {
            return Err(format!("aws_iid.regions: {bad:?} is not a region name such as \"us-east-1\""));
        }
        if cfg.proofs.is_empty() {
            return Err("aws_iid.proofs: list at least one of \"rsa2048\", \"pkcs7\", \"signature\"".into());
        }
        if cfg.max_instance_age == Some(Duration::ZERO) {
            return Err(
                "aws_iid.max_instance_age: must be longer than 0s (leave it unset for no limit)".into()
            );
        }
        let mut trust = if cfg.builtin_certs {
            TrustStore::builtin().map_err(|e| format!("aws_iid: built-in certificates: {e}"))?
        } else {
            TrustStore::default()
        };
        for (i, c) in cfg.extra_certs.iter().enumerate() {
            let key = format!("aws_iid.extra_certs[{i}]");
            if c.region != ANY_REGION && !valid_region(&c.region) {
                return Err(format!("{key}.region: {:?} is not a region name or \"*\"", c.region));
            }
            let (text, source) = match (&c.pem_file, &c.pem) {
                (Some(f), None) => (
                    std::fs::read_to_string(f)
                        .map_err(|e| format!("{key}.pem_file: reading {}: {e}", f.display()))?,
                    format!("{key} ({})", f.display()),
                ),
                (None, Some(p)) => (p.clone(), key.clone()),
                _ => return Err(format!("{key}: set exactly one of pem_file and pem")),
            };
            trust.add(c.proof, &c.region, trust::parse_pem(&text, &source)?)?;
        }
        let proofs: BTreeSet<Proof> = cfg.proofs.iter().copied().collect();
        if !proofs.iter().any(|p| trust.has_any(*p)) {
            return Err(
                "aws_iid: no certificate for any accepted proof (builtin_certs = false needs extra_certs)"
                    .into(),
            );
        }
        // A listed region needs a certificate of its own for an accepted proof (AWS's
        // global DSA certificate does not count, so typos are caught), unless the
        // operator configured a certificate for every region.
        let operator_wildcard =
            cfg.extra_certs.iter().any(|c| c.region == ANY_REGION && proofs.contains(&c.proof));
        for r in &cfg.regions {
            if !operator_wildcard && proofs.iter().all(|p| !trust.has_region(*p, r)) {
                return Err(format!(
                    "aws_iid.regions: no certificate for region {r:?} and the accepted proofs (a typo, or a region newer than this build: add its certificate under extra_certs)"
                ));
            }
        }
        Ok(Self {
            accounts: cfg.accounts.iter().cloned().collect(),
            regions: cfg.regions.iter().cloned().collect(),
            proofs,
            allow_reattestation: cfg.allow_reattestation,
            max_instance_age: cfg.max_instance_age,
            trust,
            lookup: None,
        })
    }

    /// Looks every verified instance up with `lookup` (for `tag:` and `iam_role:`
    /// selectors; an instance it does not find is refused).
    pub fn with_instance_lookup(mut self, lookup: Arc<dyn InstanceLookup>) -> Self {
        self.lookup = Some(lookup);
        self
    }

    /// Verifies a payload at `now` and applies the account, region and age policy,
    /// without the instance look-up; [`NodeAttestor::attest`] is this plus the look-up
    /// and the replay key.
    pub fn verify(&self, payload: &[u8], now: OffsetDateTime) -> Result<InstanceIdentity, AttestError> {
        if payload.len() > MAX_PAYLOAD {
            return Err(AttestError::TooLarge { limit: MAX_PAYLOAD, got: payload.len() });
        }
        let p: Payload = serde_json::from_slice(payload).map_err(|e| {
            AttestError::Malformed(format!(
                "expected {{\"document\": ..., and one of \"rsa2048\", \"pkcs7\", \"signature\"}}: {e}"
            ))
        })?;
        let (proof, text) = match (&p.rsa2048, &p.pkcs7, &p.signature) {
            (Some(t), None, None) => (Proof::Rsa2048, t),
            (None, Some(t), None) => (Proof::Pkcs7, t),
            (None, None, Some(t)) => (Proof::Signature, t),
            (None, None, None) => {
                return Err(AttestError::Malformed(
                    "no proof: send one of \"rsa2048\", \"pkcs7\", \"signature\" with the document".into(),
                ));
            }
            _ => return Err(AttestError::Malformed("more than one proof; send exactly one".into())),
        };
        if p.document.len() > MAX_DOCUMENT_BYTES {
            return Err(AttestError::TooLarge { limit: MAX_DOCUMENT_BYTES, got: p.document.len() });
        }
        if text.len() > MAX_PROOF_BYTES {
            return Err(AttestError::TooLarge { limit: MAX_PROOF_BYTES, got: text.len() });
        }
        if !self.proofs.contains(&proof) {
            return Err(AttestError::Rejected(format!(
                "proof {proof} is not accepted by this server (aws_iid.proofs)"
            )));
        }
        let proof_bytes = decode_base64(proof.as_str(), text)?;
        let doc: Document = serde_json::from_str(&p.document)
            .map_err(|e| AttestError::Malformed(format!("identity document: {e}")))?;
        if !valid_region(&doc.region) {
            return Err(AttestError::Malformed(format!(
                "identity document: region {:?} is not a region name",
                doc.region
            )));
        }
        let certs = self.trust.for_region(proof, &doc.region);
        if certs.is_empty() {
            return Err(AttestError::Rejected(format!(
                "no {proof} certificate for region {} on this server",
                doc.region
            )));
        }
        match proof {
            Proof::Rsa2048 | Proof::Pkcs7 => {
                let signed = pkcs7::parse(&proof_bytes)?;
                if signed.content != p.document.as_bytes() {
                    return Err(AttestError::Rejected(format!(
                        "the {proof} PKCS#7 signs a different document than the one presented"
                    )));
                }
                let rules = match proof {
                    Proof::Rsa2048 => pkcs7::Rules { sha1: false, min_rsa_bits: 2048, dsa: false },
                    _ => pkcs7::Rules { sha1: true, min_rsa_bits: 1024, dsa: true },
                };
                pkcs7::verify(&signed, &certs, rules)?;
            }
            Proof::Signature => {
                pkcs7::verify_rsa_signature(p.document.as_bytes(), &proof_bytes, &certs)?;
            }
        }
        if !self.accounts.contains(&doc.account_id) {
            return Err(AttestError::Rejected(format!(
                "account {} is not allowed to attest (aws_iid.accounts)",
                doc.account_id
            )));
        }
        if !self.regions.is_empty() && !self.regions.contains(&doc.region) {
            return Err(AttestError::Rejected(format!(
                "region {} is not allowed to attest (aws_iid.regions)",
                doc.region
            )));
        }
        let pending_time =
            match &doc.pending_time {
                None => None,
                Some(t) => Some(OffsetDateTime::parse(t, &Rfc3339).map_err(|e| {
                    AttestError::Malformed(format!("identity document: pendingTime {t:?}: {e}"))
                })?),
            };
        if let Some(max) = self.max_instance_age {
            let pending = pending_time.ok_or_else(|| {
                AttestError::Rejected(
                    "identity document has no pendingTime; aws_iid.max_instance_age needs it".into(),
                )
            })?;
            let age = now - pending;
            if age > max {
                return Err(AttestError::Expired(format!(
                    "instance {} entered the pending state at {} ({}s ago), longer ago than aws_iid.max_instance_age ({}s)",
                    doc.instance_id,
                    pending.format(&Rfc3339).unwrap_or_default(),
                    age.whole_seconds(),
                    max.as_secs()
                )));
            }
        }
        if !valid_segment(&doc.instance_id) {
            return Err(AttestError::Rejected(format!(
                "instance ID {:?} is not a valid ID segment",
                doc.instance_id
            )));
        }
        Ok(InstanceIdentity {
            account: doc.account_id,
            region: doc.region,
            instance_id: doc.instance_id,
            availability_zone: doc.availability_zone,
            image_id: doc.image_id,
            instance_type: doc.instance_type,
            pending_time,
            proof,
        })
    }
}

/// Selector values are at most this long (the host's limit).
const MAX_SELECTOR_VALUE: usize = 1024;

fn push_selector(out: &mut Vec<String>, s: String) {
    if s.len() <= MAX_SELECTOR_VALUE && !s.chars().any(char::is_control) {
        out.push(s);
    }
}

#[async_trait::async_trait]
impl NodeAttestor for AwsIidAttestor {
    fn name(&self) -> &'static str {
        NAME
    }

    async fn attest(
        &self,
        payload: &[u8],
        _challenger: &mut dyn Challenger,
        now: OffsetDateTime,
    ) -> Result<Attested, AttestError> {
        let id = self.verify(payload, now)?;
        let mut selectors = Vec::new();
        push_selector(&mut selectors, format!("account:{}", id.account));
        push_selector(&mut selectors, format!("region:{}", id.region));
        if let Some(az) = &id.availability_zone {
            push_selector(&mut selectors, format!("az:{az}"));
        }
        push_selector(&mut selectors, format!("instance_id:{}", id.instance_id));
        if let Some(ami) = &id.image_id {
            push_selector(&mut selectors, format!("image_id:{ami}"));
        }
        if let Some(t) = &id.instance_type {
            push_selector(&mut selectors, format!("instance_type:{t}"));
        }
        if let Some(lookup) = &self.lookup {
            let details = lookup.describe(&id).await?.ok_or_else(|| {
                AttestError::Rejected(format!(
                    "instance {} in account {} ({}) was not found by the EC2 API (terminated?)",
                    id.instance_id, id.account, id.region
                ))
            })?;
            for (k, v) in &details.tags {
                push_selector(&mut selectors, format!("tag:{k}:{v}"));
            }
            for arn in &details.iam_roles {
                push_selector(&mut selectors, format!("iam_role:{arn}"));
            }
        }
        let (replay_key, replay_expires_at) = if self.allow_reattestation {
            (None, 0)
        } else {
            (Some(format!("{NAME}:{}:{}", id.account, id.instance_id)), REPLAY_KEPT_UNTIL)
        };
        Ok(Attested {
            agent_path: vec![id.account, id.region, id.instance_id],
            selectors,
            can_reattest: self.allow_reattestation,
            replay_key,
            replay_expires_at,
            evidence_expires_at: None,
        })
    }
}
