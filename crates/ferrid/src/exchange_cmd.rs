//! `ferrid svid exchange`: a CI job trades its OIDC token for an SVID, talking to the
//! server directly (no agent). The private key is generated here and only a CSR leaves
//! the process; the server is authenticated by its SPIFFE ID against the trust bundle.
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use ferrid_proto::exchange::v1 as pb;
use ferrid_types::{KeyAlgorithm, TrustDomain};
use serde_json::json;

use crate::admin_client::status_err;
use crate::output::{self, Output};

/// `ferrid svid …`
#[derive(Debug, Subcommand)]
pub(crate) enum SvidCmd {
    /// Exchange a CI job's OIDC token (GitHub Actions, GitLab CI, any configured
    /// issuer) for an X.509-SVID and/or a JWT-SVID, directly with the server.
    Exchange(ExchangeArgs),
}

/// Arguments of `ferrid svid exchange`.
#[derive(Debug, Args)]
pub(crate) struct ExchangeArgs {
    /// The server's node API, host:port.
    #[arg(long, env = "FERRID_SERVER_ADDRESS")]
    server_address: String,
    /// The trust domain: the server must present spiffe://<td>/ferrid/server.
    #[arg(long, env = "FERRID_TRUST_DOMAIN")]
    trust_domain: String,
    /// PEM file with the trust bundle's X.509 authorities, to authenticate the server.
    #[arg(long, env = "FERRID_TRUST_BUNDLE")]
    trust_bundle: PathBuf,
    /// File holding the job's OIDC token; `-` reads standard input.
    #[arg(long)]
    oidc_token_file: PathBuf,
    /// Directory for svid.pem, key.pem (0600), bundle.pem and jwt_svid.token (0600).
    /// Prefer a directory only the job can read, on tmpfs where there is one.
    #[arg(long)]
    out_dir: PathBuf,
    /// Mint a JWT-SVID for this audience; repeat for several.
    #[arg(long = "jwt-audience")]
    jwt_audience: Vec<String>,
    /// Do not mint an X.509-SVID (then --jwt-audience is required).
    #[arg(long)]
    no_x509: bool,
    /// The SPIFFE ID wanted, when the token matches several entries.
    #[arg(long)]
    spiffe_id: Option<String>,
    /// Lifetime, e.g. 5m; never longer than the entry allows or the token has left.
    #[arg(long, value_parser = humantime::parse_duration)]
    ttl: Option<Duration>,
    /// Output format.
    #[arg(long, short, value_enum, default_value_t = Output::Text)]
    output: Output,
}

/// How a workload reaches the server's exchange API with its own X.509-SVID.
#[derive(Debug, Args)]
pub(crate) struct WorkloadTls {
    /// The server's node API, host:port.
    #[arg(long, env = "FERRID_SERVER_ADDRESS")]
    server_address: String,
    /// The trust domain: the server must present spiffe://<td>/ferrid/server.
    #[arg(long, env = "FERRID_TRUST_DOMAIN")]
    trust_domain: String,
    /// PEM file with the trust bundle's X.509 authorities.
    #[arg(long, env = "FERRID_TRUST_BUNDLE")]
    trust_bundle: PathBuf,
    /// The caller's X.509-SVID chain (PEM), e.g. from `ferrid agent fetch x509 --write`.
    #[arg(long)]
    cert: PathBuf,
    /// Its private key (PEM, PKCS#8).
    #[arg(long)]
    key: PathBuf,
    /// Output format: text prints the token alone.
    #[arg(long, short, value_enum, default_value_t = Output::Text)]
    output: Output,
}

/// Arguments of `ferrid token exchange`.
#[derive(Debug, Args)]
pub(crate) struct TokenExchangeArgs {
    #[command(flatten)]
    tls: WorkloadTls,
    /// File holding the subject token (a person's ID token, or a token issued to the
    /// caller); `-` reads standard input.
    #[arg(long)]
    subject_token_file: PathBuf,
    /// `jwt` (default) or `id_token`.
    #[arg(long, default_value = "jwt")]
    subject_token_type: String,
    /// Audience of the new token; repeat for several.
    #[arg(long, required = true)]
    audience: Vec<String>,
    /// Space-separated scope; only narrower than the subject token's.
    #[arg(long)]
    scope: Option<String>,
    /// The task the token is for (required for bounded workloads).
    #[arg(long)]
    task_id: Option<String>,
    /// The task's purpose.
    #[arg(long)]
    task_purpose: Option<String>,
    /// The only workload allowed to exchange the new token next.
    #[arg(long)]
    may_act: Option<String>,
    /// Lifetime, e.g. 2m.
    #[arg(long, value_parser = humantime::parse_duration)]
    ttl: Option<Duration>,
}

