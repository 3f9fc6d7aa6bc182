//! The agent side against a local HTTP server that follows the published IMDSv2 API
//! (EC2 User Guide, "Use the Instance Metadata Service to access instance metadata"):
//! `PUT /latest/api/token` with `X-aws-ec2-metadata-token-ttl-seconds` (1 to 21600;
//! 400 without it, 403 when the PUT carries `X-Forwarded-For`) returns a token; `GET`s
//! need it in `X-aws-ec2-metadata-token` and answer 401 without it or with another.
//! It serves the real ap-northeast-2 document and its three proofs byte for byte as
//! IMDS did (tests/data). There is no EC2 instance on a test machine.
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::Router;
use axum::extract::{Path as UrlPath, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, put};
use ferrid_attest::{NoChallenges, NodeAttestor};
use ferrid_attest_aws_iid::agent::{AgentConfig, DEFAULT_IMDS_URL, collect};
use ferrid_attest_aws_iid::{AwsIidAttestor, AwsIidConfig, MAX_DOCUMENT_BYTES, Proof, payload};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

const TOKEN: &str = "AQAEAFUqS0u1Xh8ZtK3vD9mS2q_test-token==";

fn read(p: &str) -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data").join(p)).unwrap()
}

struct Imds {
    document: String,
    /// Tokens issued and identity requests served.
    tokens: AtomicUsize,
    served: AtomicUsize,
}

impl Imds {
    fn real() -> Arc<Self> {
        Arc::new(Self {
            document: read("all-variants-ap-northeast-2/document.json"),
            tokens: AtomicUsize::new(0),
            served: AtomicUsize::new(0),
        })
    }
}

fn proof_file(proof: &str) -> Option<String> {
    let file = match proof {
        "rsa2048" => "rsa2048.b64",
        "pkcs7" => "pkcs7.b64",
        "signature" => "signature.b64",
        _ => return None,
    };
    Some(read(&format!("all-variants-ap-northeast-2/{file}")))
}

async fn token(State(imds): State<Arc<Imds>>, headers: HeaderMap) -> (StatusCode, String) {
    if headers.contains_key("x-forwarded-for") {
        return (StatusCode::FORBIDDEN, "Forbidden".into());
    }
    let ttl = headers
        .get("x-aws-ec2-metadata-token-ttl-seconds")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u32>().ok());
    match ttl {
        Some(1..=21600) => {
            imds.tokens.fetch_add(1, Ordering::SeqCst);
            (StatusCode::OK, TOKEN.into())
        }
        _ => (StatusCode::BAD_REQUEST, "Missing or Invalid Parameters".into()),
    }
}

async fn identity(
    State(imds): State<Arc<Imds>>,
    UrlPath(item): UrlPath<String>,
    headers: HeaderMap,
) -> (StatusCode, String) {
    if headers.get("x-aws-ec2-metadata-token").and_then(|v| v.to_str().ok()) != Some(TOKEN) {
        return (StatusCode::UNAUTHORIZED, "Unauthorized".into());
    }
    imds.served.fetch_add(1, Ordering::SeqCst);
    match item.as_str() {
        "document" => (StatusCode::OK, imds.document.clone()),
        other => match proof_file(other) {
            Some(body) => (StatusCode::OK, body),
            None => (StatusCode::NOT_FOUND, "Not Found".into()),
        },
    }
}

fn imds_router(imds: Arc<Imds>) -> Router {
    Router::new()
        .route("/latest/api/token", put(token))
        .route("/latest/dynamic/instance-identity/{item}", get(identity))
        .with_state(imds)
}

async fn serve(router: Router) -> String {
    format!("http://{}", ferrid_test_util::serve(router, None).await)
}

fn config(url: &str, proof: Proof) -> AgentConfig {
    AgentConfig { imds_url: url.into(), proof }
}

