//! What the proxy keeps of upstream answers: objects by key, each immutable and shared by every
//! viewer who asks for it, within a cap on their bytes (the least recently used go first), each
//! until its own expiry (playlists: soon; a segment: once the live playlists that listed it no
//! longer do, and a grace after).
//!
//! Shards look objects up and the proxy's fetcher inserts them; the lock is held for a hash
//! probe and a reference count, never across I/O.

use bytes::Bytes;
use lru::LruCache;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// One upstream answer as viewers get it.
#[derive(Debug)]
pub struct Object {
    /// What viewers are answered: 200 with the body, or an error status with its text.
    pub status: u16,
    /// The body (a playlist rewritten to point through the proxy; anything else as it came).
    pub body: Bytes,
    /// Content-Type.
    pub content_type: &'static str,
    /// Fresh until then (past it a request fetches it again); `None`: until it is evicted
    /// or a playlist that listed it drops it.
    pub fresh_until: Option<Instant>,
    /// Cache-Control sent to viewers.
    pub cache_control: &'static str,
    /// Keys of the objects a live playlist lists (for expiring those it drops).
    pub children: Vec<Arc<str>>,
}

impl Object {
    /// An error viewers get for a second (a flood of viewers asking for a missing segment
    /// asks upstream once a second at most).
    pub fn error(status: u16, text: &str) -> Self {
        Self {
            status,
            body: Bytes::from(text.to_owned()),
            content_type: "text/plain; charset=utf-8",
            fresh_until: Some(Instant::now() + Duration::from_secs(1)),
            cache_control: "no-store",
            children: Vec::new(),
        }
    }

    /// Whether it may be served at `now` without asking upstream again.
    pub fn fresh_at(&self, now: Instant) -> bool {
        self.fresh_until.is_none_or(|t| now < t)
    }

    /// Bytes it holds, as counted against the cap.
    pub fn weight(&self) -> usize {
        self.body.len() + self.children.iter().map(|c| c.len() + 16).sum::<usize>() + 128
    }
}

/// What a lookup found.
#[derive(Debug)]
pub enum Lookup {
    /// Fresh: answer with it.
    Fresh(Arc<Object>),
    /// Absent or no longer fresh.
    Miss,
}

/// The objects and their bytes.
#[derive(Debug)]
pub struct Cache {
    inner: Mutex<Inner>,
}

#[derive(Debug)]
struct Inner {
    objects: LruCache<Arc<str>, Arc<Object>>,
    /// The weights of `objects`, summed.
    bytes: usize,
    cap: usize,
    evicted: u64,
}

/// Counts for metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// Objects held.
    pub objects: usize,
    /// Their bytes.
    pub bytes: usize,
    /// Objects dropped to stay within the cap.
    pub evicted: u64,
}

