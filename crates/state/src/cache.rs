//! Short-lived caches of the two lookups every request makes — its key (by hash) and the
//! provider credential — so the request path does not wait on the store (a network round trip on
//! a shared backend) per request.
//!
//! Safe because invalidation is explicit: every change a backend announces on the store's
//! `watch()` (this process's writes before they return, other replicas' through the backend's
//! listener) drops the entry at once; a change naming [`crate::store::EVERYTHING`], or a watcher
//! that fell behind, drops them all. The TTL bounds how stale an entry can be if announcements
//! stop arriving (a shared backend's listener is down — readiness says so meanwhile). A lookup
//! that raced an invalidation is not cached (a generation counter), so a revocation can never be
//! overwritten by the read it overtook. Writes through the wrapper invalidate synchronously.
//! Unknown keys are cached too (a flood of made-up keys must not become a flood of queries), in a
//! bounded map that is cleared when full.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock, Weak};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use tokio::sync::broadcast::error::RecvError;

use conduit_core::error::Result;
use conduit_core::keys::KeyHash;
use conduit_core::seal::SealedCredential;

use crate::State;
use crate::records::KeyRecord;
use crate::store::{CredentialChange, CredentialStore, EVERYTHING, KeyChange, KeyStore, Watch};

/// Entries a cache holds before it starts again from empty.
pub const CAPACITY: usize = 65_536;

/// A TTL map with invalidation by key or all at once, and a generation that lets a reader tell
/// whether an invalidation happened while it was reading.
struct Entries<K, V> {
    map: RwLock<HashMap<K, (V, Instant)>>,
    generation: AtomicU64,
    ttl: Duration,
}

impl<K: Eq + Hash + Clone, V: Clone> Entries<K, V> {
    fn new(ttl: Duration) -> Self {
        Entries {
            map: RwLock::new(HashMap::new()),
            generation: AtomicU64::new(0),
            ttl,
        }
    }

    fn get(&self, k: &K) -> Option<V> {
        let map = self.map.read().unwrap_or_else(|p| p.into_inner());
        map.get(k)
            .filter(|(_, at)| at.elapsed() < self.ttl)
            .map(|(v, _)| v.clone())
    }

    fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Stores `v` unless something was invalidated since `generation` was read.
    fn put(&self, k: K, v: V, generation: u64) {
        let mut map = self.map.write().unwrap_or_else(|p| p.into_inner());
        if self.generation.load(Ordering::Acquire) != generation {
            return;
        }
        if map.len() >= CAPACITY {
            map.clear();
        }
        map.insert(k, (v, Instant::now()));
    }

    fn forget(&self, k: &K) {
        let mut map = self.map.write().unwrap_or_else(|p| p.into_inner());
        self.generation.fetch_add(1, Ordering::AcqRel);
        map.remove(k);
    }

    fn forget_all(&self) {
        let mut map = self.map.write().unwrap_or_else(|p| p.into_inner());
        self.generation.fetch_add(1, Ordering::AcqRel);
        map.clear();
    }
}

/// Drops entries as `watch` announces changes, until the cache is gone.
fn follow<C: Clone + Send + 'static, T: Send + Sync + 'static>(
    mut watch: Watch<C>,
    target: Weak<T>,
    apply: impl Fn(&T, Option<C>) + Send + 'static,
) {
    tokio::spawn(async move {
        loop {
            let change = match watch.recv().await {
                Ok(c) => Some(c),
                Err(RecvError::Lagged(_)) => None,
                Err(RecvError::Closed) => return,
            };
            let Some(t) = target.upgrade() else { return };
            apply(&t, change);
        }
    });
}

/// A [`KeyStore`] whose `by_hash` is served from memory.
pub struct CachedKeys {
    inner: Arc<dyn KeyStore>,
    entries: Entries<KeyHash, Option<KeyRecord>>,
}

impl CachedKeys {
    /// Wraps `inner`; must be called inside a tokio runtime (it spawns the follower).
    pub fn new(inner: Arc<dyn KeyStore>, ttl: Duration) -> Arc<CachedKeys> {
        let cache = Arc::new(CachedKeys {
            entries: Entries::new(ttl),
            inner: inner.clone(),
        });
        follow(
            inner.watch(),
            Arc::downgrade(&cache),
            |c: &CachedKeys, change: Option<KeyChange>| match change {
                Some(k) if k.id != EVERYTHING => c.entries.forget(&k.hash),
                _ => c.entries.forget_all(),
            },
        );
        cache
    }
}

