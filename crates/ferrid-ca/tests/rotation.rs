//! CA and JWT-key rotation on an injected clock: the next key is published before it
//! signs, nothing valid ever loses its authority, and state survives a restart.
mod common;

use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use common::*;
use ferrid_ca::{
    Authority, CaConfig, JwtSvidRequest, KeyAlgorithm, MemoryKeyStore, X509SvidRequest, generate_key_and_csr,
};
use ferrid_types::{Clock, ManualClock};

const CA_TTL: i64 = 6000;

fn short_lived(cfg: &mut CaConfig) {
    cfg.ca_ttl = Duration::from_secs(CA_TTL as u64);
    cfg.x509_svid_ttl = Duration::from_secs(600);
    cfg.jwt_svid_ttl = Duration::from_secs(300);
    cfg.refresh_hint = Duration::from_secs(60);
}

fn kid_of(token: &str) -> String {
    let h: serde_json::Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(token.split('.').next().unwrap()).unwrap()).unwrap();
    h["kid"].as_str().unwrap().to_owned()
}

struct Issued {
    x509: Vec<u8>,
    x509_not_after: i64,
    kid: String,
    jwt_exp: i64,
}

/// Walks three CA lifetimes in 30-second ticks. At every tick the relying party holds
/// the bundle it fetched at the previous tick; every credential minted now must verify
/// with that bundle, and every credential still valid must verify with the current one.
#[test]
fn nothing_valid_is_ever_unverifiable_across_two_rotations() {
    let (ca, clock) = authority_at(T0, short_lived);
    let (_, csr) = generate_key_and_csr(KeyAlgorithm::EcP256, None).unwrap();
    let aud = vec!["db".to_owned()];
    let mut last_fetched = ca.bundle();
    let mut issued: Vec<Issued> = Vec::new();
    let mut roots_seen = std::collections::BTreeSet::new();
    let mut sequences = vec![last_fetched.sequence];
    let mut t = T0;
    while t < T0 + 3 * CA_TTL {
        clock.set(time::OffsetDateTime::from_unix_timestamp(t).unwrap());
        ca.tick().unwrap();
        let now = ca.bundle();
        assert!(now.sequence >= last_fetched.sequence, "sequence never decreases");
        if now.sequence != *sequences.last().unwrap() {
            sequences.push(now.sequence);
        }
        let x = ca
            .mint_x509_svid(&X509SvidRequest {
                csr_der: &csr,
                spiffe_id: &id("/w"),
                ttl: None,
                dns_names: &[],
            })
            .unwrap();
        let j = ca
            .mint_jwt_svid(&JwtSvidRequest {
                spiffe_id: &id("/w"),
                audience: &aud,
                ttl: None,
                extra_claims: None,
            })
            .unwrap();
        // A credential minted now verifies with the bundle fetched one tick ago.
        assert!(signed_by_any(&x.cert_chain_der[0], &last_fetched.x509_authorities), "x509 at t+{}", t - T0);
        assert!(
            last_fetched.jwt_authorities.iter().any(|a| a.key_id == kid_of(&j.token)),
            "jwt at t+{}",
            t - T0
        );
        issued.push(Issued {
            x509: x.cert_chain_der[0].clone(),
            x509_not_after: x.not_after,
            kid: kid_of(&j.token),
            jwt_exp: j.expires_at,
        });
        // Every credential still valid verifies with the current bundle.
        for c in issued.iter().filter(|c| c.x509_not_after > t) {
            assert!(
                signed_by_any(&c.x509, &now.x509_authorities),
                "still-valid x509 lost its root at t+{}",
                t - T0
            );
        }
        for c in issued.iter().filter(|c| c.jwt_exp > t) {
            assert!(
                now.jwt_authorities.iter().any(|a| a.key_id == c.kid),
                "still-valid jwt lost its key at t+{}",
                t - T0
            );
        }
        for r in &now.x509_authorities {
            roots_seen.insert(r.clone());
        }
        last_fetched = now;
        t += 30;
    }
    assert!(roots_seen.len() >= 3, "at least two rotations happened ({} roots)", roots_seen.len());
    let kids: std::collections::BTreeSet<_> = issued.iter().map(|c| c.kid.clone()).collect();
    assert!(kids.len() >= 3, "the JWT key rotated at least twice");
    assert!(sequences.len() >= 5, "every publish and prune bumped the sequence: {sequences:?}");
}