impl Cache {
    /// An empty cache of at most `cap` bytes.
    pub fn new(cap: usize) -> Self {
        Self {
            inner: Mutex::new(Inner {
                objects: LruCache::unbounded(),
                bytes: 0,
                cap,
                evicted: 0,
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while it was held left whole entries (no update spans two statements that
        // could be interrupted): the contents are still consistent.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The object under `key`, if it is fresh at `now`; a hit makes it the most recently
    /// used.
    pub fn get(&self, key: &str, now: Instant) -> Lookup {
        let mut inner = self.lock();
        match inner.objects.get(key) {
            Some(object) if object.fresh_at(now) => Lookup::Fresh(object.clone()),
            _ => Lookup::Miss,
        }
    }

    /// The object under `key` whatever its freshness (a playlist's previous version).
    pub fn peek(&self, key: &str) -> Option<Arc<Object>> {
        self.lock().objects.peek(key).cloned()
    }

    /// Keep `object` under `key` (replacing what was there), then drop the least recently
    /// used objects until the bytes are within the cap. An object larger than the cap on its
    /// own is not kept (it is still handed to those who waited for it).
    pub fn insert(&self, key: Arc<str>, object: Arc<Object>) {
        let mut inner = self.lock();
        let weight = object.weight();
        if let Some(old) = inner.objects.pop(&key) {
            inner.bytes -= old.weight();
        }
        if weight > inner.cap {
            return;
        }
        inner.bytes += weight;
        inner.objects.put(key, object);
        while inner.bytes > inner.cap {
            let Some((_, old)) = inner.objects.pop_lru() else {
                break;
            };
            inner.bytes -= old.weight();
            inner.evicted += 1;
        }
    }

    /// Make the objects under `keys` expire at `until` at the latest (a live playlist no
    /// longer lists them).
    pub fn expire_by(&self, keys: &[Arc<str>], until: Instant) {
        let mut inner = self.lock();
        for key in keys {
            let Some(object) = inner.objects.peek(key) else {
                continue;
            };
            if object.fresh_until.is_some_and(|t| t <= until) {
                continue;
            }
            let shorter = Arc::new(Object {
                status: object.status,
                body: object.body.clone(),
                content_type: object.content_type,
                fresh_until: Some(until),
                cache_control: object.cache_control,
                children: object.children.clone(),
            });
            // Same weight: replaced in place, its recency kept.
            if let Some(slot) = inner.objects.peek_mut(key) {
                *slot = shorter;
            }
        }
    }

    /// Drop the objects that have not been fresh for `kept` at `now` (a stale playlist is
    /// kept that long: the next version is compared with it). Returns how many went.
    pub fn sweep(&self, now: Instant, kept: Duration) -> usize {
        let mut inner = self.lock();
        let stale: Vec<Arc<str>> = inner
            .objects
            .iter()
            .filter(|(_, o)| o.fresh_until.is_some_and(|t| now >= t + kept))
            .map(|(k, _)| k.clone())
            .collect();
        for key in &stale {
            if let Some(old) = inner.objects.pop(key) {
                inner.bytes -= old.weight();
            }
        }
        stale.len()
    }

    /// Objects, bytes and evictions now.
    pub fn stats(&self) -> CacheStats {
        let inner = self.lock();
        CacheStats {
            objects: inner.objects.len(),
            bytes: inner.bytes,
            evicted: inner.evicted,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn object(len: usize, fresh_until: Option<Instant>) -> Arc<Object> {
        Arc::new(Object {
            status: 200,
            body: Bytes::from(vec![0u8; len]),
            content_type: "video/mp2t",
            fresh_until,
            cache_control: "public",
            children: Vec::new(),
        })
    }

    #[test]
    fn the_least_recently_used_go_first_to_stay_within_the_cap() {
        let t0 = Instant::now();
        let cache = Cache::new(3 * (1000 + 128));
        for k in ["a", "b", "c"] {
            cache.insert(Arc::from(k), object(1000, None));
        }
        // `a` is used: `b` is now the least recently used.
        assert!(matches!(cache.get("a", t0), Lookup::Fresh(_)));
        cache.insert(Arc::from("d"), object(1000, None));
        assert!(matches!(cache.get("b", t0), Lookup::Miss));
        for k in ["a", "c", "d"] {
            assert!(matches!(cache.get(k, t0), Lookup::Fresh(_)), "{k}");
        }
        let stats = cache.stats();
        assert_eq!((stats.objects, stats.evicted), (3, 1));
        assert!(stats.bytes <= 3 * 1128);
        // Larger than the whole cap: not kept, and nothing else is pushed out for it.
        cache.insert(Arc::from("huge"), object(10_000, None));
        assert!(matches!(cache.get("huge", t0), Lookup::Miss));
        assert_eq!(cache.stats().objects, 3);
        // Replacing an object counts its bytes once.
        cache.insert(Arc::from("a"), object(10, None));
        assert_eq!(cache.stats().bytes, 2 * 1128 + 138);
    }

    #[test]
    fn objects_expire_and_a_dropped_listing_shortens_their_life() {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let cache = Cache::new(1 << 20);
        cache.insert(Arc::from("seg1"), object(10, None));
        cache.insert(Arc::from("seg2"), object(10, None));
        cache.insert(Arc::from("list"), object(10, Some(at(100))));
        assert!(matches!(cache.get("list", at(99)), Lookup::Fresh(_)));
        assert!(matches!(cache.get("list", at(100)), Lookup::Miss));
        // A stale object is still there to compare with, until swept.
        assert!(cache.peek("list").is_some());
        cache.expire_by(&[Arc::from("seg1"), Arc::from("gone")], at(500));
        assert!(matches!(cache.get("seg1", at(499)), Lookup::Fresh(_)));
        assert!(matches!(cache.get("seg1", at(500)), Lookup::Miss));
        // Shortened only: a later expiry is never lengthened.
        cache.expire_by(&[Arc::from("seg1")], at(900));
        assert!(matches!(cache.get("seg1", at(600)), Lookup::Miss));
        // Swept once stale for the time kept: the playlist (stale since 100), not seg1 yet.
        assert_eq!(cache.sweep(at(600), Duration::from_millis(400)), 1);
        assert!(cache.peek("list").is_none() && cache.peek("seg1").is_some());
        assert_eq!(cache.sweep(at(900), Duration::from_millis(400)), 1);
        assert!(matches!(cache.get("seg2", at(900)), Lookup::Fresh(_)));
        assert_eq!(cache.stats().bytes, 138);
    }
}
