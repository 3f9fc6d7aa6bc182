//! The `k8s` attestor against a kubelet-shaped server on loopback and a synthetic
//! `/proc` tree in a temporary directory.
//!
//! No real kubelet can run on the machines these tests run on, so the server
//! (`ferrid_attest_k8s::testkit::FakeKubelet`) follows the kubelet's published `/pods`
//! API: `GET /pods` answers a `v1.PodList` (the fixture `testdata/podlist.json`, shaped
//! like a real node's answer), chunked; the secure port is HTTPS with a certificate from
//! a test CA made by `rcgen` and answers `401 Unauthorized` to a missing or wrong bearer
//! token; the read-only port is plain HTTP.
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use ferrid_attest::{AttestError, PeerCredentials, WorkloadAttestor};
use ferrid_attest_k8s::testkit::{
    FakeKubelet, POD_LIST_JSON, TestPki, containerd_cgroup, fixture::*, write_process,
};
use ferrid_attest_k8s::{K8sAttestor, K8sConfig, PodList};

const TOKEN: &str = "eyJhbGciOiJSUzI1NiJ9.first-token.sig";
const UID: u32 = 1000;

struct Setup {
    kubelet: FakeKubelet,
    dir: tempfile::TempDir,
    cfg: K8sConfig,
}

impl Setup {
    async fn https() -> Self {
        let kubelet = FakeKubelet::https(TOKEN).await;
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("ca.crt"), kubelet.ca_pem()).unwrap();
        std::fs::write(dir.path().join("token"), format!("{TOKEN}\n")).unwrap();
        std::fs::create_dir(dir.path().join("proc")).unwrap();
        let cfg = K8sConfig {
            kubelet_host: "127.0.0.1".into(),
            kubelet_secure_port: kubelet.port(),
            kubelet_ca_path: dir.path().join("ca.crt"),
            token_path: dir.path().join("token"),
            proc_root: dir.path().join("proc"),
            // Long enough that no test depends on timing; tests that need a refetch
            // set it to zero.
            pod_list_cache: Duration::from_secs(3600),
            ..K8sConfig::default()
        };
        Self { kubelet, dir, cfg }
    }

    fn proc(&self) -> PathBuf {
        self.dir.path().join("proc")
    }

    /// A process `pid` in `cgroup`, owned by [`UID`].
    fn process(&self, pid: i32, cgroup: &str) -> PeerCredentials {
        write_process(&self.proc(), pid, UID, 4242, cgroup);
        PeerCredentials { pid, uid: UID, gid: UID }
    }

    fn attestor(&self) -> K8sAttestor {
        K8sAttestor::new(self.cfg.clone()).unwrap()
    }
}

fn sorted(v: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = v.iter().map(|s| (*s).to_owned()).collect();
    v.sort();
    v
}

/// The fixture without `container_id` in any status, as while the container is created.
fn list_without(container_id: &str) -> String {
    let hidden = POD_LIST_JSON.replace(container_id, "");
    assert_ne!(hidden, POD_LIST_JSON);
    hidden
}

