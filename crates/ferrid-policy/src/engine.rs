//! The active policy set, replaced atomically on reload.
use std::path::{Path, PathBuf};
use std::sync::{Arc, Weak};
use std::time::Duration;

use arc_swap::ArcSwap;

use crate::{Decision, PolicyError, PolicySet, Request, fingerprint};

/// Holds the policy set in force. Decisions read it without locking; a reload builds
/// and validates the new set completely before swapping it in, so a bad edit never
/// replaces a good set and no decision ever sees a half-loaded one.
#[derive(Debug)]
pub struct PolicyEngine {
    active: ArcSwap<PolicySet>,
}

impl PolicyEngine {
    /// An engine deciding with `set`.
    pub fn new(set: PolicySet) -> Self {
        PolicyEngine { active: ArcSwap::from_pointee(set) }
    }

    /// The set in force now.
    pub fn active(&self) -> Arc<PolicySet> {
        self.active.load_full()
    }

    /// [`PolicySet::hash`] of the set in force.
    pub fn hash(&self) -> String {
        self.active.load().hash().to_owned()
    }

    /// Decides with the set in force (see [`PolicySet::decide`]).
    pub fn decide(&self, request: &Request) -> Decision {
        self.active.load().decide(request)
    }

    /// Replaces the set in force; returns the new set's hash.
    pub fn replace(&self, set: PolicySet) -> String {
        let hash = set.hash().to_owned();
        self.active.store(Arc::new(set));
        hash
    }

    /// Loads and validates the policies at `path` (a file or a directory) and, only if
    /// that succeeds, makes them the set in force. On error the previous set stays in
    /// force and the error is returned. Returns the new set's hash.
    pub fn reload_from(&self, path: impl AsRef<Path>) -> Result<String, PolicyError> {
        let set = PolicySet::load(path)?;
        Ok(self.replace(set))
    }

    /// Polls `path` every `interval` and reloads when its policy files change (their
    /// names or contents: the files are read and hashed each time, which for policy
    /// files is cheaper than trusting modification times of a coarse clock). A reload
    /// is logged with the new hash; a failure is logged once per distinct content with
    /// the error, and the previous set keeps deciding. If the engine is already
    /// deciding with exactly these files nothing happens. The task ends when the engine
    /// is dropped; abort the handle to stop it sooner. Needs a Tokio runtime.
    pub fn watch(
        self: &Arc<Self>,
        path: impl Into<PathBuf>,
        interval: Duration,
    ) -> tokio::task::JoinHandle<()> {
        let engine = Arc::downgrade(self);
        let path = path.into();
        tokio::spawn(async move {
            let mut seen = match engine.upgrade() {
                Some(e) => Seen::Hash(e.hash()),
                None => return,
            };
            let start = tokio::time::Instant::now() + interval;
            let mut ticker = tokio::time::interval_at(start, interval);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            loop {
                ticker.tick().await;
                let (weak, p, last) = (engine.clone(), path.clone(), seen.clone());
                match tokio::task::spawn_blocking(move || poll_once(&weak, &p, last)).await {
                    Ok(Some(next)) => seen = next,
                    Ok(None) => return,
                    Err(e) => tracing::error!(error = %e, "policy watch: poll task failed"),
                }
            }
        })
    }
}

/// What the watcher last saw at the path.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Seen {
    /// Files with this fingerprint (loaded or refused).
    Hash(String),
    /// This read error.
    ReadError(String),
}

/// One poll; `None` when the engine is gone.
fn poll_once(engine: &Weak<PolicyEngine>, path: &Path, last: Seen) -> Option<Seen> {
    let engine = engine.upgrade()?;
    let (hash, sources) = match fingerprint(path) {
        Ok(f) => f,
        Err(e) => {
            let now = Seen::ReadError(e.to_string());
            if now != last {
                tracing::error!(path = %path.display(), error = %e, active = %engine.hash(),
                    "policy reload failed: cannot read the policy files; the previous policy set stays in force");
            }
            return Some(now);
        }
    };
    let now = Seen::Hash(hash.clone());
    if now == last || hash == engine.hash() {
        return Some(now);
    }
    match PolicySet::from_sources(sources) {
        Ok(set) => {
            let count = set.len();
            engine.replace(set);
            tracing::info!(path = %path.display(), hash = %hash, policies = count, "policy reloaded");
        }
        Err(e) => {
            tracing::error!(path = %path.display(), error = %e, active = %engine.hash(),
                "policy reload failed; the previous policy set stays in force");
        }
    }
    Some(now)
}
