//! Operations per second of jsonwebtoken's crypto backend (the one this build enables),
//! single-threaded, on the JWT operations Ferrid performs: verifying RS256 and ES256
//! tokens (CI, Kubernetes, cloud identity tokens) and signing ES256 (JWT-SVIDs).
//! Prints one line per operation: `backend op ops_per_sec`.
use std::time::{Duration, Instant};

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde_json::{Value, json};

#[cfg(feature = "aws_lc_rs")]
const BACKEND: &str = "aws_lc_rs";
#[cfg(all(feature = "rust_crypto", not(feature = "aws_lc_rs")))]
const BACKEND: &str = "rust_crypto";

/// Runs `f` repeatedly for about `for_` and returns calls per second.
fn rate(for_: Duration, mut f: impl FnMut()) -> f64 {
    for _ in 0..10 {
        f();
    }
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed() < for_ {
        for _ in 0..10 {
            f();
        }
        n += 10;
    }
    n as f64 / start.elapsed().as_secs_f64()
}

fn keys(alg: &'static rcgen::SignatureAlgorithm, jwt: Algorithm) -> (EncodingKey, DecodingKey) {
    let kp = rcgen::KeyPair::generate_for(alg).expect("key generation");
    let pem = kp.serialize_pem();
    let public = kp.public_key_pem();
    match jwt {
        Algorithm::ES256 => (
            EncodingKey::from_ec_pem(pem.as_bytes()).expect("EC key"),
            DecodingKey::from_ec_pem(public.as_bytes()).expect("EC public key"),
        ),
        _ => (
            EncodingKey::from_rsa_pem(pem.as_bytes()).expect("RSA key"),
            DecodingKey::from_rsa_pem(public.as_bytes()).expect("RSA public key"),
        ),
    }
}

fn main() {
    let secs: f64 = std::env::args().nth(1).and_then(|s| s.parse().ok()).unwrap_or(2.0);
    let for_ = Duration::from_secs_f64(secs);
    let claims = json!({
        "iss": "https://token.actions.githubusercontent.com", "aud": "ferrid-server",
        "sub": "repo:acme/app:ref:refs/heads/main", "exp": 4_000_000_000_i64, "iat": 1_700_000_000,
        "repository": "acme/app", "ref": "refs/heads/main", "jti": "5b1c0f9e-3c2a-4f0e-9d55-7a1e2f3b4c5d",
    });
    let validation = |alg| {
        let mut v = Validation::new(alg);
        v.set_audience(&["ferrid-server"]);
        v
    };
    for (name, rc, alg) in [
        ("RS256", &rcgen::PKCS_RSA_SHA256, Algorithm::RS256),
        ("ES256", &rcgen::PKCS_ECDSA_P256_SHA256, Algorithm::ES256),
    ] {
        let (enc, dec) = keys(rc, alg);
        let token = jsonwebtoken::encode(&Header::new(alg), &claims, &enc).expect("sign");
        let v = validation(alg);
        let verify = rate(for_, || {
            jsonwebtoken::decode::<Value>(&token, &dec, &v).expect("verify");
        });
        let sign = rate(for_, || {
            jsonwebtoken::encode(&Header::new(alg), &claims, &enc).expect("sign");
        });
        println!("{BACKEND} {name}-verify {verify:.0}");
        println!("{BACKEND} {name}-sign {sign:.0}");
    }
}