#[tokio::test(flavor = "multi_thread")]
async fn every_selector_of_a_regular_container() {
    let s = Setup::https().await;
    let a = s.attestor();
    assert_eq!(a.name(), "k8s");
    let sels = a.attest(s.process(101, &containerd_cgroup(WEB_POD_UID, WEB))).await.unwrap();
    assert_eq!(
        sels,
        sorted(&[
            "ns:shop",
            "sa:web",
            "pod-name:web-7d4b9c8f6d-x2k9p",
            "pod-uid:8a5f3c2e-4b1d-4e6f-9a7b-1c2d3e4f5a6b",
            "pod-label:app:web",
            "pod-label:app.kubernetes.io/part-of:shop",
            "pod-label:pod-template-hash:7d4b9c8f6d",
            "pod-owner:ReplicaSet:web-7d4b9c8f6d",
            "pod-owner-uid:ReplicaSet:3f0e6a1b-9c2d-4e8f-a7b6-5c4d3e2f1a0b",
            "container-name:web",
            // As written in the pod spec, and as the runtime resolved it.
            "container-image:nginx:1.27",
            "container-image:docker.io/library/nginx:1.27",
            "container-image:docker.io/library/nginx@sha256:d59470ceeef294b01be2bc6e1ca31b875ca231a91837c189596c6188ffbbcfcc",
            "node-name:worker-1",
        ])
    );
    assert_eq!(s.kubelet.requests(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn init_ephemeral_and_other_runtimes_containers() {
    let s = Setup::https().await;
    let a = s.attestor();
    let has = |sels: &[String], want: &[&str]| {
        for w in want {
            assert!(sels.contains(&(*w).to_owned()), "{w} missing from {sels:?}");
        }
    };
    // The sidecar of the same pod: its own name and image, the pod's selectors.
    let sels = a.attest(s.process(102, &containerd_cgroup(WEB_POD_UID, LOG_SHIPPER))).await.unwrap();
    has(&sels, &["ns:shop", "sa:web", "container-name:log-shipper", "container-image:fluent/fluent-bit:3.1"]);
    assert!(!sels.contains(&"container-name:web".to_owned()));
    // An init container (matched through initContainerStatuses).
    let sels = a.attest(s.process(103, &containerd_cgroup(WEB_POD_UID, MIGRATE))).await.unwrap();
    has(
        &sels,
        &[
            "container-name:migrate",
            "container-image:ghcr.io/acme/migrate:v12",
            "pod-name:web-7d4b9c8f6d-x2k9p",
        ],
    );
    // An ephemeral debug container (ephemeralContainerStatuses).
    let sels = a.attest(s.process(104, &containerd_cgroup(WEB_POD_UID, DEBUGGER))).await.unwrap();
    has(&sels, &["container-name:debugger-7xk2p", "container-image:busybox:1.36", "sa:web"]);
    // CRI-O (cri-o:// IDs), systemd driver, Guaranteed QoS: spec and status images
    // differ only by registry, both kept; the image ID once.
    let u = DB_POD_UID.replace('-', "_");
    let cg = format!("0::/kubepods.slice/kubepods-pod{u}.slice/crio-{POSTGRES}.scope\n");
    let sels = a.attest(s.process(105, &cg)).await.unwrap();
    has(
        &sels,
        &[
            "ns:shop",
            "sa:db",
            "pod-name:db-0",
            "pod-owner:StatefulSet:db",
            "pod-owner-uid:StatefulSet:d9e8f7a6-b5c4-4d3e-2f1a-0b9c8d7e6f5a",
            "pod-label:statefulset.kubernetes.io/pod-name:db-0",
            "container-name:postgres",
            "container-image:postgres:16.4",
            "container-image:docker.io/library/postgres:16.4",
        ],
    );
    assert_eq!(sels.iter().filter(|v| v.starts_with("container-image:")).count(), 3, "{sels:?}");
    // Docker (docker:// IDs), cgroupfs driver on cgroup v1, BestEffort QoS.
    let p = format!("/kubepods/besteffort/pod{NODE_EXPORTER_POD_UID}/{NODE_EXPORTER}");
    let cg = format!("11:memory:{p}\n4:cpu,cpuacct:{p}\n1:name=systemd:{p}\n");
    let sels = a.attest(s.process(106, &cg)).await.unwrap();
    has(
        &sels,
        &[
            "ns:monitoring",
            "sa:node-exporter",
            "pod-owner:DaemonSet:node-exporter",
            "container-image:quay.io/prometheus/node-exporter:v1.8.2",
            "container-image:docker-pullable://quay.io/prometheus/node-exporter@sha256:2e0c19f0355831b2d5324aa9c21989e127d0881375b3448e399603f617643b0e",
        ],
    );
    // A static pod: hash UID, owned by its Node, no service account.
    let sels = a.attest(s.process(107, &containerd_cgroup(APISERVER_POD_UID, APISERVER))).await.unwrap();
    has(&sels, &["ns:kube-system", "pod-owner:Node:worker-1", "pod-uid:5c3f9d2b8e1a4f7c6b0d9e8a7f6c5b4a"]);
    assert!(!sels.iter().any(|v| v.starts_with("sa:")), "{sels:?}");
    // All of it from one cached list.
    assert_eq!(s.kubelet.requests(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn host_processes_and_non_pod_containers_are_not_applicable() {
    let s = Setup::https().await;
    let a = s.attestor();
    for (pid, cg) in [
        (201, "0::/user.slice/user-1000.slice/session-3.scope\n".to_owned()),
        (202, "0::/system.slice/kubelet.service\n".to_owned()),
        (
            203,
            format!(
                "0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{}.slice/crio-conmon-{POSTGRES}.scope\n",
                DB_POD_UID.replace('-', "_")
            ),
        ),
    ] {
        let e = a.attest(s.process(pid, &cg)).await.unwrap_err();
        assert!(matches!(e, AttestError::NotApplicable(_)), "{cg}: {e:?}");
        assert!(e.to_string().contains(&pid.to_string()), "{e}");
    }
    assert_eq!(s.kubelet.requests(), 0, "host processes cost no kubelet request");
    // A plain Docker container the kubelet does not run: one lookup, no waiting.
    let e =
        a.attest(s.process(204, &format!("0::/system.slice/docker-{UNKNOWN}.scope\n"))).await.unwrap_err();
    assert!(matches!(e, AttestError::NotApplicable(_)), "{e:?}");
    assert!(e.to_string().contains(UNKNOWN), "{e}");
    assert_eq!(s.kubelet.requests(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn wrong_token_is_refused_and_never_shown() {
    let s = Setup::https().await;
    let wrong = "eyJhbGciOiJSUzI1NiJ9.stolen-or-stale.sig";
    std::fs::write(&s.cfg.token_path, wrong).unwrap();
    let e = s.attestor().attest(s.process(301, &containerd_cgroup(WEB_POD_UID, WEB))).await.unwrap_err();
    let msg = e.to_string();
    assert!(matches!(e, AttestError::Unavailable(_)), "{e:?}");
    assert!(msg.contains("401 Unauthorized"), "{msg}");
    assert!(msg.contains(&format!("https://127.0.0.1:{}/pods", s.kubelet.port())), "{msg}");
    assert!(msg.contains(&s.cfg.token_path.display().to_string()), "names the token file: {msg}");
    assert!(!msg.contains("stolen-or-stale") && !msg.contains(TOKEN), "no token in the message: {msg}");
    // An unreadable token file is named too.
    std::fs::remove_file(&s.cfg.token_path).unwrap();
    let a = K8sAttestor::new(K8sConfig { pod_list_cache: Duration::ZERO, ..s.cfg.clone() }).unwrap();
    let e = a.attest(s.process(302, &containerd_cgroup(WEB_POD_UID, WEB))).await.unwrap_err();
    assert!(matches!(e, AttestError::Unavailable(_)), "{e:?}");
    assert!(e.to_string().contains("cannot read the service-account token"), "{e}");
}

#[tokio::test(flavor = "multi_thread")]
async fn rotated_token_is_picked_up() {
    let mut s = Setup::https().await;
    s.cfg.pod_list_cache = Duration::ZERO;
    let a = s.attestor();
    let peer = s.process(401, &containerd_cgroup(WEB_POD_UID, WEB));
    a.attest(peer).await.unwrap();
    // The kubelet now wants the rotated token; the old one on disk is refused...
    s.kubelet.set_token("eyJhbGciOiJSUzI1NiJ9.second-token.sig");
    let e = a.attest(peer).await.unwrap_err();
    assert!(e.to_string().contains("401"), "{e}");
    // ...until the kubelet writes the new one, which the next request reads.
    std::fs::write(&s.cfg.token_path, "eyJhbGciOiJSUzI1NiJ9.second-token.sig\n").unwrap();
    let sels = a.attest(peer).await.unwrap();
    assert!(sels.contains(&"sa:web".to_owned()));
    assert_eq!(s.kubelet.requests(), 3);
}

#[tokio::test(flavor = "multi_thread")]
async fn ca_mismatch_is_a_tls_failure_and_skip_verification_accepts_it() {
    let mut s = Setup::https().await;
    let other = TestPki::generate();
    std::fs::write(&s.cfg.kubelet_ca_path, &other.ca_pem).unwrap();
    let peer = s.process(501, &containerd_cgroup(WEB_POD_UID, WEB));
    let e = s.attestor().attest(peer).await.unwrap_err();
    assert!(matches!(e, AttestError::Unavailable(_)), "{e:?}");
    let msg = e.to_string();
    assert!(msg.contains("TLS handshake failed: invalid peer certificate: UnknownIssuer"), "{msg}");
    assert_eq!(s.kubelet.requests(), 0, "nothing was sent to an unverified server");

    s.cfg.skip_kubelet_verification = true;
    s.cfg.kubelet_ca_path = PathBuf::from("/nonexistent/ca.crt");
    let sels = s.attestor().attest(peer).await.unwrap();
    assert!(sels.contains(&"ns:shop".to_owned()));
    assert_eq!(s.kubelet.requests(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn verification_checks_the_host_name() {
    // A kubelet whose certificate names only `localhost`: reached as 127.0.0.1 it is
    // refused, reached as localhost it is accepted.
    let mut s = Setup::https().await;
    let named = FakeKubelet::https_for(TOKEN, &["localhost"]).await;
    std::fs::write(&s.cfg.kubelet_ca_path, named.ca_pem()).unwrap();
    s.cfg.kubelet_secure_port = named.port();
    let peer = s.process(502, &containerd_cgroup(WEB_POD_UID, WEB));
    let e = s.attestor().attest(peer).await.unwrap_err();
    assert!(matches!(e, AttestError::Unavailable(_)), "{e:?}");
    assert!(e.to_string().contains("certificate not valid for name"), "{e}");
    s.cfg.kubelet_host = "localhost".into();
    assert!(s.attestor().attest(peer).await.is_ok());
    assert_eq!(named.requests(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn read_only_port_over_plain_http() {
    let kubelet = FakeKubelet::http().await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = K8sConfig {
        kubelet_host: "127.0.0.1".into(),
        kubelet_read_only_port: Some(kubelet.port()),
        // Neither is needed, or read, on the read-only port.
        kubelet_ca_path: "/nonexistent/ca.crt".into(),
        token_path: "/nonexistent/token".into(),
        proc_root: dir.path().to_owned(),
        ..K8sConfig::default()
    };
    write_process(dir.path(), 601, UID, 1, &containerd_cgroup(WEB_POD_UID, WEB));
    let a = K8sAttestor::new(cfg).unwrap();
    assert_eq!(a.kubelet_url(), format!("http://127.0.0.1:{}/pods", kubelet.port()));
    let sels = a.attest(PeerCredentials { pid: 601, uid: UID, gid: UID }).await.unwrap();
    assert!(sels.contains(&"container-name:web".to_owned()), "{sels:?}");
    assert_eq!(kubelet.requests(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_container_listed_late_is_found_by_looking_again() {
    let s = Setup::https().await;
    // The first three answers do not have the container yet (its status has no ID, as
    // while the runtime creates it); the fourth does.
    s.kubelet.set_body(list_without(WEB));
    s.kubelet.set_body_after(3, POD_LIST_JSON);
    let sels = s.attestor().attest(s.process(701, &containerd_cgroup(WEB_POD_UID, WEB))).await.unwrap();
    assert!(sels.contains(&"container-name:web".to_owned()), "{sels:?}");
    assert_eq!(s.kubelet.requests(), 4, "one fetch per look, the cache does not hide a missing container");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_container_never_listed_is_refused_after_the_bound() {
    let mut s = Setup::https().await;
    s.cfg.pod_wait = Duration::from_millis(300);
    let e = s.attestor().attest(s.process(801, &containerd_cgroup(WEB_POD_UID, UNKNOWN))).await.unwrap_err();
    assert!(matches!(e, AttestError::Rejected(_)), "{e:?}");
    let msg = e.to_string();
    assert!(msg.contains(UNKNOWN), "names the container: {msg}");
    assert!(msg.contains(WEB_POD_UID), "names the pod: {msg}");
    assert!(msg.contains("after waiting 300ms"), "says how long: {msg}");
    assert!(s.kubelet.requests() >= 2, "looked more than once");

    // A previous instance of a container (only in lastState) is not a match either.
    s.cfg.pod_wait = Duration::ZERO;
    let e =
        s.attestor().attest(s.process(802, &containerd_cgroup(WEB_POD_UID, WEB_PREVIOUS))).await.unwrap_err();
    assert!(e.to_string().contains(WEB_PREVIOUS), "{e}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_burst_costs_one_request() {
    let s = Setup::https().await;
    let a = Arc::new(s.attestor());
    let peers: Vec<_> = (0..20)
        .map(|i| {
            let (uid, id) = if i % 2 == 0 { (WEB_POD_UID, WEB) } else { (WEB_POD_UID, LOG_SHIPPER) };
            s.process(900 + i, &containerd_cgroup(uid, id))
        })
        .collect();
    let results = futures::future::join_all(peers.iter().map(|p| a.attest(*p))).await;
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    assert_eq!(s.kubelet.requests(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_lookups_share_the_fetch_in_flight() {
    // No cache at all: only the sharing of an in-flight fetch saves requests.
    let mut s = Setup::https().await;
    s.cfg.pod_list_cache = Duration::ZERO;
    let a = Arc::new(s.attestor());
    let p1 = s.process(951, &containerd_cgroup(WEB_POD_UID, WEB));
    let p2 = s.process(952, &containerd_cgroup(DB_POD_UID, POSTGRES).replace("cri-containerd-", "crio-"));
    s.kubelet.hold();
    let first = tokio::spawn({
        let a = a.clone();
        async move { a.attest(p1).await }
    });
    while s.kubelet.requests() < 1 {
        tokio::task::yield_now().await;
    }
    // The first lookup's fetch is in flight (held by the server). Poll the second once
    // so it queues behind it, then let the answer go.
    let mut second = Box::pin(a.attest(p2));
    assert!(futures::poll!(second.as_mut()).is_pending());
    s.kubelet.release();
    assert!(first.await.unwrap().is_ok());
    let sels = second.await.unwrap();
    assert!(sels.contains(&"pod-name:db-0".to_owned()));
    assert_eq!(s.kubelet.requests(), 1, "the second lookup used the first one's fetch");
    // With no fetch in flight and no cache, the next lookup fetches again.
    a.attest(p1).await.unwrap();
    assert_eq!(s.kubelet.requests(), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn oversize_answers_are_refused() {
    let mut s = Setup::https().await;
    s.cfg.pod_list_cache = Duration::ZERO;
    let peer = s.process(1001, &containerd_cgroup(WEB_POD_UID, WEB));
    // Exactly at the limit is fine, one byte less is not (chunked, no Content-Length).
    s.cfg.max_pod_list_bytes = POD_LIST_JSON.len();
    s.attestor().attest(peer).await.unwrap();
    s.cfg.max_pod_list_bytes = POD_LIST_JSON.len() - 1;
    let e = s.attestor().attest(peer).await.unwrap_err();
    assert!(matches!(e, AttestError::Unavailable(_)), "{e:?}");
    assert!(
        e.to_string().contains(&format!("larger than the {}-byte limit", POD_LIST_JSON.len() - 1)),
        "{e}"
    );
    // The default limit, 32 MiB.
    s.cfg.max_pod_list_bytes = ferrid_attest_k8s::MAX_POD_LIST_BYTES;
    let mut big = POD_LIST_JSON.trim_end().trim_end_matches('}').to_owned();
    big.push_str(&format!(",\"padding\":\"{}\"}}", "x".repeat(32 * 1024 * 1024)));
    s.kubelet.set_body(big);
    let e = s.attestor().attest(peer).await.unwrap_err();
    assert!(e.to_string().contains("larger than the 33554432-byte limit"), "{e}");
}

#[tokio::test(flavor = "multi_thread")]
async fn malformed_answers_are_refused() {
    let s = Setup::https().await;
    s.kubelet.set_body("{\"kind\":\"PodList\",\"items\":[{\"metadata\":");
    let e = s.attestor().attest(s.process(1101, &containerd_cgroup(WEB_POD_UID, WEB))).await.unwrap_err();
    assert!(matches!(e, AttestError::Malformed(_)), "{e:?}");
    assert!(e.to_string().contains("not valid PodList JSON"), "{e}");
    assert!(e.to_string().contains(&format!("127.0.0.1:{}", s.kubelet.port())), "{e}");
}

#[tokio::test(flavor = "multi_thread")]
async fn unreachable_kubelet_is_unavailable() {
    let mut s = Setup::https().await;
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    s.cfg.kubelet_secure_port = closed;
    let e = s.attestor().attest(s.process(1201, &containerd_cgroup(WEB_POD_UID, WEB))).await.unwrap_err();
    assert!(matches!(e, AttestError::Unavailable(_)), "{e:?}");
    assert!(e.to_string().contains(&format!("https://127.0.0.1:{closed}/pods: cannot connect")), "{e}");
}

#[tokio::test(flavor = "multi_thread")]
async fn pid_reuse_during_attestation_is_refused() {
    let s = Setup::https().await;
    let peer = s.process(1301, &containerd_cgroup(WEB_POD_UID, WEB));
    // While the kubelet answers, the process exits and its pid goes to another one
    // (a new start time).
    let proc_root = s.proc();
    s.kubelet.on_request(move |_| write_process(&proc_root, 1301, UID, 9999, "0::/\n"));
    let e = s.attestor().attest(peer).await.unwrap_err();
    assert!(matches!(e, AttestError::Rejected(_)), "{e:?}");
    assert!(e.to_string().contains("pid reused"), "{e}");
    // And a pid that belongs to another user than the socket's peer is refused upfront.
    let e = s.attestor().attest(PeerCredentials { uid: UID + 1, ..peer }).await.unwrap_err();
    assert!(matches!(e, AttestError::Rejected(_)), "{e:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_container_in_another_pod_than_its_cgroup_says_is_refused() {
    let s = Setup::https().await;
    let e = s.attestor().attest(s.process(1401, &containerd_cgroup(DB_POD_UID, WEB))).await.unwrap_err();
    assert!(matches!(e, AttestError::Rejected(_)), "{e:?}");
    assert!(e.to_string().contains(DB_POD_UID) && e.to_string().contains(WEB_POD_UID), "{e}");
}

#[test]
fn fixture_indexes_every_started_container() {
    let l = PodList::parse(POD_LIST_JSON.as_bytes()).unwrap();
    assert_eq!(l.len(), 5);
    let mut want = vec![WEB, LOG_SHIPPER, MIGRATE, DEBUGGER, POSTGRES, NODE_EXPORTER, APISERVER];
    want.push("6c77a388f54d7b3d954a5f5a2d849bf1664f5d1f5cd4dcc4fc3e9ec847d9c37c"); // db-init
    want.sort_unstable();
    assert_eq!(
        l.container_ids(),
        want,
        "the pending pod's container has no ID yet; lastState is not indexed"
    );
}
