//! Text and JSON rendering of admin API results, and the files `x509 mint` writes.
use std::path::Path;

use anyhow::{Context, Result};
use clap::ValueEnum;
use ferrid_proto::admin::v1 as pb;
use ferrid_proto::types::v1 as tpb;
use serde_json::{Value, json};

/// Output formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Output {
    /// Human-readable.
    Text,
    /// One JSON document.
    Json,
}

pub(crate) fn when(unix: i64) -> String {
    if unix == 0 {
        return "never".into();
    }
    time::OffsetDateTime::from_unix_timestamp(unix)
        .ok()
        .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
        .unwrap_or_else(|| unix.to_string())
}

fn selectors(s: &[tpb::Selector]) -> Vec<String> {
    s.iter().map(|s| format!("{}:{}", s.r#type, s.value)).collect()
}

fn entry_json(e: &tpb::Entry) -> Value {
    json!({
        "id": e.id, "spiffe_id": e.spiffe_id, "parent_id": e.parent_id,
        "selectors": selectors(&e.selectors), "x509_svid_ttl": e.x509_svid_ttl, "jwt_svid_ttl": e.jwt_svid_ttl,
        "dns_names": e.dns_names, "hint": e.hint, "admin": e.admin, "expires_at": e.expires_at,
        "metadata": e.metadata, "revision": e.revision, "created_at": e.created_at,
    })
}

fn agent_json(a: &tpb::Agent) -> Value {
    json!({
        "spiffe_id": a.spiffe_id, "attestor": a.attestor, "selectors": selectors(&a.selectors),
        "svid_serial": a.svid_serial, "svid_expires_at": a.svid_expires_at, "can_reattest": a.can_reattest,
        "banned": a.banned, "attested_at": a.attested_at, "last_seen": a.last_seen,
    })
}

fn ttl(secs: i32) -> String {
    if secs == 0 { "default".into() } else { format!("{secs}s") }
}

/// Prints entries.
pub(crate) fn entries(out: Output, es: &[tpb::Entry]) {
    match out {
        Output::Json => println!("{}", json!({ "entries": es.iter().map(entry_json).collect::<Vec<_>>() })),
        Output::Text => {
            if es.is_empty() {
                println!("No entries.");
            }
            for e in es {
                println!("Entry ID     : {}", e.id);
                println!("SPIFFE ID    : {}", e.spiffe_id);
                println!("Parent ID    : {}", e.parent_id);
                println!("Revision     : {}", e.revision);
                println!("X509-SVID TTL: {}", ttl(e.x509_svid_ttl));
                println!("JWT-SVID TTL : {}", ttl(e.jwt_svid_ttl));
                println!("Expires      : {}", when(e.expires_at));
                for s in selectors(&e.selectors) {
                    println!("Selector     : {s}");
                }
                for d in &e.dns_names {
                    println!("DNS name     : {d}");
                }
                if !e.hint.is_empty() {
                    println!("Hint         : {}", e.hint);
                }
                if e.admin {
                    println!("Admin        : true");
                }
                for (k, v) in &e.metadata {
                    println!("Metadata     : {k}={v}");
                }
                println!();
            }
        }
    }
}

/// Prints agents.
pub(crate) fn agents(out: Output, agents: &[tpb::Agent]) {
    match out {
        Output::Json => {
            println!("{}", json!({ "agents": agents.iter().map(agent_json).collect::<Vec<_>>() }))
        }
        Output::Text => {
            if agents.is_empty() {
                println!("No attested agents.");
            }
            for a in agents {
                println!("SPIFFE ID    : {}", a.spiffe_id);
                println!("Attestor     : {}", a.attestor);
                println!("SVID serial  : {}", a.svid_serial);
                println!("SVID expires : {}", when(a.svid_expires_at));
                println!("Attested at  : {}", when(a.attested_at));
                println!("Reattestable : {}", a.can_reattest);
                println!("Evicted      : {}", a.banned);
                for s in selectors(&a.selectors) {
                    println!("Selector     : {s}");
                }
                println!();
            }
        }
    }
}

/// Prints a new join token.
pub(crate) fn join_token(out: Output, t: &pb::CreateJoinTokenResponse) {
    match out {
        Output::Json => println!(
            "{}",
            json!({ "token": t.token, "id": t.id, "expires_at": t.expires_at, "agent_id": t.agent_id })
        ),
        Output::Text => {
            println!("Token   : {}", t.token);
            println!("Agent ID: {}", t.agent_id);
            println!("Expires : {}", when(t.expires_at));
        }
    }
}

/// The bundle's X.509 authorities as PEM.
pub(crate) fn bundle_pem(b: &tpb::Bundle) -> String {
    b.x509_authorities.iter().map(|der| pem::encode(&pem::Pem::new("CERTIFICATE", der.clone()))).collect()
}

/// Writes svid.pem, key.pem (0600) and bundle.pem from a minted SVID.
pub(crate) fn write_x509(dir: &Path, r: &pb::MintX509SvidResponse) -> Result<()> {
    let svid = r.svid.as_ref().context("server returned no SVID")?;
    let key = (!r.private_key.is_empty()).then_some(r.private_key.as_slice());
    let bundle = r.bundle.as_ref().map(bundle_pem).unwrap_or_default();
    write_svid_files(dir, &svid.cert_chain, key, &bundle)
}

/// Writes `dir`/key.pem (0600, PKCS#8) and bundle.pem, then svid.pem last, each
/// atomically: a program that sees a new svid.pem finds its key already in place.
pub(crate) fn write_svid_files(
    dir: &Path,
    chain_der: &[impl AsRef<[u8]>],
    key_pkcs8: Option<&[u8]>,
    bundle_pem: &str,
) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    if let Some(key) = key_pkcs8 {
        let key = pem::encode(&pem::Pem::new("PRIVATE KEY", key.to_vec()));
        write_file(&dir.join("key.pem"), key.as_bytes(), 0o600)?;
    }
    write_file(&dir.join("bundle.pem"), bundle_pem.as_bytes(), 0o644)?;
    let chain: String = chain_der
        .iter()
        .map(|der| pem::encode(&pem::Pem::new("CERTIFICATE", der.as_ref().to_vec())))
        .collect();
    write_file(&dir.join("svid.pem"), chain.as_bytes(), 0o644)
}

pub(crate) fn write_file(path: &Path, data: &[u8], mode: u32) -> Result<()> {
    ferrid_ca::write_atomic(path, data, mode).with_context(|| format!("writing {}", path.display()))
}

/// Reports a minted X.509-SVID.
pub(crate) fn minted_x509(out: Output, s: &tpb::X509Svid, dir: &Path) {
    match out {
        Output::Json => println!(
            "{}",
            json!({ "spiffe_id": s.spiffe_id, "serial": s.serial, "expires_at": s.expires_at, "out_dir": dir })
        ),
        Output::Text => {
            println!("X509-SVID for {} (serial {}) expires {}", s.spiffe_id, s.serial, when(s.expires_at));
            println!("Wrote {0}/svid.pem, {0}/key.pem, {0}/bundle.pem", dir.display());
        }
    }
}

/// Prints a JWT-SVID.
pub(crate) fn jwt(out: Output, t: &tpb::JwtSvid) {
    match out {
        Output::Json => println!(
            "{}",
            json!({ "token": t.token, "spiffe_id": t.spiffe_id, "jti": t.jti, "issued_at": t.issued_at, "expires_at": t.expires_at })
        ),
        Output::Text => println!("{}", t.token),
    }
}
