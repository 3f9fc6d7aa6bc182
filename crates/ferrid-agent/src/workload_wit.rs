//! The WIT-SVID profile of the Workload API (SPIFFE_Workload_API.md §7).
//!
//! For every identity the caller is entitled to (the same attestation and entry
//! matching as `FetchX509SVID`), the agent generates a P-256 key in memory, has the
//! server bind its public JWK in a WIT-SVID (`Node.MintWitSvid`), and streams the token
//! with the private key as a JWK (`wit_svid_key`, as the specification requires). One
//! key and WIT per entry revision are shared by the callers of that entry on this node
//! (WIT-SVID §4 allows it) and replaced at half their life; a stream wakes up then and
//! sends the new set. When the server is unreachable a WIT is served until it expires,
//! and minting is retried every few seconds. Private keys never leave memory.
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use ferrid_proto::node::v1 as npb;
use ferrid_proto::workload as wpb;
use ferrid_types::{RegistrationEntry, SelectorSet};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Status;
use zeroize::Zeroizing;

use super::WorkloadService;

/// How soon a failed mint is retried while an older WIT is still served.
const RETRY_SECS: i64 = 5;

/// What a cached WIT was minted for: the entry at one revision.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct WitKey {
    entry: String,
    revision: i64,
}

/// A WIT-SVID and the private key it binds.
struct CachedWit {
    token: String,
    private_jwk: Zeroizing<String>,
    /// Replaced from then on: half-way through its life.
    refresh_at: i64,
    expires_at: i64,
}

/// WIT-SVIDs and their keys by entry revision (see the module documentation).
#[derive(Default)]
pub(crate) struct WitCache {
    map: std::sync::Mutex<HashMap<WitKey, Arc<CachedWit>>>,
    /// One mint at a time, so concurrent streams of one entry share a key.
    minting: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for WitCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WitCache").finish_non_exhaustive()
    }
}

impl WitCache {
    fn get(&self, key: &WitKey) -> Option<Arc<CachedWit>> {
        self.map.lock().unwrap_or_else(std::sync::PoisonError::into_inner).get(key).cloned()
    }

    /// Forgets every WIT `covered(jti, sub, iat)` selects (a revocation); returns how
    /// many. Streams serving one mint a replacement when next woken.
    pub(crate) fn forget(&self, covered: impl Fn(&str, &str, i64) -> bool) -> usize {
        let mut map = self.map.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let before = map.len();
        map.retain(|_, w| {
            let c = crate::workload::token_claims(&w.token);
            let field = |n: &str| c.get(n).and_then(serde_json::Value::as_str).unwrap_or("");
            !covered(
                field("jti"),
                field("sub"),
                c.get("iat").and_then(serde_json::Value::as_i64).unwrap_or(0),
            )
        });
        before - map.len()
    }

    fn put(&self, key: WitKey, wit: Arc<CachedWit>, now: i64) {
        let mut map = self.map.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        // Expired WITs (and those of entries since changed or deleted) leave here.
        map.retain(|_, w| w.expires_at > now);
        map.insert(key, wit);
    }
}

/// A WIT as served, and when the stream should look again.
struct Served {
    wit: Arc<CachedWit>,
    /// Minting failed and an older, still valid WIT is served: retry soon.
    retry: bool,
}

impl WorkloadService {
    /// The caller's entries, only `spiffe_id`'s when given.
    pub(super) fn wit_entries(&self, sels: &SelectorSet, spiffe_id: &str) -> Vec<RegistrationEntry> {
        let mut entries = self.matching(sels);
        if !spiffe_id.is_empty() {
            entries.retain(|e| e.spiffe_id.to_string() == spiffe_id);
        }
        entries
    }

    /// The cached WIT for `e`, or a new key and WIT from the server.
    async fn wit_for(&self, e: &RegistrationEntry) -> Result<Served, Status> {
        let cache = &self.shared.wit_cache;
        let key = WitKey { entry: e.id.0.clone(), revision: e.revision };
        let fresh = |now: i64| cache.get(&key).filter(|w| now < w.refresh_at);
        if let Some(wit) = fresh(self.shared.clock.unix()) {
            return Ok(Served { wit, retry: false });
        }
        let _one_at_a_time = cache.minting.lock().await;
        let now = self.shared.clock.unix();
        if let Some(wit) = fresh(now) {
            return Ok(Served { wit, retry: false });
        }
        match self.mint_wit(e).await {
            Ok(wit) => {
                let wit = Arc::new(wit);
                cache.put(key, wit.clone(), now);
                Ok(Served { wit, retry: false })
            }
            Err(status) => match cache.get(&key).filter(|w| now < w.expires_at) {
                Some(wit) => {
                    tracing::warn!(spiffe_id = %e.spiffe_id, error = %status.message(), "WIT-SVID renewal failed; serving the current one");
                    Ok(Served { wit, retry: true })
                }
                None => Err(status),
            },
        }
    }