#[async_trait]
impl KeyStore for CachedKeys {
    async fn insert(&self, hash: &KeyHash, record: &KeyRecord) -> Result<()> {
        let r = self.inner.insert(hash, record).await;
        self.entries.forget(hash);
        r
    }

    async fn by_hash(&self, hash: &KeyHash) -> Result<Option<KeyRecord>> {
        if let Some(hit) = self.entries.get(hash) {
            return Ok(hit);
        }
        let generation = self.entries.generation();
        let found = self.inner.by_hash(hash).await?;
        self.entries.put(*hash, found.clone(), generation);
        Ok(found)
    }

    async fn by_id(&self, id: &str) -> Result<Option<KeyRecord>> {
        self.inner.by_id(id).await
    }

    async fn update(&self, record: &KeyRecord) -> Result<()> {
        let r = self.inner.update(record).await;
        // The hash is not known here without a read; the inner store's announcement names it,
        // but this write must take effect for this process's next request, so drop everything.
        self.entries.forget_all();
        r
    }

    async fn list(&self) -> Result<Vec<KeyRecord>> {
        self.inner.list().await
    }

    async fn entries(&self) -> Result<Vec<(KeyHash, KeyRecord)>> {
        self.inner.entries().await
    }

    fn watch(&self) -> Watch<KeyChange> {
        self.inner.watch()
    }
}

/// A [`CredentialStore`] whose `get` is served from memory (sealed: plaintext is never cached).
pub struct CachedCredentials {
    inner: Arc<dyn CredentialStore>,
    entries: Entries<(String, String), Option<SealedCredential>>,
}

impl CachedCredentials {
    /// Wraps `inner`; must be called inside a tokio runtime.
    pub fn new(inner: Arc<dyn CredentialStore>, ttl: Duration) -> Arc<CachedCredentials> {
        let cache = Arc::new(CachedCredentials {
            entries: Entries::new(ttl),
            inner: inner.clone(),
        });
        follow(
            inner.watch(),
            Arc::downgrade(&cache),
            |c: &CachedCredentials, change: Option<CredentialChange>| match change {
                Some(k) if k.id != EVERYTHING => c.entries.forget(&(k.provider, k.id)),
                _ => c.entries.forget_all(),
            },
        );
        cache
    }
}

#[async_trait]
impl CredentialStore for CachedCredentials {
    async fn put(&self, credential: &SealedCredential) -> Result<()> {
        let r = self.inner.put(credential).await;
        self.entries
            .forget(&(credential.provider.clone(), credential.id.clone()));
        r
    }

    async fn get(&self, provider: &str, id: &str) -> Result<Option<SealedCredential>> {
        let k = (provider.to_string(), id.to_string());
        if let Some(hit) = self.entries.get(&k) {
            return Ok(hit);
        }
        let generation = self.entries.generation();
        let found = self.inner.get(provider, id).await?;
        self.entries.put(k, found.clone(), generation);
        Ok(found)
    }

    async fn list(&self) -> Result<Vec<SealedCredential>> {
        self.inner.list().await
    }

    async fn reseal_all(&self, credentials: &[SealedCredential], master_key_id: &str) -> Result<()> {
        let r = self.inner.reseal_all(credentials, master_key_id).await;
        self.entries.forget_all();
        r
    }

    fn watch(&self) -> Watch<CredentialChange> {
        self.inner.watch()
    }
}

/// `state` with its key and credential lookups cached for at most `ttl`.
pub fn with_caches(mut state: State, ttl: Duration) -> State {
    state.keys = CachedKeys::new(state.keys, ttl);
    state.credentials = CachedCredentials::new(state.credentials, ttl);
    state
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_read_that_raced_an_invalidation_is_not_cached() {
        let e: Entries<u8, &str> = Entries::new(Duration::from_secs(60));
        let g = e.generation();
        e.forget(&1); // a revocation lands while the read is in flight
        e.put(1, "stale", g);
        assert_eq!(e.get(&1), None, "the overtaken read must not be served");
        let g = e.generation();
        e.put(1, "fresh", g);
        assert_eq!(e.get(&1), Some("fresh"));
        e.forget_all();
        assert_eq!(e.get(&1), None);
    }

    #[test]
    fn entries_expire_and_the_map_is_bounded() {
        let e: Entries<u32, u32> = Entries::new(Duration::from_millis(0));
        e.put(1, 1, e.generation());
        assert_eq!(e.get(&1), None, "past the TTL an entry is read again");
        let e: Entries<u32, u32> = Entries::new(Duration::from_secs(60));
        for i in 0..(CAPACITY as u32 + 10) {
            e.put(i, i, e.generation());
        }
        assert!(e.map.read().unwrap().len() <= CAPACITY);
    }
}
