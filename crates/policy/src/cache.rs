//! Incremental scanning: what the policies found in a segment's text, remembered by a hash of
//! (policy-set digest, text). An agent resends its whole conversation every turn; only the new
//! segments are scanned. Findings are cached too, so a block still applies on a resend.
//!
//! Bounded with two generations: entries go into `young`; when it is full it becomes `old` and
//! the former `old` is dropped; a hit in `old` is promoted. O(1), no per-entry bookkeeping, and
//! recently used entries survive.

use std::collections::HashMap;
use std::sync::Mutex;

use sha2::{Digest, Sha256};

/// A finding as cached: relative to its segment.
#[derive(Debug, Clone, PartialEq)]
pub struct CachedFinding {
    /// Index of the policy in the set.
    pub policy: usize,
    /// Category.
    pub category: String,
    /// Rule id.
    pub rule_id: String,
    /// Byte span in the segment text.
    pub start: u32,
    pub end: u32,
    /// Severity name.
    pub severity: &'static str,
}

/// The key: SHA-256 of the set digest and the text.
pub type Key = [u8; 32];

/// Hashes a segment text under a policy-set digest.
pub fn key(set_digest: &[u8; 32], text: &str) -> Key {
    let mut h = Sha256::new();
    h.update(set_digest);
    h.update((text.len() as u64).to_le_bytes());
    h.update(text.as_bytes());
    h.finalize().into()
}

/// The cache.
#[derive(Debug)]
pub struct VerdictCache {
    capacity: usize,
    inner: Mutex<Generations>,
}

#[derive(Debug, Default)]
struct Generations {
    young: HashMap<Key, Vec<CachedFinding>>,
    old: HashMap<Key, Vec<CachedFinding>>,
}

impl VerdictCache {
    /// A cache holding about `capacity` entries (between capacity/2 and capacity).
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity: capacity.max(2),
            inner: Mutex::new(Generations::default()),
        }
    }

    /// The findings remembered for `key`, if any.
    pub fn get(&self, key: &Key) -> Option<Vec<CachedFinding>> {
        let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(v) = g.young.get(key) {
            return Some(v.clone());
        }
        let v = g.old.remove(key)?;
        let out = v.clone();
        g.insert_young(*key, v, self.capacity / 2);
        Some(out)
    }

    /// Remembers the findings for `key`.
    pub fn put(&self, key: Key, findings: Vec<CachedFinding>) {
        let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        g.insert_young(key, findings, self.capacity / 2);
    }

    /// Entries held.
    pub fn len(&self) -> usize {
        let g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        g.young.len() + g.old.len()
    }

    /// Whether it is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Forgets everything (a policy changed).
    pub fn clear(&self) {
        let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        g.young.clear();
        g.old.clear();
    }
}

impl Generations {
    fn insert_young(&mut self, key: Key, v: Vec<CachedFinding>, half: usize) {
        if self.young.len() >= half {
            self.old = std::mem::take(&mut self.young);
        }
        self.young.insert(key, v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_and_recent_entries_survive() {
        let c = VerdictCache::new(100);
        let d = [7u8; 32];
        let hot = key(&d, "hot");
        c.put(hot, vec![]);
        for i in 0..1000 {
            c.put(key(&d, &i.to_string()), vec![]);
            assert!(c.get(&hot).is_some(), "a used entry is kept ({i})");
            assert!(c.len() <= 100);
        }
        assert!(c.get(&key(&d, "0")).is_none(), "old entries are dropped");
        assert_ne!(key(&d, "x"), key(&[8u8; 32], "x"), "the set digest is part of the key");
    }
}
