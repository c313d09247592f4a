//! Request ids: a per-process random prefix and a counter — unique across replicas and restarts
//! (the prefix), cheap (one atomic add), sortable within a process; not secrets.

use std::sync::atomic::{AtomicU64, Ordering};

/// Hands out request ids: a per-process random prefix and a counter — unique, cheap, sortable.
#[derive(Debug)]
pub struct RequestIds {
    prefix: u32,
    next: AtomicU64,
}

impl RequestIds {
    /// Seeds the prefix from the OS random source.
    pub fn new() -> Self {
        let mut b = [0u8; 4];
        let _ = getrandom::fill(&mut b);
        RequestIds {
            prefix: u32::from_le_bytes(b),
            next: AtomicU64::new(1),
        }
    }

    /// How many ids were issued so far (a cheap "were there requests since" for idle tasks).
    pub fn issued(&self) -> u64 {
        self.next.load(std::sync::atomic::Ordering::Relaxed) - 1
    }

    /// The next id (`req_` + 8 hex prefix + 10 hex counter).
    pub fn next(&self) -> String {
        format!(
            "req_{:08x}{:010x}",
            self.prefix,
            self.next.fetch_add(1, Ordering::Relaxed)
        )
    }
}

impl Default for RequestIds {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_unique_and_ordered_within_a_process() {
        let ids = RequestIds::new();
        let (a, b) = (ids.next(), ids.next());
        assert_ne!(a, b);
        assert!(a < b, "{a} < {b}");
        assert_eq!(a.len(), "req_".len() + 18);
        assert_ne!(
            RequestIds::new().next()[..12],
            a[..12],
            "another process, another prefix (1 in 2^32 to collide)"
        );
    }
}