/// Arguments of `ferrid token task`.
#[derive(Debug, Args)]
pub(crate) struct TaskTokenArgs {
    #[command(flatten)]
    tls: WorkloadTls,
    /// Audience; repeat for several.
    #[arg(long, required = true)]
    audience: Vec<String>,
    /// The task's ID.
    #[arg(long)]
    task_id: String,
    /// The task's purpose.
    #[arg(long, default_value = "")]
    task_purpose: String,
    /// Lifetime, e.g. 2m.
    #[arg(long, value_parser = humantime::parse_duration)]
    ttl: Option<Duration>,
}

fn pem_certs(path: &Path, what: &str) -> Result<Vec<Vec<u8>>> {
    let text = std::fs::read(path).with_context(|| format!("reading {what} {}", path.display()))?;
    let certs: Vec<Vec<u8>> = pem::parse_many(&text)
        .with_context(|| format!("{what} {}: not PEM", path.display()))?
        .into_iter()
        .filter(|p| p.tag() == "CERTIFICATE")
        .map(pem::Pem::into_contents)
        .collect();
    if certs.is_empty() {
        bail!("{what} {}: no certificates", path.display());
    }
    Ok(certs)
}

fn secs(ttl: Option<Duration>) -> Result<i32> {
    match ttl {
        None => Ok(0),
        Some(d) if d.as_secs() == 0 => bail!("--ttl must be at least 1s"),
        Some(d) => i32::try_from(d.as_secs()).context("--ttl is too long"),
    }
}

async fn workload_client(
    t: &WorkloadTls,
) -> Result<pb::exchange_client::ExchangeClient<tonic::transport::Channel>> {
    let td = TrustDomain::new(&t.trust_domain)
        .with_context(|| format!("--trust-domain {:?} is not a trust domain name", t.trust_domain))?;
    let roots = pem_certs(&t.trust_bundle, "--trust-bundle")?;
    let chain = pem_certs(&t.cert, "--cert")?;
    let key_text = std::fs::read(&t.key).with_context(|| format!("reading --key {}", t.key.display()))?;
    let key = pem::parse(&key_text).with_context(|| format!("--key {}: not PEM", t.key.display()))?;
    let tls = ferrid_tls::client_config(&roots, ferrid_types::server_id(&td), Some((&chain, key.contents())))
        .context("building the TLS client configuration")?;
    let channel = ferrid_tls::node_channel(&t.server_address, tls)
        .await
        .with_context(|| format!("connecting to {}", t.server_address))?;
    Ok(pb::exchange_client::ExchangeClient::new(channel))
}

fn print_token(out: Output, r: &pb::TokenExchangeResponse) {
    match out {
        Output::Json => println!(
            "{}",
            json!({
                "access_token": r.access_token, "issued_token_type": r.issued_token_type,
                "token_type": r.token_type, "expires_in": r.expires_in, "scope": r.scope,
                "jti": r.jti, "subject": r.subject, "actors": r.actors,
            })
        ),
        Output::Text => println!("{}", r.access_token),
    }
}

/// Runs `ferrid token exchange`.
pub(crate) async fn token_exchange(a: TokenExchangeArgs) -> Result<()> {
    let subject_token = read_token(&a.subject_token_file)?;
    let subject_token_type = match a.subject_token_type.as_str() {
        "jwt" => "urn:ietf:params:oauth:token-type:jwt",
        "id_token" => "urn:ietf:params:oauth:token-type:id_token",
        other => bail!("--subject-token-type {other:?}: jwt or id_token"),
    };
    let mut c = workload_client(&a.tls).await?;
    let r = c
        .exchange_token(pb::TokenExchangeRequest {
            grant_type: "urn:ietf:params:oauth:grant-type:token-exchange".into(),
            subject_token,
            subject_token_type: subject_token_type.into(),
            audience: a.audience,
            scope: a.scope.unwrap_or_default(),
            ttl: secs(a.ttl)?,
            task_id: a.task_id.unwrap_or_default(),
            task_purpose: a.task_purpose.unwrap_or_default(),
            may_act: a.may_act.unwrap_or_default(),
            requested_token_type: String::new(),
            entry_id: String::new(),
        })
        .await
        .map_err(status_err)?
        .into_inner();
    print_token(a.tls.output, &r);
    Ok(())
}

/// Runs `ferrid token task`.
pub(crate) async fn task_token(a: TaskTokenArgs) -> Result<()> {
    let mut c = workload_client(&a.tls).await?;
    let r = c
        .issue_task_token(pb::TaskTokenRequest {
            audience: a.audience,
            task_id: a.task_id,
            task_purpose: a.task_purpose,
            ttl: secs(a.ttl)?,
            entry_id: String::new(),
        })
        .await
        .map_err(status_err)?
        .into_inner();
    print_token(a.tls.output, &r);
    Ok(())
}

