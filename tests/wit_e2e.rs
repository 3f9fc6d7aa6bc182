//! End-to-end: WIT-SVIDs from the real `ferrid server` and `ferrid agent` binaries.
//! The workload calls FetchWITSVID and FetchWITBundles on the agent's socket with the
//! generated tonic client, builds a Workload Proof Token with the private key it got,
//! and a relying service verifies WIT + WPT with `ferrid-wimse`.
mod common;

use std::time::Duration;

use common::*;
use ferrid_proto::workload::{
    WitBundlesRequest, WitsvidRequest, WitsvidResponse, spiffe_workload_api_client::SpiffeWorkloadApiClient,
};
use ferrid_wimse::{RequestContext, WimseError, WptVerifier, create_wpt};
use tonic::Request;
use tonic::transport::Channel;

async fn connect(
    socket: std::path::PathBuf,
) -> Result<SpiffeWorkloadApiClient<Channel>, tonic::transport::Error> {
    let channel = tonic::transport::Endpoint::from_static("http://agent.invalid")
        .connect_with_connector(tower::service_fn(move |_: tonic::transport::Uri| {
            let p = socket.clone();
            async move { tokio::net::UnixStream::connect(p).await.map(hyper_util::rt::TokioIo::new) }
        }))
        .await?;
    Ok(SpiffeWorkloadApiClient::new(channel))
}

fn with_header<T>(msg: T) -> Request<T> {
    let mut r = Request::new(msg);
    r.metadata_mut().insert("workload.spiffe.io", "true".parse().unwrap());
    r
}

fn now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64
}

#[tokio::test(flavor = "multi_thread")]
async fn wit_svids_through_the_workload_api_verify_with_a_proof() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(&tmp.path().join("server"));
    // A 20 s JWT TTL: WITs live as JWT-SVIDs do, so a new one arrives after ~10 s.
    let (agent, _) = enrol(&server, tmp.path(), &[("web", &["--jwt-ttl", "20s"]), ("db", &[])]);
    let mut client = eventually(30, "connect", || connect(agent.socket.clone())).await;
    let web = format!("spiffe://{TD}/web");

    // FetchWITSVID: every identity, each with its own key.
    let mut stream = eventually(30, "FetchWITSVID", || {
        let mut c = client.clone();
        async move { c.fetch_witsvid(with_header(WitsvidRequest::default())).await }
    })
    .await
    .into_inner();
    let first: WitsvidResponse = stream.message().await.unwrap().expect("a first response");
    let ids: Vec<&str> = first.svids.iter().map(|s| s.spiffe_id.as_str()).collect();
    assert_eq!(ids.len(), 2, "{ids:?}");
    let svid = first.svids.iter().find(|s| s.spiffe_id == web).expect("web").clone();
    assert_eq!(svid.hint, "web");
    let key: serde_json::Value = serde_json::from_str(&svid.wit_svid_key).unwrap();
    assert_eq!((key["kty"].as_str(), key["crv"].as_str()), (Some("EC"), Some("P-256")));
    assert!(key["d"].is_string(), "wit_svid_key is the private JWK");

    // FetchWITBundles: the trust domain's WIT keys as a JWKS.
    let mut bundles = client.fetch_wit_bundles(with_header(WitBundlesRequest {})).await.unwrap().into_inner();
    let bundles = bundles.message().await.unwrap().expect("a bundle message");
    let jwks = bundles.bundles.get(&format!("spiffe://{TD}")).expect("bundle keyed by trust domain").clone();
    assert!(jwks.contains("\"wit-svid\""), "{jwks}");

    // The workload proves possession for one request; the service verifies both.
    let aud = "https://orders.e2e.example.org/v1/orders";
    let td = ferrid_types::TrustDomain::new(TD).unwrap();
    let verifier = WptVerifier::new();
    let wpt = create_wpt(&svid.wit_svid, &svid.wit_svid_key, aud, 60, now()).unwrap();
    let ctx = RequestContext::new(aud);
    let (wit, _) =
        verifier.verify_request(Some(&svid.wit_svid), Some(&wpt), &jwks, &td, &ctx, now()).unwrap();
    assert_eq!(wit.spiffe_id.to_string(), web);
    assert_eq!(
        verifier.verify_request(Some(&svid.wit_svid), Some(&wpt), &jwks, &td, &ctx, now()).unwrap_err(),
        WimseError::Replayed { sub: web.clone(), jti: jti_of(&wpt) },
    );
    assert_eq!(
        verifier.verify_request(Some(&svid.wit_svid), None, &jwks, &td, &ctx, now()).unwrap_err(),
        WimseError::MissingProof
    );
    // The other identity's key cannot prove this WIT.
    let db = first.svids.iter().find(|s| s.spiffe_id != web).unwrap();
    let stolen = create_wpt(&svid.wit_svid, &db.wit_svid_key, aud, 60, now()).unwrap();
    assert!(matches!(
        verifier.verify_request(Some(&svid.wit_svid), Some(&stolen), &jwks, &td, &ctx, now()),
        Err(WimseError::BadSignature { .. })
    ));

    // A request for one identity gets only that one.
    let only = client
        .fetch_witsvid(with_header(WitsvidRequest { spiffe_id: web.clone() }))
        .await
        .unwrap()
        .into_inner()
        .message()
        .await
        .unwrap()
        .unwrap();
    assert_eq!(only.svids.len(), 1);
    assert_eq!(only.svids[0].wit_svid, svid.wit_svid, "served from the agent's cache");
    let e = client
        .fetch_witsvid(with_header(WitsvidRequest { spiffe_id: format!("spiffe://{TD}/nobody") }))
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::PermissionDenied);
    let e = client.fetch_witsvid(Request::new(WitsvidRequest::default())).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument, "security header required");

    // Before half of its 20 s life is gone the stream sends a new WIT with a new key.
    let next = tokio::time::timeout(Duration::from_secs(25), stream.message())
        .await
        .expect("a renewed WIT-SVID within 25 s")
        .unwrap()
        .unwrap();
    let renewed = next.svids.iter().find(|s| s.spiffe_id == web).unwrap();
    assert_ne!(renewed.wit_svid, svid.wit_svid);
    assert_ne!(renewed.wit_svid_key, svid.wit_svid_key, "a fresh key per WIT");
    let wpt = create_wpt(&renewed.wit_svid, &renewed.wit_svid_key, aud, 60, now()).unwrap();
    verifier.verify_request(Some(&renewed.wit_svid), Some(&wpt), &jwks, &td, &ctx, now()).unwrap();
    drop(agent);
    server.stop();
}

/// The `jti` of a token (unverified; test bookkeeping only).
fn jti_of(token: &str) -> String {
    use base64::Engine;
    let claims =
        base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(token.split('.').nth(1).unwrap()).unwrap();
    serde_json::from_slice::<serde_json::Value>(&claims).unwrap()["jti"].as_str().unwrap().to_owned()
}
