//! A bounded in-memory cache of accepted WPT `jti`s, per sender, until they expire.
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};

use crate::WimseError;

/// (sender SPIFFE ID, jti).
type Key = (String, String);

#[derive(Debug)]
pub(crate) struct ReplayCache {
    capacity: usize,
    /// Key → when it may be forgotten.
    seen: HashMap<Key, i64>,
    /// The same entries ordered by expiry, so expired ones leave in O(log n) each.
    by_expiry: BinaryHeap<Reverse<(i64, Key)>>,
}

impl ReplayCache {
    pub(crate) fn new(capacity: usize) -> Self {
        Self { capacity: capacity.max(1), seen: HashMap::new(), by_expiry: BinaryHeap::new() }
    }

    fn purge(&mut self, now: i64) {
        while let Some(Reverse((until, _))) = self.by_expiry.peek() {
            if *until > now {
                break;
            }
            let Some(Reverse((until, key))) = self.by_expiry.pop() else { break };
            if self.seen.get(&key) == Some(&until) {
                self.seen.remove(&key);
            }
        }
    }

    /// Records `(sub, jti)` until `until`; refuses a key already recorded and not yet
    /// expired, and refuses when full of unexpired entries (fail closed).
    pub(crate) fn check_and_insert(
        &mut self,
        sub: &str,
        jti: &str,
        until: i64,
        now: i64,
    ) -> Result<(), WimseError> {
        self.purge(now);
        let key = (sub.to_owned(), jti.to_owned());
        if self.seen.get(&key).is_some_and(|&u| u > now) {
            return Err(WimseError::Replayed { sub: key.0, jti: key.1 });
        }
        if self.seen.len() >= self.capacity {
            return Err(WimseError::ReplayCacheFull { capacity: self.capacity });
        }
        self.seen.insert(key.clone(), until);
        self.by_expiry.push(Reverse((until, key)));
        Ok(())
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.seen.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_replays_until_expiry_and_stays_bounded() {
        let mut c = ReplayCache::new(2);
        c.check_and_insert("a", "1", 100, 0).unwrap();
        assert!(matches!(c.check_and_insert("a", "1", 100, 50), Err(WimseError::Replayed { .. })));
        // Another sender may use the same jti.
        c.check_and_insert("b", "1", 100, 50).unwrap();
        // Full of unexpired entries: refused, not forgotten.
        assert!(matches!(
            c.check_and_insert("c", "9", 100, 60),
            Err(WimseError::ReplayCacheFull { capacity: 2 })
        ));
        // After expiry the entries leave and room returns.
        c.check_and_insert("c", "9", 300, 100).unwrap();
        assert_eq!(c.len(), 1);
        c.check_and_insert("a", "1", 400, 100).unwrap();
    }
}