fn read_token(path: &Path) -> Result<String> {
    let mut text = String::new();
    if path == Path::new("-") {
        std::io::stdin().take(64 * 1024).read_to_string(&mut text).context("reading the token from stdin")?;
    } else {
        let f = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
        f.take(64 * 1024).read_to_string(&mut text).with_context(|| format!("reading {}", path.display()))?;
    }
    let token = text.trim().to_owned();
    if token.is_empty() {
        bail!("{}: no token in it", path.display());
    }
    Ok(token)
}

/// Runs `ferrid svid …`.
pub(crate) async fn run(cmd: SvidCmd) -> Result<()> {
    let SvidCmd::Exchange(a) = cmd;
    if a.no_x509 && a.jwt_audience.is_empty() {
        bail!("--no-x509 leaves nothing to ask for: add --jwt-audience");
    }
    let td = TrustDomain::new(&a.trust_domain)
        .with_context(|| format!("--trust-domain {:?} is not a trust domain name", a.trust_domain))?;
    let token = read_token(&a.oidc_token_file)?;
    let bundle_text = std::fs::read(&a.trust_bundle)
        .with_context(|| format!("reading --trust-bundle {}", a.trust_bundle.display()))?;
    let roots: Vec<Vec<u8>> = pem::parse_many(&bundle_text)
        .with_context(|| format!("--trust-bundle {}: not PEM", a.trust_bundle.display()))?
        .into_iter()
        .filter(|p| p.tag() == "CERTIFICATE")
        .map(pem::Pem::into_contents)
        .collect();
    if roots.is_empty() {
        bail!("--trust-bundle {}: no certificates", a.trust_bundle.display());
    }
    let tls = ferrid_tls::client_config(&roots, ferrid_types::server_id(&td), None)
        .context("building the TLS client configuration")?;
    let channel = ferrid_tls::node_channel(&a.server_address, tls)
        .await
        .with_context(|| format!("connecting to {}", a.server_address))?;

    let key_and_csr = if a.no_x509 {
        None
    } else {
        Some(ferrid_ca::generate_key_and_csr(KeyAlgorithm::EcP256, None).context("generating a key")?)
    };
    let ttl = match a.ttl {
        None => 0,
        Some(d) if d.as_secs() == 0 => bail!("--ttl must be at least 1s"),
        Some(d) => i32::try_from(d.as_secs()).context("--ttl is too long")?,
    };
    let mut client = pb::exchange_client::ExchangeClient::new(channel);
    let r = client
        .exchange_svid(pb::ExchangeSvidRequest {
            token,
            spiffe_id: a.spiffe_id.unwrap_or_default(),
            csr: key_and_csr.as_ref().map(|(_, csr)| csr.clone()).unwrap_or_default(),
            jwt_audience: a.jwt_audience,
            ttl,
        })
        .await
        .map_err(status_err)?
        .into_inner();

    let bundle = r.bundle.as_ref().map(output::bundle_pem).unwrap_or_default();
    if let (Some(svid), Some((key, _))) = (&r.x509_svid, &key_and_csr) {
        output::write_svid_files(&a.out_dir, &svid.cert_chain, Some(key.as_slice()), &bundle)?;
    } else {
        std::fs::create_dir_all(&a.out_dir).with_context(|| format!("creating {}", a.out_dir.display()))?;
        output::write_file(&a.out_dir.join("bundle.pem"), bundle.as_bytes(), 0o644)?;
    }
    if let Some(j) = &r.jwt_svid {
        output::write_file(&a.out_dir.join("jwt_svid.token"), j.token.as_bytes(), 0o600)?;
    }
    report(a.output, &r, &a.out_dir);
    Ok(())
}

fn report(out: Output, r: &pb::ExchangeSvidResponse, dir: &Path) {
    match out {
        Output::Json => println!(
            "{}",
            json!({
                "attestor": r.attestor,
                "attested_id": r.attested_id,
                "selectors": r.selectors,
                "x509_svid": r.x509_svid.as_ref().map(|s| json!({
                    "spiffe_id": s.spiffe_id, "serial": s.serial, "expires_at": s.expires_at,
                })),
                "jwt_svid": r.jwt_svid.as_ref().map(|j| json!({
                    "spiffe_id": j.spiffe_id, "jti": j.jti, "expires_at": j.expires_at,
                })),
                "out_dir": dir,
            })
        ),
        Output::Text => {
            println!("Token attested by {} as {}", r.attestor, r.attested_id);
            let mut files = vec!["bundle.pem"];
            if let Some(s) = &r.x509_svid {
                println!(
                    "X509-SVID for {} (serial {}) expires {}",
                    s.spiffe_id,
                    s.serial,
                    output::when(s.expires_at)
                );
                files.extend(["svid.pem", "key.pem"]);
            }
            if let Some(j) = &r.jwt_svid {
                println!("JWT-SVID for {} expires {}", j.spiffe_id, output::when(j.expires_at));
                files.push("jwt_svid.token");
            }
            let list: Vec<String> = files.iter().map(|f| dir.join(f).display().to_string()).collect();
            println!("Wrote {}", list.join(", "));
        }
    }
}
