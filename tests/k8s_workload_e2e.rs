//! End-to-end: the `k8s` workload attestor in the real `ferrid agent` binary, against
//! the real `ferrid server`, with a real SPIFFE client (the `spiffe` crate).
//!
//! No real kubelet can run on this machine, so the agent talks to a kubelet-shaped
//! HTTPS server on loopback (`ferrid_attest_k8s::testkit::FakeKubelet`), which follows
//! the kubelet's published `/pods` API: a `v1.PodList` fixture, bearer-token check, TLS
//! with a test CA. The agent's `proc_root` is a synthetic tree in which this test
//! process's pid has its real `stat` and `status` (what the pid-reuse guard reads) and a
//! `cgroup` file placing it in the `web` container of pod `shop/web-7d4b9c8f6d-x2k9p`.
mod common;

use std::collections::BTreeSet;

use common::*;
use ferrid_attest_k8s::testkit::{FakeKubelet, containerd_cgroup, fixture, mirror_process};
use spiffe::WorkloadApiClient;

const KUBELET_TOKEN: &str = "eyJhbGciOiJSUzI1NiJ9.e2e-agent-token.sig";

#[tokio::test(flavor = "multi_thread")]
async fn agent_attests_a_pod_workload_through_the_kubelet() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(&tmp.path().join("server"));
    let kubelet = FakeKubelet::https(KUBELET_TOKEN).await;
    let ca = tmp.path().join("kubelet-ca.crt");
    std::fs::write(&ca, kubelet.ca_pem()).unwrap();
    let token = tmp.path().join("sa-token");
    std::fs::write(&token, KUBELET_TOKEN).unwrap();
    let proc_root = tmp.path().join("proc");
    mirror_process(&proc_root, std::process::id(), &containerd_cgroup(fixture::WEB_POD_UID, fixture::WEB));

    let extra = format!(
        "[k8s]\nkubelet_host = \"127.0.0.1\"\nkubelet_secure_port = {}\nkubelet_ca_path = \"{}\"\n\
         token_path = \"{}\"\nproc_root = \"{}\"\npod_list_cache = \"0s\"\n",
        kubelet.port(),
        ca.display(),
        token.display(),
        proc_root.display()
    );
    let (agent, agent_id) = enrol_with(&server, tmp.path(), &[], &extra);
    let uid = nix::unistd::getuid().as_raw().to_string();
    let entry = |name: &str, selectors: &[String]| {
        let id = format!("spiffe://{TD}/{name}");
        let mut args = vec!["entry", "create", "--spiffe-id", &id, "--parent-id", &agent_id];
        for s in selectors {
            args.extend(["--selector", s.as_str()]);
        }
        server.ok(&args);
    };
    // Pod selectors alone; pod and unix selectors together (the two attestors' union);
    // and two entries the workload must not get.
    entry("shop/web", &["k8s:ns:shop".into(), "k8s:sa:web".into()]);
    entry("shop/web-as-me", &["k8s:container-name:web".into(), format!("unix:uid:{uid}")]);
    entry("other/ns", &["k8s:ns:other".into(), "k8s:sa:web".into()]);
    entry("shop/db", &["k8s:ns:shop".into(), "k8s:sa:db".into()]);

    let client = eventually(30, "connect", || WorkloadApiClient::connect_to(agent.endpoint())).await;
    let ids = eventually(30, "X.509-SVIDs for the pod's entries", || async {
        let ctx = client.fetch_x509_context().await.map_err(|e| format!("{e:?}\n{}", agent.logs()))?;
        let ids: BTreeSet<String> = ctx.svids().iter().map(|s| s.spiffe_id().to_string()).collect();
        if ids.len() == 2 { Ok(ids) } else { Err(format!("not yet: {ids:?}")) }
    })
    .await;
    assert_eq!(
        ids,
        BTreeSet::from([format!("spiffe://{TD}/shop/web"), format!("spiffe://{TD}/shop/web-as-me")])
    );
    let svid = client.fetch_x509_svid().await.unwrap();
    assert!(ids.contains(&svid.spiffe_id().to_string()));
    assert!(kubelet.requests() >= 1);

    // The kubelet stops accepting the agent's token: the workload hears why, as
    // Unavailable (retryable), and the token itself appears nowhere.
    kubelet.set_token("eyJhbGciOiJSUzI1NiJ9.rotated.sig");
    let err = client.fetch_x509_svid().await.unwrap_err();
    let err = format!("{err:?}");
    assert!(err.contains("Unavailable") && err.contains("401"), "{err}");
    assert!(!err.contains(KUBELET_TOKEN));
    // The kubelet rotates the token file; the next request reads the new one.
    std::fs::write(&token, "eyJhbGciOiJSUzI1NiJ9.rotated.sig").unwrap();
    let svid = client.fetch_x509_svid().await.unwrap();
    assert!(ids.contains(&svid.spiffe_id().to_string()));
    assert!(!agent.logs().contains("e2e-agent-token"), "no token in the agent's logs");
    drop(agent);
    server.stop();
}
