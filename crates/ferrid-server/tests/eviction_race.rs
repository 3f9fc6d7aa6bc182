//! Eviction racing renewal, in process: the real server on a real SQLite file, reached
//! over real TLS by a gRPC client, with the datastore wrapped so that the write that
//! records a renewed agent SVID can be held at a gate. The interleaving the issue names
//! (a renewal authenticated, then an eviction commits, then the renewal records) is
//! produced exactly, without sleeps.
use std::sync::{Arc, Mutex};

use ferrid_proto::admin::v1::{self as apb, admin_client::AdminClient};
use ferrid_proto::node::v1::{self as npb, node_client::NodeClient};
use ferrid_store::{
    DelegationRecord, EntryFilter, RevocationKind, RevocationRecord, SqliteStore, Store, StoreError,
    TaskCredential,
};
use ferrid_types::{
    AgentRecord, EntryId, JoinTokenRecord, KeyAlgorithm, RegistrationEntry, SpiffeId, SystemClock,
    TrustDomain,
};
use hyper_util::rt::TokioIo;
use tokio::sync::oneshot;
use tonic::Code;

const TD: &str = "race.example.org";

type Gate = (oneshot::Sender<()>, oneshot::Receiver<()>);

/// A store whose next `record_agent_svid` (when a gate is set) says it arrived, then
/// waits to be let through.
#[derive(Debug)]
struct Gated {
    inner: SqliteStore,
    gate: Mutex<Option<Gate>>,
}

#[async_trait::async_trait]
impl Store for Gated {
    async fn record_agent_svid(&self, agent: &AgentRecord) -> Result<(), StoreError> {
        let gate = self.gate.lock().unwrap().take();
        if let Some((arrived, release)) = gate {
            let _ = arrived.send(());
            let _ = release.await;
        }
        self.inner.record_agent_svid(agent).await
    }
    async fn create_entry(&self, entry: &RegistrationEntry) -> Result<RegistrationEntry, StoreError> {
        self.inner.create_entry(entry).await
    }
    async fn create_entries(
        &self,
        entries: &[RegistrationEntry],
    ) -> Result<Vec<Result<RegistrationEntry, StoreError>>, StoreError> {
        self.inner.create_entries(entries).await
    }
    async fn update_entry(
        &self,
        entry: &RegistrationEntry,
        expected_revision: Option<i64>,
    ) -> Result<RegistrationEntry, StoreError> {
        self.inner.update_entry(entry, expected_revision).await
    }
    async fn delete_entry(&self, id: &EntryId) -> Result<RegistrationEntry, StoreError> {
        self.inner.delete_entry(id).await
    }
    async fn get_entry(&self, id: &EntryId) -> Result<Option<RegistrationEntry>, StoreError> {
        self.inner.get_entry(id).await
    }
    async fn list_entries(&self, filter: &EntryFilter) -> Result<Vec<RegistrationEntry>, StoreError> {
        self.inner.list_entries(filter).await
    }
    async fn list_entries_page(
        &self,
        after: Option<&EntryId>,
        limit: u32,
    ) -> Result<Vec<RegistrationEntry>, StoreError> {
        self.inner.list_entries_page(after, limit).await
    }
    async fn create_join_token(&self, token: &JoinTokenRecord) -> Result<(), StoreError> {
        self.inner.create_join_token(token).await
    }
    async fn get_join_token(&self, id: &str) -> Result<Option<JoinTokenRecord>, StoreError> {
        self.inner.get_join_token(id).await
    }
    async fn consume_join_token(&self, id: &str, now: i64) -> Result<JoinTokenRecord, StoreError> {
        self.inner.consume_join_token(id, now).await
    }
    async fn prune_join_tokens(&self, now: i64) -> Result<u64, StoreError> {
        self.inner.prune_join_tokens(now).await
    }
    async fn upsert_agent(&self, agent: &AgentRecord) -> Result<(), StoreError> {
        self.inner.upsert_agent(agent).await
    }
    async fn get_agent(&self, id: &SpiffeId) -> Result<Option<AgentRecord>, StoreError> {
        self.inner.get_agent(id).await
    }
    async fn list_agents(&self) -> Result<Vec<AgentRecord>, StoreError> {
        self.inner.list_agents().await
    }
    async fn ban_agent(&self, id: &SpiffeId) -> Result<AgentRecord, StoreError> {
        self.inner.ban_agent(id).await
    }
    async fn record_replay(&self, key: &str, expires_at: i64, now: i64) -> Result<(), StoreError> {
        self.inner.record_replay(key, expires_at, now).await
    }
    async fn record_task_credential(&self, c: &TaskCredential) -> Result<(), StoreError> {
        self.inner.record_task_credential(c).await
    }
    async fn list_task_credentials(&self, task_id: &str) -> Result<Vec<TaskCredential>, StoreError> {
        self.inner.list_task_credentials(task_id).await
    }
    async fn append_revocations(&self, revs: &mut [RevocationRecord]) -> Result<(), StoreError> {
        self.inner.append_revocations(revs).await
    }
    async fn list_revocations(&self, after: u64, now: i64) -> Result<Vec<RevocationRecord>, StoreError> {
        self.inner.list_revocations(after, now).await
    }
    async fn prune_revocations(&self, now: i64) -> Result<u64, StoreError> {
        self.inner.prune_revocations(now).await
    }
    async fn record_delegation(&self, d: &DelegationRecord) -> Result<(), StoreError> {
        self.inner.record_delegation(d).await
    }
    async fn get_delegation(&self, jti: &str) -> Result<Option<DelegationRecord>, StoreError> {
        self.inner.get_delegation(jti).await
    }
    async fn delegation_descendants(
        &self,
        roots: &[String],
        now: i64,
    ) -> Result<Vec<DelegationRecord>, StoreError> {
        self.inner.delegation_descendants(roots, now).await
    }
    async fn delegations_by_subject(
        &self,
        subject: &str,
        now: i64,
    ) -> Result<Vec<DelegationRecord>, StoreError> {
        self.inner.delegations_by_subject(subject, now).await
    }
    async fn prune_delegations(&self, now: i64) -> Result<u64, StoreError> {
        self.inner.prune_delegations(now).await
    }
    async fn get_ca_state(&self) -> Result<Option<Vec<u8>>, StoreError> {
        self.inner.get_ca_state().await
    }
    async fn put_ca_state(&self, state: &[u8]) -> Result<(), StoreError> {
        self.inner.put_ca_state(state).await
    }
    async fn list_changes(&self, after: u64, limit: u32) -> Result<Vec<ferrid_store::Change>, StoreError> {
        self.inner.list_changes(after, limit).await
    }
    async fn last_change(&self) -> Result<u64, StoreError> {
        self.inner.last_change().await
    }
    async fn prune_changes(&self, keep: u64) -> Result<u64, StoreError> {
        self.inner.prune_changes(keep).await
    }
}