#[test]
fn next_key_is_published_before_it_signs_then_old_one_is_pruned() {
    let (ca, clock) = authority_at(T0, short_lived);
    let (_, csr) = generate_key_and_csr(KeyAlgorithm::EcP256, None).unwrap();
    let mint = || {
        ca.mint_x509_svid(&X509SvidRequest { csr_der: &csr, spiffe_id: &id("/w"), ttl: None, dns_names: &[] })
            .unwrap()
    };
    let first_root = ca.bundle().x509_authorities[0].clone();
    clock.advance(time::Duration::seconds(CA_TTL / 2));
    assert!(ca.tick().unwrap());
    let b = ca.bundle();
    assert_eq!(b.x509_authorities.len(), 2, "next CA published");
    assert_eq!(b.jwt_authorities.len(), 2, "next JWT key published");
    assert_eq!(b.sequence, 2);
    assert!(
        signed_by_any(&mint().cert_chain_der[0], std::slice::from_ref(&first_root)),
        "old CA still signs"
    );
    clock.advance(time::Duration::seconds(CA_TTL / 3 + 1));
    assert!(ca.tick().unwrap(), "activation reported");
    assert_eq!(ca.bundle().sequence, 2, "activation alone does not change the bundle");
    assert!(!signed_by_any(&mint().cert_chain_der[0], std::slice::from_ref(&first_root)), "new CA signs");
    // Once the first CA expires it leaves the bundle.
    clock.set(time::OffsetDateTime::from_unix_timestamp(T0 + CA_TTL + 1).unwrap());
    ca.tick().unwrap();
    let b = ca.bundle();
    assert!(!b.x509_authorities.contains(&first_root));
    // The second generation reached its own half-life at the same moment, so the third
    // is published in the same step: one bundle change, one sequence bump.
    assert_eq!(b.x509_authorities.len(), 2);
    assert_eq!(b.jwt_authorities.len(), 2);
    assert_eq!(b.sequence, 3);
    assert!(!ca.tick().unwrap(), "idempotent");
}

#[test]
fn state_survives_a_restart() {
    let clock = ManualClock::at_unix(T0);
    let keys = Arc::new(MemoryKeyStore::new());
    let mut cfg = CaConfig::new(td());
    short_lived(&mut cfg);
    let ca = Authority::open(cfg.clone(), keys.clone(), None, Arc::new(clock.clone())).unwrap();
    clock.advance(time::Duration::seconds(CA_TTL / 2));
    ca.tick().unwrap();
    let state = ca.state();
    let json = serde_json::to_string(&state).unwrap();
    assert!(!json.contains("PRIVATE"), "no private key in the state");
    let restored = Authority::open(
        cfg.clone(),
        keys.clone(),
        Some(serde_json::from_str(&json).unwrap()),
        Arc::new(clock.clone()),
    )
    .unwrap();
    assert_eq!(restored.bundle(), ca.bundle());
    assert_eq!(restored.state(), state);
    let (_, csr) = generate_key_and_csr(KeyAlgorithm::EcP256, None).unwrap();
    let x = restored
        .mint_x509_svid(&X509SvidRequest { csr_der: &csr, spiffe_id: &id("/w"), ttl: None, dns_names: &[] })
        .unwrap();
    assert!(signed_by_any(&x.cert_chain_der[0], &ca.bundle().x509_authorities));
    // Without its keys the state cannot be restored.
    let e = Authority::open(cfg, Arc::new(MemoryKeyStore::new()), Some(state), Arc::new(clock)).unwrap_err();
    assert!(e.to_string().contains("missing"), "{e}");
}