#[tokio::test]
async fn collects_every_proof_over_imdsv2_and_the_server_verifies_it() {
    let imds = Imds::real();
    let url = serve(imds_router(imds.clone())).await;
    let server = AwsIidAttestor::from_config(&AwsIidConfig {
        accounts: vec!["707811555388".into()],
        max_instance_age: Some(std::time::Duration::from_secs(600)),
        ..AwsIidConfig::default()
    })
    .unwrap();
    let when = OffsetDateTime::parse("2022-03-27T02:36:30Z", &Rfc3339).unwrap();
    for proof in Proof::ALL {
        // A trailing slash on the base URL is fine.
        let got = collect(&config(&format!("{url}/"), proof)).await.unwrap();
        // Exactly what IMDS served: the document byte for byte, the proof as served.
        assert_eq!(got, payload(&imds.document, proof, &proof_file(proof.as_str()).unwrap()), "{proof}");
        let attested = server.attest(&got, &mut NoChallenges, when).await.unwrap();
        assert_eq!(attested.agent_path, ["707811555388", "ap-northeast-2", "i-0140f65cf5b9ba76a"]);
    }
    assert_eq!(imds.tokens.load(Ordering::SeqCst), 3);
    assert_eq!(imds.served.load(Ordering::SeqCst), 6);
}

#[tokio::test]
async fn refusals_and_silence_from_imds_are_reported() {
    // Answers 401 to every GET, as IMDSv2 does for an expired or foreign token.
    let url = serve(
        Router::new()
            .route("/latest/api/token", put(|| async { "a-token-it-will-not-accept" }))
            .route("/latest/dynamic/instance-identity/{item}", get(|| async { StatusCode::UNAUTHORIZED })),
    )
    .await;
    let e = collect(&config(&url, Proof::Rsa2048)).await.unwrap_err();
    assert!(e.contains("identity document: HTTP 401") && e.contains("token was refused"), "{e}");
    // IMDS turned off on the instance: 403 on everything.
    let url = serve(Router::new().fallback(|| async { StatusCode::FORBIDDEN })).await;
    let e = collect(&config(&url, Proof::Rsa2048)).await.unwrap_err();
    assert!(e.contains("session token: HTTP 403") && e.contains("disabled"), "{e}");
    // Nothing listening.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let e = collect(&config(&format!("http://{closed}"), Proof::Rsa2048)).await.unwrap_err();
    assert!(e.contains("no answer from") && e.contains("hop limit"), "{e}");
}

#[tokio::test]
async fn oversized_and_non_utf8_answers_are_refused() {
    let big = "x".repeat(MAX_DOCUMENT_BYTES + 1);
    let url = serve(
        Router::new()
            .route("/latest/api/token", put(|| async { TOKEN }))
            .route("/latest/dynamic/instance-identity/document", get(move || async move { big })),
    )
    .await;
    let e = collect(&config(&url, Proof::Rsa2048)).await.unwrap_err();
    assert!(e.contains("identity document: answer longer than"), "{e}");
    let url = serve(
        Router::new()
            .route("/latest/api/token", put(|| async { TOKEN }))
            .route("/latest/dynamic/instance-identity/document", get(|| async { vec![0xffu8, 0xfe] })),
    )
    .await;
    let e = collect(&config(&url, Proof::Rsa2048)).await.unwrap_err();
    assert!(e.contains("not UTF-8"), "{e}");
}

#[test]
fn agent_configuration() {
    #[derive(serde::Deserialize)]
    struct Agent {
        aws_iid: AgentConfig,
    }
    let a: Agent = toml::from_str("[aws_iid]\n").unwrap();
    assert_eq!(a.aws_iid, AgentConfig::default());
    assert_eq!(a.aws_iid.imds_url, DEFAULT_IMDS_URL);
    assert_eq!(a.aws_iid.proof, Proof::Rsa2048);
    a.aws_iid.validate().unwrap();
    let a: Agent =
        toml::from_str("[aws_iid]\nimds_url = \"http://[fd00:ec2::254]\"\nproof = \"signature\"\n").unwrap();
    assert_eq!(a.aws_iid.proof, Proof::Signature);
    a.aws_iid.validate().unwrap();
    assert!(toml::from_str::<Agent>("[aws_iid]\nproof = \"rsa4096\"\n").is_err());
    assert!(toml::from_str::<Agent>("[aws_iid]\nimds = \"x\"\n").is_err());
    for bad in ["169.254.169.254", "ftp://169.254.169.254", "http://169.254.169.254/?x=1"] {
        let e = config(bad, Proof::Rsa2048).validate().unwrap_err();
        assert!(e.starts_with("aws_iid.imds_url"), "{e}");
    }
}
