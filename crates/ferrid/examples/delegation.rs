//! The two outside parties of `examples/delegation/`:
//!
//! - `idp`: a local OIDC identity provider (`ferrid_test_util::oidc::Issuer`: discovery
//!   and JWKS on loopback) that signs one ID token for a person, naming the agent that
//!   may act for them (`may_act`);
//! - `relying`: a relying service that checks a delegation token against the trust
//!   bundle's JWT keys with a plain JWT library and prints who acts for whom.
//!
//! Run through `examples/delegation/run.sh`.
use std::path::PathBuf;

use clap::{Parser, Subcommand};
use ferrid_test_util::jwt::Signer;
use ferrid_test_util::oidc::Issuer;
use serde_json::{Value, json};

#[derive(Parser)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Serve an identity provider on loopback; write its URL to `<out>/issuer` and an
    /// ID token for `subject` to `<out>/<subject>.idtoken`; serve until killed.
    Idp {
        #[arg(long)]
        out: PathBuf,
        #[arg(long, default_value = "alice")]
        subject: String,
        /// The audience (Ferrid's client ID at this provider).
        #[arg(long, default_value = "ferrid")]
        audience: String,
        /// The SPIFFE ID of the agent that may act for the subject.
        #[arg(long)]
        may_act: String,
        /// The scope the person grants.
        #[arg(long, default_value = "mail.read mail.send calendar.read")]
        scope: String,
    },
    /// Verify a delegation token and print its chain.
    Relying {
        /// The trust bundle as SPIFFE JSON (`ferrid bundle show --format jwks`).
        #[arg(long)]
        bundle: PathBuf,
        /// This service's audience.
        #[arg(long)]
        audience: String,
        /// The token presented to the service.
        #[arg(long)]
        token: PathBuf,
    },
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    match Cli::parse().cmd {
        Cmd::Idp { out, subject, audience, may_act, scope } => {
            let idp = Issuer::start(Signer::rs256("idp-1")).await;
            let issuer = idp.url();
            let now = time::OffsetDateTime::now_utc().unix_timestamp();
            let token = idp.sign(&json!({
                "iss": issuer, "aud": audience, "sub": subject, "iat": now, "exp": now + 600,
                "scope": scope, "may_act": {"sub": may_act},
            }));
            std::fs::create_dir_all(&out)?;
            std::fs::write(out.join(format!("{subject}.idtoken")), token)?;
            std::fs::write(out.join("issuer"), issuer)?;
            println!("identity provider at {issuer}; wrote {}/{subject}.idtoken", out.display());
            tokio::signal::ctrl_c().await?;
            Ok(())
        }
        Cmd::Relying { bundle, audience, token } => {
            let jwks: jsonwebtoken::jwk::JwkSet = serde_json::from_slice(&std::fs::read(bundle)?)?;
            let token = std::fs::read_to_string(token)?.trim().to_owned();
            let header = jsonwebtoken::decode_header(&token)?;
            let kid = header.kid.ok_or("token has no kid")?;
            let jwk = jwks.find(&kid).ok_or("the token's key is not in the trust bundle")?;
            let mut v = jsonwebtoken::Validation::new(header.alg);
            v.set_audience(&[&audience]);
            let claims =
                jsonwebtoken::decode::<Value>(&token, &jsonwebtoken::DecodingKey::from_jwk(jwk)?, &v)?.claims;
            let mut actors = Vec::new();
            let mut cur = claims.get("act");
            while let Some(a) = cur {
                actors.push(a["sub"].as_str().unwrap_or("?").to_owned());
                cur = a.get("act");
            }
            println!("verified for audience {audience}");
            println!(
                "principal: {} ({})",
                claims["sub"].as_str().unwrap_or("?"),
                claims["sub_type"].as_str().unwrap_or("?")
            );
            println!("acting now: {}", actors.first().map_or("nobody", String::as_str));
            for (i, a) in actors.iter().enumerate().skip(1) {
                println!("  through ({i}): {a}");
            }
            println!(
                "chain: {}",
                std::iter::once(claims["sub"].as_str().unwrap_or("?").to_owned())
                    .chain(actors.into_iter().rev())
                    .collect::<Vec<_>>()
                    .join(" -> ")
            );
            if let Some(s) = claims.get("scope").and_then(Value::as_str) {
                println!("scope: {s}");
            }
            println!("expires: {}", claims["exp"]);
            Ok(())
        }
    }
}