#[test]
fn a_clock_jump_past_expiry_recovers() {
    let (ca, clock) = authority_at(T0, short_lived);
    clock.advance(time::Duration::seconds(10 * CA_TTL));
    let (_, csr) = generate_key_and_csr(KeyAlgorithm::EcP256, None).unwrap();
    assert!(
        ca.mint_x509_svid(&X509SvidRequest {
            csr_der: &csr,
            spiffe_id: &id("/w"),
            ttl: None,
            dns_names: &[]
        })
        .is_err()
    );
    assert!(ca.tick().unwrap());
    let x = ca
        .mint_x509_svid(&X509SvidRequest { csr_der: &csr, spiffe_id: &id("/w"), ttl: None, dns_names: &[] })
        .unwrap();
    assert!(x.not_after > clock.unix());
    assert_eq!(ca.bundle().x509_authorities.len(), 1, "expired root pruned");
    assert!(signed_by_any(&x.cert_chain_der[0], &ca.bundle().x509_authorities));
}

#[test]
fn upstream_ca_signs_the_intermediate() {
    let up_key = rcgen::KeyPair::generate().unwrap();
    let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    p.key_usages = vec![rcgen::KeyUsagePurpose::KeyCertSign, rcgen::KeyUsagePurpose::CrlSign];
    p.not_before = time::OffsetDateTime::from_unix_timestamp(T0 - 3600).unwrap();
    p.not_after = time::OffsetDateTime::from_unix_timestamp(T0 + 3600).unwrap();
    let up_cert = p.self_signed(&up_key).unwrap();
    let upstream = ferrid_ca::UpstreamCa::from_pem(&up_cert.pem(), &up_key.serialize_pem()).unwrap();
    assert!(!format!("{upstream:?}").contains("PRIVATE"));
    let (ca, _) = authority_at(T0, |c| c.upstream = Some(upstream));
    let b = ca.bundle();
    assert_eq!(b.x509_authorities, vec![up_cert.der().to_vec()], "the bundle holds the upstream root");
    let (key, csr) = generate_key_and_csr(KeyAlgorithm::EcP256, None).unwrap();
    let x = ca
        .mint_x509_svid(&X509SvidRequest { csr_der: &csr, spiffe_id: &id("/w"), ttl: None, dns_names: &[] })
        .unwrap();
    assert_eq!(x.cert_chain_der.len(), 2, "leaf + Ferrid intermediate");
    let inter = cert(&x.cert_chain_der[1]);
    assert!(cert(&x.cert_chain_der[0]).verify_signature(Some(inter.public_key())).is_ok());
    assert!(inter.verify_signature(Some(cert(&b.x509_authorities[0]).public_key())).is_ok());
    assert!(inter.basic_constraints().unwrap().unwrap().value.ca);
    assert!(inter.validity().not_after.timestamp() <= T0 + 3600, "capped by the upstream certificate");
    spiffe::X509Svid::parse_from_der(&x.cert_chain_der.concat(), &key)
        .expect("spiffe crate accepts the chain");
    // A key file that is not PKCS#8 is refused with a clear message.
    let e = ferrid_ca::UpstreamCa::from_pem(
        &up_cert.pem(),
        "-----BEGIN EC PRIVATE KEY-----\nAAAA\n-----END EC PRIVATE KEY-----\n",
    )
    .unwrap_err();
    assert!(e.to_string().contains("PKCS#8"), "{e}");
}

#[test]
fn disk_key_store_keeps_ca_keys_private_across_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::at_unix(T0));
    let keys = Arc::new(ferrid_ca::DiskKeyStore::open(dir.path().join("keys")).unwrap());
    let ca = Authority::open(CaConfig::new(td()), keys, None, clock.clone()).unwrap();
    let state = ca.state();
    drop(ca);
    let keys = Arc::new(ferrid_ca::DiskKeyStore::open(dir.path().join("keys")).unwrap());
    let again = Authority::open(CaConfig::new(td()), keys, Some(state.clone()), clock).unwrap();
    assert_eq!(again.state(), state);
    use std::os::unix::fs::PermissionsExt;
    for f in std::fs::read_dir(dir.path().join("keys")).unwrap() {
        assert_eq!(f.unwrap().metadata().unwrap().permissions().mode() & 0o777, 0o600);
    }
}
