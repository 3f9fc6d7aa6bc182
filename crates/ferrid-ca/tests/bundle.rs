//! The trust bundle in SPIFFE bundle format, read back by the `spiffe` crate and by
//! Ferrid's own parser, and every malformed document refused.
mod common;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use common::*;
use ferrid_ca::TrustBundle;
use serde_json::{Value, json};

#[test]
fn spiffe_bundle_document_shape() {
    let (ca, _) = authority();
    let b = ca.bundle();
    let doc: Value = serde_json::from_str(&b.to_spiffe_json()).unwrap();
    assert_eq!(doc["spiffe_sequence"], 1);
    assert_eq!(doc["spiffe_refresh_hint"], 300);
    let keys = doc["keys"].as_array().unwrap();
    let x = keys.iter().find(|k| k["use"] == "x509-svid").unwrap();
    assert_eq!(x["kty"], "EC");
    assert_eq!(x["crv"], "P-256");
    assert_eq!(x["x5c"].as_array().unwrap().len(), 1);
    assert_eq!(STANDARD.decode(x["x5c"][0].as_str().unwrap()).unwrap(), b.x509_authorities[0]);
    let j = keys.iter().find(|k| k["use"] == "jwt-svid").unwrap();
    assert_eq!(j["kid"], b.jwt_authorities[0].key_id.as_str());
}

#[test]
fn the_spiffe_crate_reads_both_halves() {
    let (ca, _) = authority();
    let b = ca.bundle();
    let x = spiffe::X509Bundle::parse_from_der(td(), &b.x509_authorities.concat()).unwrap();
    assert_eq!(x.authorities().len(), 1);
    let j = spiffe::JwtBundle::from_jwt_authorities(td(), b.jwt_jwks_json().as_bytes()).unwrap();
    assert!(j.find_jwt_authority(&b.jwt_authorities[0].key_id).is_some());
}

#[test]
fn round_trips_through_our_parser() {
    for alg in
        [ferrid_ca::KeyAlgorithm::EcP256, ferrid_ca::KeyAlgorithm::EcP384, ferrid_ca::KeyAlgorithm::Rsa2048]
    {
        let (ca, _) = authority_at(T0, |c| c.key_algorithm = alg);
        let b = ca.bundle();
        let back = TrustBundle::from_spiffe_json(td(), b.to_spiffe_json().as_bytes()).unwrap();
        assert_eq!(back.x509_authorities, b.x509_authorities);
        assert_eq!(back.sequence, b.sequence);
        assert_eq!(back.refresh_hint_secs, b.refresh_hint_secs);
        assert_eq!(
            back.jwt_authorities[0].public_key_spki_der, b.jwt_authorities[0].public_key_spki_der,
            "{alg}"
        );
    }
}

#[test]
fn pem_holds_every_x509_authority() {
    let (ca, _) = authority();
    let p = ::pem::parse_many(ca.bundle().to_pem()).unwrap();
    assert_eq!(p.len(), 1);
    assert_eq!(p[0].contents(), ca.bundle().x509_authorities[0].as_slice());
}

#[test]
fn malformed_documents_are_refused() {
    let (ca, _) = authority();
    let good: Value = serde_json::from_str(&ca.bundle().to_spiffe_json()).unwrap();
    let der = STANDARD.encode(&ca.bundle().x509_authorities[0]);
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("not json", b"{".to_vec()),
        ("not an object", b"[]".to_vec()),
        ("no keys", br#"{"spiffe_sequence":1}"#.to_vec()),
        ("two certs in x5c", json!({"keys":[{"use":"x509-svid","x5c":[der, der]}]}).to_string().into_bytes()),
        ("x5c not base64", json!({"keys":[{"use":"x509-svid","x5c":["%%%"]}]}).to_string().into_bytes()),
        (
            "x5c not a cert",
            json!({"keys":[{"use":"x509-svid","x5c":[STANDARD.encode(b"junk")]}]}).to_string().into_bytes(),
        ),
        (
            "jwt without kid",
            json!({"keys":[{"use":"jwt-svid","kty":"EC","crv":"P-256","x":"AA","y":"AA"}]})
                .to_string()
                .into_bytes(),
        ),
        (
            "jwt bad curve",
            json!({"keys":[{"use":"jwt-svid","kid":"k","kty":"EC","crv":"P-999","x":"AA","y":"AA"}]})
                .to_string()
                .into_bytes(),
        ),
        (
            "jwt short coords",
            json!({"keys":[{"use":"jwt-svid","kid":"k","kty":"EC","crv":"P-256","x":"AA","y":"AA"}]})
                .to_string()
                .into_bytes(),
        ),
        ("oversized", vec![b' '; (1 << 20) + 1]),
    ];
    for (what, doc) in cases {
        assert!(TrustBundle::from_spiffe_json(td(), &doc).is_err(), "{what}");
    }
    // Unknown `use` values are ignored, not fatal.
    let mut extended = good.clone();
    extended["keys"].as_array_mut().unwrap().push(json!({"use":"wit-svid","kty":"OKP"}));
    assert!(TrustBundle::from_spiffe_json(td(), extended.to_string().as_bytes()).is_ok());
}