struct Harness {
    _dir: tempfile::TempDir,
    store: Arc<Gated>,
    server: Option<ferrid_server::ServerHandle>,
}

impl Harness {
    async fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let cfg = ferrid_server::ServerConfig::parse(&format!(
            "trust_domain = \"{TD}\"\ndata_dir = \"{d}/data\"\nbind_address = \"127.0.0.1:0\"\n\
             health_address = \"\"\nadmin_socket = \"{d}/admin.sock\"\n",
            d = dir.path().display()
        ))
        .unwrap();
        let db = dir.path().join("data").join(ferrid_server::DATASTORE_FILE);
        let inner = SqliteStore::open(db).await.unwrap();
        let store = Arc::new(Gated { inner, gate: Mutex::new(None) });
        let server =
            ferrid_server::start_with_store(cfg, Arc::new(SystemClock), store.clone()).await.unwrap();
        Self { _dir: dir, store, server: Some(server) }
    }

    fn server(&self) -> &ferrid_server::ServerHandle {
        self.server.as_ref().unwrap()
    }

    async fn admin(&self) -> AdminClient<tonic::transport::Channel> {
        let path = self.server().admin_socket.clone();
        let channel = tonic::transport::Endpoint::from_static("http://admin.invalid")
            .connect_with_connector(tower::service_fn(move |_: tonic::transport::Uri| {
                let p = path.clone();
                async move { tokio::net::UnixStream::connect(p).await.map(TokioIo::new) }
            }))
            .await
            .unwrap();
        AdminClient::new(channel)
    }

    /// Attests a new agent with a join token; returns its node client (mutual TLS with
    /// its SVID) and its SPIFFE ID.
    async fn attested_agent(&self) -> (NodeClient<tonic::transport::Channel>, SpiffeId) {
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        let token = ferrid_attest_join_token::generate(now, 600);
        self.store.create_join_token(&token.record).await.unwrap();
        let (key, csr) = ferrid_ca::generate_key_and_csr(KeyAlgorithm::EcP256, None).unwrap();
        // Attestation needs no client certificate; the trust bundle comes back with it.
        let tls = ferrid_server::tls::insecure_client_config(None).unwrap();
        let addr = self.server().node_addr.to_string();
        let mut anon = NodeClient::new(ferrid_server::client::node_channel(&addr, tls).await.unwrap());
        let first = npb::AttestAgentRequest {
            step: Some(npb::attest_agent_request::Step::Params(npb::AttestParams {
                data: Some(npb::AttestationData {
                    r#type: "join_token".into(),
                    payload: token.token.into_bytes(),
                }),
                csr,
            })),
        };
        let mut stream = anon.attest_agent(tokio_stream::iter(vec![first])).await.unwrap().into_inner();
        let Some(npb::attest_agent_response::Step::Result(result)) =
            stream.message().await.unwrap().and_then(|m| m.step)
        else {
            panic!("attestation did not answer with a result");
        };
        let roots = result.bundle.unwrap().x509_authorities;
        let svid = result.svid.unwrap();
        let td = TrustDomain::new(TD).unwrap();
        let tls = ferrid_server::tls::client_config(
            &roots,
            ferrid_types::server_id(&td),
            Some((&svid.cert_chain, &key)),
        )
        .unwrap();
        let node = NodeClient::new(ferrid_server::client::node_channel(&addr, tls).await.unwrap());
        (node, SpiffeId::new(&svid.spiffe_id).unwrap())
    }

    async fn evict(&self, id: &SpiffeId) {
        let req = apb::EvictAgentRequest { spiffe_id: id.to_string() };
        self.admin().await.evict_agent(req).await.expect("eviction");
    }

    /// The serials the revocation feed has revoked.
    async fn revoked_serials(&self) -> Vec<String> {
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        self.store
            .list_revocations(0, now)
            .await
            .unwrap()
            .into_iter()
            .filter(|r| r.kind == RevocationKind::X509)
            .map(|r| r.value)
            .collect()
    }

    async fn stop(mut self) {
        self.server.take().unwrap().shutdown().await;
    }
}

