//! Following the datastore's change feed, so that this server's in-memory state (the
//! entry index, the agent cache, the revocation feed) and everything waiting on it
//! (`WatchAuthorized` streams, revocation watchers) keep up with writes made through
//! any server sharing the datastore.
//!
//! Every write to entries, agents and revocations records a change in the same
//! transaction ([`ferrid_store::Store::list_changes`]), numbered in commit order. The
//! follower applies the changes after its cursor by re-reading the current state of
//! each record they name, so applying one twice, or one this server made itself, is
//! harmless. PostgreSQL's `NOTIFY` wakes it within milliseconds; a tail every
//! [`TAIL_INTERVAL`] is the safety net for a notification lost with its connection. A
//! follower that finds the feed pruned past its cursor reloads everything, in pages.
use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use ferrid_store::{Change, ChangeKind, StoreError};
use ferrid_types::{EntryId, SpiffeId};
use tokio::sync::watch;

use crate::state::Shared;

/// How often the feed is read without a wake-up.
pub(crate) const TAIL_INTERVAL: Duration = Duration::from_secs(1);
/// Changes read per query.
const BATCH: u32 = 1000;
/// Changes kept in the datastore; a server further behind than this reloads. A
/// follower sees a gap by the first change left after its cursor, so pruning always
/// keeps some (never `prune_changes(0)`).
pub(crate) const KEEP: u64 = 100_000;

/// What one run of [`catch_up`] did.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Applied {
    /// Changes applied.
    pub(crate) changes: usize,
    /// Whether the whole state was reloaded (the feed was pruned past the cursor).
    pub(crate) reloaded: bool,
}

/// Applies every change after the cursor, then wakes watchers if anything changed.
pub(crate) async fn catch_up(shared: &Shared) -> Result<Applied, StoreError> {
    let mut done = Applied::default();
    loop {
        let cursor = shared.change_cursor.load(Ordering::Acquire);
        let batch = shared.store.list_changes(cursor, BATCH).await?;
        let Some(last) = batch.last().map(|c| c.seq) else { break };
        if batch[0].seq != cursor + 1 {
            // The changes between were pruned: start again from the whole state.
            let at = shared.store.last_change().await?;
            tracing::warn!(
                cursor,
                first = batch[0].seq,
                "the change feed was pruned past this server's position; reloading"
            );
            shared.reload().await?;
            shared.revocations.catch_up(shared.store.as_ref(), &shared.ca, shared.now()).await?;
            shared.change_cursor.store(at, Ordering::Release);
            done.reloaded = true;
            continue;
        }
        apply(shared, &batch).await?;
        shared.change_cursor.store(last, Ordering::Release);
        done.changes += batch.len();
        if batch.len() < BATCH as usize {
            break;
        }
    }
    if done.changes > 0 || done.reloaded {
        shared.notify();
    }
    Ok(done)
}

async fn apply(shared: &Shared, batch: &[Change]) -> Result<(), StoreError> {
    let mut entries = BTreeSet::new();
    let mut agents = BTreeSet::new();
    let mut revocations = false;
    for c in batch {
        match c.kind {
            ChangeKind::Entry => {
                entries.insert(EntryId(c.key.clone()));
            }
            ChangeKind::Agent => match SpiffeId::new(&c.key) {
                Ok(id) => {
                    agents.insert(id.to_string());
                }
                Err(e) => {
                    tracing::error!(seq = c.seq, key = %c.key, error = %e, "ignoring an agent change with an unreadable ID")
                }
            },
            ChangeKind::Revocation => revocations = true,
            _ => {
                tracing::debug!(seq = c.seq, kind = ?c.kind, "ignoring a change of a kind this server does not follow")
            }
        }
    }
    let entries: Vec<EntryId> = entries.into_iter().collect();
    shared.apply_entry_changes(&entries).await?;
    let agents: Vec<SpiffeId> = agents.iter().filter_map(|a| SpiffeId::new(a).ok()).collect();
    shared.apply_agent_changes(&agents).await?;
    if revocations {
        shared.revocations.catch_up(shared.store.as_ref(), &shared.ca, shared.now()).await?;
    }
    Ok(())
}

/// Follows the feed until `stop` changes: on every wake-up from the datastore and every
/// [`TAIL_INTERVAL`]. Failures (a database that is down) are logged once per outage and
/// retried; the server keeps serving from what it holds.
pub(crate) async fn follow(shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    let mut wake = shared.store.change_wakeups();
    let mut tail = tokio::time::interval(TAIL_INTERVAL);
    tail.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failing = false;
    loop {
        match catch_up(&shared).await {
            Ok(done) => {
                if failing {
                    tracing::info!(changes = done.changes, "following the datastore's changes again");
                    failing = false;
                }
            }
            Err(e) => {
                if !failing {
                    tracing::warn!(error = %e, "cannot read the datastore's changes; serving from memory and retrying");
                    failing = true;
                }
            }
        }
        tokio::select! {
            _ = stop.changed() => return,
            _ = tail.tick() => {}
            () = woken(&mut wake) => {}
        }
    }
}

async fn woken(wake: &mut Option<watch::Receiver<u64>>) {
    match wake {
        Some(rx) => {
            if rx.changed().await.is_err() {
                *wake = None;
            }
        }
        None => std::future::pending().await,
    }
}
