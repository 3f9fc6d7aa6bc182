//! A loopback OIDC issuer: the stand-in for GitHub's, GitLab's or a company's identity
//! provider in tests and examples.
//!
//! [`Issuer`] serves what a relying party fetches from an issuer, in the shape OIDC
//! Discovery 1.0 and RFC 7517 describe: `/.well-known/openid-configuration` (whose
//! `issuer` is the server's own URL and whose `jwks_uri` points at `/jwks`) and the JWKS.
//! Its [`Signer`] signs the tokens; the JWKS can be replaced to rotate keys, and the
//! JWKS fetches are counted.
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use axum::routing::get;
use serde_json::{Value, json};

use crate::jwt::Signer;

/// What the issuer serves, shared with its HTTP handlers.
struct Published {
    url: String,
    alg: String,
    jwks: Mutex<Vec<u8>>,
    jwks_fetches: AtomicUsize,
}

/// An OIDC issuer on a fresh loopback port, serving discovery and the JWKS over plain
/// HTTP (which relying parties accept for loopback issuers) until the runtime stops,
/// whether or not the `Issuer` is still held.
pub struct Issuer {
    signer: Signer,
    published: Arc<Published>,
}

impl Issuer {
    /// Starts an issuer that publishes `signer`'s public key and signs with it.
    pub async fn start(signer: Signer) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind loopback");
        let url = format!("http://{}", listener.local_addr().expect("local address"));
        let published = Arc::new(Published {
            url,
            alg: format!("{:?}", signer.alg),
            jwks: Mutex::new(signer.jwks()),
            jwks_fetches: AtomicUsize::new(0),
        });
        let (d, j) = (published.clone(), published.clone());
        let router = axum::Router::new()
            .route("/.well-known/openid-configuration", get(move || async move { axum::Json(discovery(&d)) }))
            .route(
                "/jwks",
                get(move || async move {
                    j.jwks_fetches.fetch_add(1, Ordering::SeqCst);
                    let body = j.jwks.lock().unwrap().clone();
                    ([("content-type", "application/json")], body)
                }),
            );
        crate::serve_on(listener, router, None);
        Self { signer, published }
    }

    /// The issuer URL (`http://127.0.0.1:<port>`, no trailing slash): the `iss` of its
    /// tokens and the base of discovery.
    pub fn url(&self) -> &str {
        &self.published.url
    }

    /// The URL of the JWKS (the discovery document's `jwks_uri`).
    pub fn jwks_url(&self) -> String {
        format!("{}/jwks", self.published.url)
    }

    /// The key the issuer signs with.
    pub fn signer(&self) -> &Signer {
        &self.signer
    }

    /// Signs `claims` as given (set `iss` to [`Self::url`] for a token of this issuer).
    pub fn sign(&self, claims: &Value) -> String {
        self.signer.sign(claims)
    }

    /// Publishes `keys` as the JWKS from now on, in place of the keys published so far
    /// (key rotation). The issuer keeps signing with its own key.
    pub fn publish(&self, keys: &[&Signer]) {
        let jwks = json!({ "keys": keys.iter().map(|k| &k.jwk).collect::<Vec<_>>() });
        *self.published.jwks.lock().unwrap() = jwks.to_string().into_bytes();
    }

    /// How many times the JWKS was fetched so far.
    pub fn jwks_fetches(&self) -> usize {
        self.published.jwks_fetches.load(Ordering::SeqCst)
    }
}

fn discovery(p: &Published) -> Value {
    json!({
        "issuer": p.url,
        "jwks_uri": format!("{}/jwks", p.url),
        "response_types_supported": ["id_token"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": [p.alg],
    })
}