fn csr() -> Vec<u8> {
    ferrid_ca::generate_key_and_csr(KeyAlgorithm::EcP256, None).unwrap().1
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_renewal_in_flight_cannot_undo_an_eviction() {
    let h = Harness::start().await;
    let (mut node, agent) = h.attested_agent().await;
    // The renewal authenticates (the agent is not banned yet), mints, and stops at
    // the gate just before it records the new SVID.
    let (arrived_tx, arrived) = oneshot::channel();
    let (release, release_rx) = oneshot::channel();
    *h.store.gate.lock().unwrap() = Some((arrived_tx, release_rx));
    let renewal = tokio::spawn(async move { node.renew_agent(npb::RenewAgentRequest { csr: csr() }).await });
    arrived.await.unwrap();
    // The eviction commits meanwhile.
    h.evict(&agent).await;
    release.send(()).unwrap();
    let e = renewal.await.unwrap().expect_err("a renewal after the ban got a certificate");
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    assert!(e.message().contains("evicted"), "{e:?}");
    // The ban held in the datastore, and the stored SVID is still the one from before,
    // which the eviction revoked.
    let stored = h.store.get_agent(&agent).await.unwrap().unwrap();
    assert!(stored.banned, "the renewal un-banned the agent");
    let revoked = h.revoked_serials().await;
    assert!(revoked.contains(&stored.svid_serial), "last SVID {} not in {revoked:?}", stored.svid_serial);
    // The server's view (its agent cache) agrees: banned, and the refused SVID is not
    // recorded as the agent's.
    let shown = h
        .admin()
        .await
        .get_agent(apb::GetAgentRequest { spiffe_id: agent.to_string() })
        .await
        .unwrap()
        .into_inner();
    assert!(shown.banned);
    assert_eq!(shown.svid_serial, stored.svid_serial);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_renewals_and_one_eviction_end_banned_and_revoked() {
    let h = Harness::start().await;
    let (node, agent) = h.attested_agent().await;
    let mut renewals = tokio::task::JoinSet::new();
    for _ in 0..8 {
        let mut node = node.clone();
        renewals.spawn(async move {
            let mut granted = Vec::new();
            for _ in 0..10 {
                match node.renew_agent(npb::RenewAgentRequest { csr: csr() }).await {
                    Ok(r) => granted.push(r.into_inner().svid.unwrap().serial),
                    Err(e) => {
                        assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
                        break;
                    }
                }
            }
            granted
        });
    }
    h.evict(&agent).await;
    let mut granted = Vec::new();
    while let Some(r) = renewals.join_next().await {
        granted.extend(r.unwrap());
    }
    let stored = h.store.get_agent(&agent).await.unwrap().unwrap();
    assert!(stored.banned, "a renewal un-banned the agent");
    let revoked = h.revoked_serials().await;
    assert!(
        revoked.contains(&stored.svid_serial),
        "last SVID {} not revoked ({revoked:?})",
        stored.svid_serial
    );
    // Every SVID handed out was recorded before the ban, so the one the ban found is the
    // newest of them.
    assert!(
        granted.is_empty() || granted.contains(&stored.svid_serial),
        "{granted:?} vs {}",
        stored.svid_serial
    );
    // After the eviction every renewal is refused.
    let mut node = node.clone();
    let e = node.renew_agent(npb::RenewAgentRequest { csr: csr() }).await.unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied);
    h.stop().await;
}
