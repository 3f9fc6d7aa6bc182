//! Serving pieces the server and the agent share: state streams that follow a change
//! counter and end on shutdown, and a bounded graceful drain.
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Status;

/// A stream that sends `make()` at once and again whenever `changes` moves and the
/// result differs from the last message sent. `Ok(None)` means "nothing to send yet";
/// an error is sent and ends the stream. When `stop` turns `true` the stream ends with
/// `Unavailable(shutting_down)`, so clients reconnect instead of holding a stopped
/// server, and a graceful shutdown does not wait on them.
pub fn state_stream<T, W, F>(
    mut changes: watch::Receiver<W>,
    mut stop: watch::Receiver<bool>,
    shutting_down: &'static str,
    mut make: F,
) -> ReceiverStream<Result<T, Status>>
where
    T: PartialEq + Clone + Send + 'static,
    W: Send + Sync + 'static,
    F: FnMut() -> Result<Option<T>, Status> + Send + 'static,
{
    let (tx, rx) = mpsc::channel(2);
    tokio::spawn(async move {
        let mut last: Option<T> = None;
        loop {
            changes.borrow_and_update();
            match make() {
                Ok(Some(msg)) if last.as_ref() != Some(&msg) => {
                    if tx.send(Ok(msg.clone())).await.is_err() {
                        return;
                    }
                    last = Some(msg);
                }
                Ok(_) => {}
                Err(status) => {
                    let _ = tx.send(Err(status)).await;
                    return;
                }
            }
            tokio::select! {
                r = changes.changed() => if r.is_err() { return },
                () = tx.closed() => return,
                () = async { let _ = stop.wait_for(|s| *s).await; } => {
                    let _ = tx.send(Err(Status::unavailable(shutting_down))).await;
                    return;
                }
            }
        }
    });
    ReceiverStream::new(rx)
}

/// Serves `router` on a Unix socket until `stop` changes, each connection wrapped in
/// [`crate::UdsConn`] (peer credentials, `:authority` repair); logs why it ended if it
/// failed.
pub async fn serve_unix(
    router: tonic::transport::server::Router,
    listener: tokio::net::UnixListener,
    mut stop: watch::Receiver<bool>,
    what: &'static str,
) {
    use tokio_stream::StreamExt;
    let incoming =
        tokio_stream::wrappers::UnixListenerStream::new(listener).map(|r| r.map(crate::UdsConn::new));
    let r = router
        .serve_with_incoming_shutdown(incoming, async move {
            let _ = stop.changed().await;
        })
        .await;
    if let Err(e) = r {
        tracing::error!(error = %e, "{what} stopped");
    }
}

/// Waits for `tasks` to finish, for at most `grace`; then aborts what is left.
pub async fn drain(tasks: &mut JoinSet<()>, grace: Duration) {
    let all = async { while tasks.join_next().await.is_some() {} };
    if tokio::time::timeout(grace, all).await.is_err() {
        tracing::warn!(?grace, "connections still open after the grace period; closing them");
        tasks.shutdown().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio_stream::StreamExt;

    #[tokio::test]
    async fn sends_changes_once_and_ends_on_shutdown() {
        let (bump, changes) = watch::channel(0u64);
        let (stop_tx, stop) = watch::channel(false);
        let value = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(1));
        let v = value.clone();
        let mut s =
            state_stream(changes, stop, "bye", move || Ok(Some(v.load(std::sync::atomic::Ordering::SeqCst))));
        assert_eq!(s.next().await.unwrap().unwrap(), 1);
        bump.send_modify(|c| *c += 1); // same value: nothing sent
        value.store(2, std::sync::atomic::Ordering::SeqCst);
        bump.send_modify(|c| *c += 1);
        assert_eq!(s.next().await.unwrap().unwrap(), 2);
        stop_tx.send(true).unwrap();
        let end = s.next().await.unwrap().unwrap_err();
        assert_eq!((end.code(), end.message()), (tonic::Code::Unavailable, "bye"));
        assert!(s.next().await.is_none());
    }

    #[tokio::test]
    async fn drain_aborts_what_outlives_the_grace() {
        let mut tasks = JoinSet::new();
        tasks.spawn(async {});
        tasks.spawn(std::future::pending());
        drain(&mut tasks, Duration::from_millis(50)).await;
        assert!(tasks.is_empty());
    }
}