    /// A fresh P-256 key, and the server's WIT-SVID for its public half.
    async fn mint_wit(&self, e: &RegistrationEntry) -> Result<CachedWit, Status> {
        let client = self.shared.node.load_full();
        let Some(client) = client.as_ref().as_ref() else {
            return Err(Status::unavailable("the agent cannot reach the server to mint a WIT-SVID"));
        };
        let key = ferrid_ca::generate_wit_key()
            .map_err(|err| Status::internal(format!("generating a WIT-SVID key: {err}")))?;
        let minted = client
            .clone()
            .mint_wit_svid(npb::MintWitSvidRequest {
                entry_id: e.id.0.clone(),
                public_key_jwk: key.public_jwk.clone(),
                ttl: 0,
            })
            .await
            .map_err(|s| {
                Status::new(s.code(), format!("minting a WIT-SVID for {}: {}", e.spiffe_id, s.message()))
            })?
            .into_inner();
        if minted.token.is_empty() || minted.spiffe_id != e.spiffe_id.to_string() {
            return Err(Status::internal(format!("server returned no usable WIT-SVID for {}", e.spiffe_id)));
        }
        let now = self.shared.clock.unix();
        let issued_at = if minted.issued_at > 0 { minted.issued_at } else { now };
        tracing::debug!(spiffe_id = %e.spiffe_id, entry = %e.id, expires_at = minted.expires_at, "WIT-SVID minted");
        Ok(CachedWit {
            token: minted.token,
            private_jwk: key.private_jwk,
            refresh_at: issued_at + (minted.expires_at - issued_at) / 2,
            expires_at: minted.expires_at,
        })
    }

    /// One `WITSVIDResponse` for the caller's current entries, and when to look again
    /// (Unix seconds). An error ends the stream.
    async fn wit_response(
        &self,
        sels: &SelectorSet,
        only: &str,
    ) -> Result<(wpb::WitsvidResponse, i64), Status> {
        self.ready()?;
        let entries = self.wit_entries(sels, only);
        if entries.is_empty() {
            return Err(Self::no_identity());
        }
        let mut hints = HashSet::new();
        let mut svids = Vec::new();
        let mut wake = i64::MAX;
        let mut first_error = None;
        for e in entries {
            // Hints are unique per response: a second identity with the same hint is left out.
            if !e.hint.is_empty() && !hints.insert(e.hint.clone()) {
                continue;
            }
            match self.wit_for(&e).await {
                Ok(Served { wit, retry }) => {
                    let now = self.shared.clock.unix();
                    wake = wake.min(if retry { now + RETRY_SECS } else { wit.refresh_at });
                    svids.push(wpb::Witsvid {
                        spiffe_id: e.spiffe_id.to_string(),
                        wit_svid: wit.token.clone(),
                        wit_svid_key: wit.private_jwk.to_string(),
                        hint: e.hint.clone(),
                    });
                }
                Err(status) => {
                    tracing::warn!(spiffe_id = %e.spiffe_id, error = %status.message(), "no WIT-SVID to serve");
                    wake = wake.min(self.shared.clock.unix() + RETRY_SECS);
                    first_error.get_or_insert(status);
                }
            }
        }
        match (svids.is_empty(), first_error) {
            (true, Some(status)) => Err(status),
            _ => Ok((wpb::WitsvidResponse { svids }, wake)),
        }
    }

    /// The `FetchWITSVID` stream: the full set now, again on every entry or bundle
    /// change and whenever a WIT reaches half its life.
    pub(super) fn wit_stream(
        &self,
        sels: SelectorSet,
        only: String,
    ) -> ReceiverStream<Result<wpb::WitsvidResponse, Status>> {
        let (tx, rx) = mpsc::channel(2);
        let this = self.clone();
        let mut changes = self.shared.changes.subscribe();
        let mut stop = self.stop.clone();
        tokio::spawn(async move {
            let mut last: Option<wpb::WitsvidResponse> = None;
            loop {
                changes.borrow_and_update();
                let wake = match this.wit_response(&sels, &only).await {
                    Ok((msg, wake)) => {
                        if last.as_ref() != Some(&msg) {
                            if tx.send(Ok(msg.clone())).await.is_err() {
                                return;
                            }
                            last = Some(msg);
                        }
                        wake
                    }
                    Err(status) => {
                        let _ = tx.send(Err(status)).await;
                        return;
                    }
                };
                let secs = wake.saturating_sub(this.shared.clock.unix()).clamp(1, 24 * 3600);
                tokio::select! {
                    r = changes.changed() => if r.is_err() { return },
                    () = tx.closed() => return,
                    () = tokio::time::sleep(Duration::from_secs(u64::try_from(secs).unwrap_or(1))) => {}
                    () = async { let _ = stop.wait_for(|s| *s).await; } => {
                        let _ = tx.send(Err(Status::unavailable("the agent is shutting down"))).await;
                        return;
                    }
                }
            }
        });
        ReceiverStream::new(rx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wit(refresh_at: i64, expires_at: i64) -> Arc<CachedWit> {
        Arc::new(CachedWit {
            token: "t".into(),
            private_jwk: Zeroizing::new("k".into()),
            refresh_at,
            expires_at,
        })
    }

    #[test]
    fn cache_drops_expired_wits_and_keys_by_revision() {
        let c = WitCache::default();
        let k = |rev| WitKey { entry: "e".into(), revision: rev };
        c.put(k(1), wit(150, 200), 100);
        c.put(k(2), wit(350, 400), 250);
        assert!(c.get(&k(1)).is_none(), "expired at 200, dropped at 250");
        assert!(c.get(&k(2)).is_some());
        assert!(c.get(&WitKey { entry: "other".into(), revision: 2 }).is_none());
    }
}
