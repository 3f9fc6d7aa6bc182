//! `examples/mtls-echo` end to end: the real `ferrid server` and two real `ferrid agent`s
//! (one per service: the `unix` attestor cannot tell two processes of the same binary
//! and uid apart), and the example's echo server and clients — the very code of
//! `crates/ferrid/examples/mtls_echo/echo.rs`, included below — run in this process,
//! each side taking its SVID and bundles from its agent's Workload API socket and
//! following the server's gRPC revocation watch.
//!
//! Claims: an echo round trip works; after the client's SVID rotates, the established
//! connection keeps echoing and new handshakes present the new serial; after
//! `ferrid revoke --serial` of a pinned (stolen) certificate, its next handshake is
//! refused by the validator-based server, while a client with the current SVID still
//! connects.
mod common;

// Some event fields (peer addresses, …) only show in assertion messages.
#[allow(dead_code)]
#[path = "../crates/ferrid/examples/mtls_echo/echo.rs"]
mod echo;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use echo::{ClientOptions, Event, Events, Identity, IdentityOptions};
use ferrid_types::SpiffeId;

/// Everything a component reported, in order.
#[derive(Clone, Default)]
struct Log(Arc<Mutex<Vec<Event>>>);

impl Log {
    fn sink(&self) -> Events {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let log = self.0.clone();
        tokio::spawn(async move {
            while let Some(e) = rx.recv().await {
                log.lock().unwrap().push(e);
            }
        });
        Events::to(tx)
    }

    fn all(&self) -> Vec<Event> {
        self.0.lock().unwrap().clone()
    }

    fn len(&self) -> usize {
        self.0.lock().unwrap().len()
    }

    /// Events after the first `from`.
    fn since(&self, from: usize) -> Vec<Event> {
        self.0.lock().unwrap()[from..].to_vec()
    }
}

fn echoes_on(events: &[Event], hs: u64) -> usize {
    events.iter().filter(|e| matches!(e, Event::Echo { handshake, .. } if *handshake == hs)).count()
}

fn accepted_serials(events: &[Event]) -> Vec<String> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Accepted { client_id, client_serial, .. } => {
                assert_eq!(client_id, &format!("spiffe://{TD}/echo-client"));
                Some(client_serial.clone())
            }
            _ => None,
        })
        .collect()
}

/// The serial our side presented in its first successful handshake.
fn first_presented(events: &[Event]) -> Option<String> {
    events.iter().find_map(|e| match e {
        Event::Connected { presented, .. } => Some(presented.clone()),
        _ => None,
    })
}

