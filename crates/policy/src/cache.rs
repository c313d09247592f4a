//! Incremental scanning: what the policies found in a segment's text, remembered by a hash of
//! (policy-set digest, text). An agent resends its whole conversation every turn; only the new
//! segments are scanned. Findings are cached too, so a block still applies on a resend.
//!
//! A second memo of the same shape ([`PartVerdict`]) remembers whole request parts — a message,
//! a tool definition — by their bytes (`conduit_wire::content::PartKey`), so a part seen before
//! is not even read into segments: its findings, with paths relative to the part, apply again.
//! Hashes are BLAKE3 (keys must not collide, even for a client crafting text to).
//!
//! Bounded with two generations: entries go into `young`; when it is full it becomes `old` and
//! the former `old` is dropped; a hit in `old` is promoted. O(1), no per-entry bookkeeping, and
//! recently used entries survive.

use std::collections::HashMap;
use std::sync::Mutex;

use crate::segments::Origin;
use conduit_wire::content::PartSummary;

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

/// The key: BLAKE3 of the set digest and the text.
pub type Key = [u8; 32];

/// Hashes a segment text under a policy-set digest.
pub fn key(set_digest: &[u8; 32], text: &str) -> Key {
    let mut h = blake3::Hasher::new();
    h.update(b"conduit segment verdict v1\0");
    h.update(set_digest);
    h.update(&(text.len() as u64).to_le_bytes());
    h.update(text.as_bytes());
    *h.finalize().as_bytes()
}

/// What the policies found in a whole request part, under one policy set.
#[derive(Debug, Clone, PartialEq)]
pub struct PartVerdict {
    /// The set that judged it (a verdict of another set is not used).
    pub set: [u8; 32],
    /// What reading it gave.
    pub summary: PartSummary,
    /// Its findings.
    pub findings: Vec<PartFinding>,
}

/// A finding in a remembered part.
#[derive(Debug, Clone, PartialEq)]
pub struct PartFinding {
    /// The segment's path after the part's own (`.content[0].text`), or its whole path when it
    /// was shortened and no longer starts with the part's.
    pub path: String,
    /// `path` is relative to the part's.
    pub relative: bool,
    /// The segment's path was over the length kept and shown shortened (`a…z`): a relative path
    /// then holds the ellipsis, and under a part path of another width it is shortened at a
    /// slightly different place than a whole read would.
    pub shortened: bool,
    /// The segment's origin (modes apply per origin).
    pub origin: Origin,
    /// The finding, relative to its segment.
    pub finding: CachedFinding,
}

/// The cache.
#[derive(Debug)]
pub struct VerdictCache<V = Vec<CachedFinding>> {
    capacity: usize,
    inner: Mutex<Generations<V>>,
}

#[derive(Debug)]
struct Generations<V> {
    young: HashMap<Key, V>,
    old: HashMap<Key, V>,
}

impl<V: Clone> VerdictCache<V> {
    /// A cache holding about `capacity` entries (between capacity/2 and capacity).
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity: capacity.max(2),
            inner: Mutex::new(Generations {
                young: HashMap::new(),
                old: HashMap::new(),
            }),
        }
    }

    /// The findings remembered for `key`, if any.
    pub fn get(&self, key: &Key) -> Option<V> {
        let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(v) = g.young.get(key) {
            return Some(v.clone());
        }
        let v = g.old.remove(key)?;
        let out = v.clone();
        g.insert_young(*key, v, self.capacity / 2);
        Some(out)
    }

    /// Remembers several entries under one lock.
    pub fn put_all(&self, entries: impl IntoIterator<Item = (Key, V)>) {
        let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        for (key, v) in entries {
            g.insert_young(key, v, self.capacity / 2);
        }
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

impl<V> Generations<V> {
    fn insert_young(&mut self, key: Key, v: V, half: usize) {
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
        let c: VerdictCache = VerdictCache::new(100);
        let d = [7u8; 32];
        let hot = key(&d, "hot");
        c.put_all([(hot, vec![])]);
        for i in 0..1000 {
            c.put_all([(key(&d, &i.to_string()), vec![])]);
            assert!(c.get(&hot).is_some(), "a used entry is kept ({i})");
            assert!(c.len() <= 100);
        }
        assert!(c.get(&key(&d, "0")).is_none(), "old entries are dropped");
        assert_ne!(key(&d, "x"), key(&[8u8; 32], "x"), "the set digest is part of the key");
    }
}