/// Waits until `log` holds something `f` finds.
async fn until<T>(secs: u64, what: &str, log: &Log, f: impl Fn(&[Event]) -> Option<T>) -> T {
    eventually(secs, what, || {
        let r = f(&log.all());
        async move { r.ok_or(()) }
    })
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn mutual_tls_echo_rotates_and_refuses_a_revoked_peer() {
    let _ =
        tracing_subscriber::fmt().with_test_writer().with_env_filter("info,ferrid_validate=warn").try_init();
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start_with(
        &tmp.path().join("server"),
        format!("127.0.0.1:{}", free_port()),
        "[revocation]\nheartbeat_interval = \"1s\"\n",
    );
    let (svc_dir, cli_dir) = (tmp.path().join("svc"), tmp.path().join("cli"));
    std::fs::create_dir_all(&svc_dir).unwrap();
    std::fs::create_dir_all(&cli_dir).unwrap();
    let (svc_agent, _) = enrol(&server, &svc_dir, &[("echo-server", &[])]);
    let (cli_agent, _) = enrol(&server, &cli_dir, &[("echo-client", &[])]);
    let server_id = SpiffeId::new(format!("spiffe://{TD}/echo-server")).unwrap();
    let client_id = SpiffeId::new(format!("spiffe://{TD}/echo-client")).unwrap();
    let feed = format!("https://{}", server.node);
    let opts = |agent: &Agent, pin_svid: bool| IdentityOptions {
        endpoint: Some(agent.endpoint()),
        feed: feed.clone(),
        max_staleness: Duration::from_secs(30),
        pin_svid,
    };
    let start = |o: IdentityOptions| async move {
        tokio::time::timeout(Duration::from_secs(60), Identity::start(o))
            .await
            .expect("identity from the Workload API and the feed within 60s")
            .unwrap()
    };

    // The echo server, on the validator's SpiffeClientVerifier (exact client ID + revocation).
    let svc = start(opts(&svc_agent, false)).await;
    assert_eq!(svc.id, server_id);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let srv_log = Log::default();
    tokio::spawn(echo::serve(listener, svc.clone(), client_id.clone(), srv_log.sink()));
    let client_opts = |reconnect_after: Option<u64>, count: Option<u64>| ClientOptions {
        connect: addr.clone(),
        server_id: server_id.clone(),
        interval: Duration::from_millis(100),
        reconnect_after,
        count,
    };

    // 1. An echo round trip over mutual TLS.
    let steady_id = start(opts(&cli_agent, false)).await;
    assert_eq!(steady_id.id, client_id);
    let s1 = steady_id.serial();
    let steady_log = Log::default();
    tokio::spawn(echo::run_client(steady_id.clone(), client_opts(None, None), steady_log.sink()));
    until(30, "first echo", &steady_log, |ev| {
        ev.iter()
            .any(|e| matches!(e, Event::Echo { handshake: 1, line } if line.contains("ping 1 ")))
            .then_some(())
    })
    .await;
    assert_eq!(until(10, "the first handshake", &steady_log, first_presented).await, s1);
    assert!(
        matches!(&steady_log.all()[0], Event::Connected { handshake: 1, server_serial, .. } if *server_serial == svc.serial()),
        "the client saw the server's SVID: {:?}",
        steady_log.all()[0]
    );
    assert_eq!(accepted_serials(&srv_log.all()), vec![s1.clone()], "the server saw the client's serial");

    // 2. Rotation: revoking the SPIFFE ID makes the agent mint a replacement at once.
    server.ok(&["revoke", "--spiffe-id", &client_id.to_string()]);
    let s2 = eventually(20, "the client follows rotation", || {
        let s = steady_id.serial();
        let s1 = s1.clone();
        async move { if s != s1 { Ok(s) } else { Err("still the first SVID") } }
    })
    .await;
    // The established connection (handshake #1, made with s1) keeps echoing: a
    // revocation is checked at handshakes and does not cut live TLS sessions.
    let mark = steady_log.len();
    until(20, "echoes on the old connection after rotation", &steady_log, |_| {
        (echoes_on(&steady_log.since(mark), 1) >= 3).then_some(())
    })
    .await;
    assert!(
        !steady_log.all().iter().any(|e| matches!(e, Event::Lost { .. } | Event::HandshakeFailed { .. })),
        "the old connection was never lost"
    );
    // A new handshake from the same identity presents the new serial, and is accepted.
    let again_log = Log::default();
    echo::run_client(steady_id.clone(), client_opts(None, Some(2)), again_log.sink()).await.unwrap();
    let presented = until(10, "the new handshake", &again_log, first_presented).await;
    assert_eq!(presented, s2, "a new handshake presents the rotated SVID");
    assert_eq!(accepted_serials(&srv_log.all()).last(), Some(&s2));

    // 3. A stolen certificate: an identity pinned to s2 that handshakes again after
    // every echo. Accepted while s2 is valid.
    let stolen_id = start(opts(&cli_agent, true)).await;
    assert_eq!(stolen_id.serial(), s2);
    let stolen_log = Log::default();
    tokio::spawn(echo::run_client(stolen_id.clone(), client_opts(Some(1), None), stolen_log.sink()));
    until(20, "the pinned client is accepted before the revocation", &stolen_log, |ev| {
        ev.iter().any(|e| matches!(e, Event::Echo { .. })).then_some(())
    })
    .await;

    // 4. Revoke s2 by serial: the server refuses the pinned client's next handshake
    // because it is revoked.
    let srv_mark = srv_log.len();
    let stolen_mark = stolen_log.len();
    server.ok(&["revoke", "--serial", &s2, "--reason", "stolen"]);
    let reason = until(20, "the server refuses the revoked certificate", &srv_log, |_| {
        srv_log.since(srv_mark).into_iter().find_map(|e| match e {
            Event::Refused { revoked: true, reason, .. } => Some(reason),
            _ => None,
        })
    })
    .await;
    assert!(reason.contains(&format!("serial {s2}")), "{reason}");
    let why = until(20, "the pinned client sees its handshake refused", &stolen_log, |_| {
        stolen_log.since(stolen_mark).into_iter().find_map(|e| match e {
            Event::HandshakeFailed { reason, .. } => Some(reason),
            _ => None,
        })
    })
    .await;
    assert!(why.contains("the peer refused the handshake"), "{why}");
    // Once refused, never accepted again with s2.
    let refused_at = srv_log.len();
    until(20, "the pinned client keeps being refused", &srv_log, |_| {
        let after = srv_log.since(refused_at);
        (after.iter().filter(|e| matches!(e, Event::Refused { revoked: true, .. })).count() >= 2)
            .then_some(())
    })
    .await;
    assert!(
        !accepted_serials(&srv_log.since(refused_at)).contains(&s2),
        "a revoked serial was accepted after the server had refused it"
    );

    // 5. The steady client follows the agent to a third SVID; a client with the
    // current SVID still connects, and the old connection still echoes.
    let s3 = eventually(20, "the client follows the replacement of the revoked SVID", || {
        let s = steady_id.serial();
        let s2 = s2.clone();
        async move { if s != s2 { Ok(s) } else { Err("still the revoked SVID") } }
    })
    .await;
    let fresh_log = Log::default();
    tokio::time::timeout(
        Duration::from_secs(30),
        echo::run_client(steady_id.clone(), client_opts(None, Some(2)), fresh_log.sink()),
    )
    .await
    .expect("a client with the current SVID connects")
    .unwrap();
    let presented = until(10, "the fresh handshake", &fresh_log, first_presented).await;
    assert_eq!(presented, s3);
    assert!(accepted_serials(&srv_log.all()).contains(&s3));
    let mark = steady_log.len();
    until(20, "the first connection still echoes", &steady_log, |_| {
        (echoes_on(&steady_log.since(mark), 1) >= 2).then_some(())
    })
    .await;
}
