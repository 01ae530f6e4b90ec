//! The opt-in response cache (`vhost add --cache`). pingora-cache does the
//! HTTP semantics: freshness from Cache-Control and Expires (RFC 9111),
//! revalidation with the origin, Vary, and conditional and Range requests
//! answered from a stored response. This module decides what may be
//! stored (a shared cache: no `private`, no `Set-Cookie`, nothing without
//! explicit freshness), keys it by scheme, host, port and target, keeps the
//! bodies in memory under an LRU bound on bytes, and purges by vhost.

use std::{
    any::Any,
    collections::HashMap,
    sync::{Arc, RwLock},
    time::Duration,
};

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use hostgate_store::Event;
use pingora::{http::ResponseHeader, Error, ErrorType, Result};
use pingora_cache::{
    cache_control::CacheControl,
    eviction::{simple_lru, EvictionManager},
    filters::resp_cacheable,
    key::{CacheHashKey, CompactCacheKey},
    lock::{CacheKeyLockImpl, CacheLock},
    storage::{HandleHit, HandleMiss, MissFinishType, PurgeOutcome, PurgeTarget},
    trace::SpanHandle,
    CacheEntryKey, CacheKey, CacheMeta, CacheMetaDefaults, HitHandler, MissHandler, NoCacheReason, PurgeType,
    RespCacheable, Storage, VarianceBuilder,
};
use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use super::keys;
use crate::Daemon;

/// No heuristic freshness: a response is stored only when its origin says
/// for how long (max-age, s-maxage or Expires), as NGINX does without
/// `proxy_cache_valid`. No stale serving beyond what the response allows.
const DEFAULTS: CacheMetaDefaults = CacheMetaDefaults::new(|_| None, 0, 0);

/// Readers of a key being filled wait this long for the first writer
/// (one origin request per key, not a stampede).
const LOCK_AGE: Duration = Duration::from_secs(5);

/// The cache of one daemon: storage, eviction and the fill lock. pingora
/// wants them `'static`, so they are leaked once per daemon (one per
/// process) and live as long as it.
pub struct ResponseCache {
    pub storage: &'static MemoryStore,
    pub eviction: &'static simple_lru::Manager,
    pub lock: &'static CacheKeyLockImpl,
    /// The largest body stored: a quarter of the cache.
    pub max_object_bytes: usize,
}

impl ResponseCache {
    pub fn new(limit_bytes: usize) -> ResponseCache {
        let lock: &'static CacheLock = Box::leak(Box::new(CacheLock::new(LOCK_AGE)));
        ResponseCache {
            storage: Box::leak(Box::new(MemoryStore::default())),
            eviction: Box::leak(Box::new(simple_lru::Manager::new(limit_bytes))),
            lock,
            max_object_bytes: (limit_bytes / 4).max(1),
        }
    }

    /// Drops every stored response of `vhost` (whose path starts with
    /// `path_prefix`, if given); how many went.
    pub fn purge(&self, vhost: &str, path_prefix: Option<&str>) -> usize {
        let gone = self
            .storage
            .remove_where(|o| o.vhost == vhost && path_prefix.is_none_or(|p| path_of(&o.primary).starts_with(p)));
        for key in &gone {
            self.eviction.remove((&CacheEntryKey::KeyOnly(key.clone())).into());
        }
        gone.len()
    }
}

/// One purge as the node that was asked stores it (`http/purges/<node>`,
/// overwritten by its next): the others repeat it.
#[derive(Debug, Serialize, Deserialize)]
pub struct Purge {
    pub host: String,
    pub path: Option<String>,
    /// When it was asked, unix seconds (each purge is a put of its own).
    pub at: u64,
}

/// Follows `http/purges/`: each purge another node stored is done here
/// too, so a purge empties every node's cache. Only puts after the start
/// count: a starting daemon's cache is empty anyway.
pub(crate) async fn follow_purges(d: Arc<Daemon>) -> anyhow::Result<()> {
    let snap = d.store.snapshot(keys::PURGES).await?;
    let mut watch = d.store.watch(keys::PURGES, snap.revision).await?;
    let own = keys::purge(&d.config.node_name);
    loop {
        let batch = watch.recv().await.ok_or_else(|| anyhow::anyhow!("the store's watch ended"))?;
        for event in &batch.events {
            let Event::Put(kv) = event else { continue };
            if kv.key == own {
                continue;
            }
            match kv.decode::<Purge>() {
                Ok(p) => {
                    let purged = d.http.cache.purge(&p.host, p.path.as_deref());
                    info!(vhost = %p.host, path = ?p.path, purged, from = %kv.key, "HTTP cache purged");
                }
                Err(e) => warn!(key = %kv.key, error = %e, "unreadable cache purge ignored"),
            }
        }
    }
}

/// The cache key: scheme, host and port as the client named them
/// (lowercased), and the request target; tagged with the vhost for purges.
pub fn key(scheme: &str, host: &str, default_port: u16, target: &str, vhost: &str) -> CacheKey {
    let host = host.to_ascii_lowercase();
    let authority = match host.rsplit_once(':') {
        Some((_, port)) if port.bytes().all(|b| b.is_ascii_digit()) && !host.ends_with(']') => host,
        _ => format!("{host}:{default_port}"),
    };
    CacheKey::new(format!("{scheme}://{authority}{target}"), vhost)
}

/// The path of a primary key `scheme://authority/path?query`.
fn path_of(primary: &str) -> &str {
    let rest = primary.split_once("://").map_or(primary, |(_, r)| r);
    rest.find('/').map_or("/", |i| &rest[i..])
}

/// Whether `resp` may be stored by a shared cache, and until when.
pub fn cacheable(resp: &ResponseHeader, authorization: bool) -> RespCacheable {
    if resp.headers.contains_key("set-cookie") {
        return RespCacheable::Uncacheable(NoCacheReason::Custom("set-cookie"));
    }
    let vary_all =
        resp.headers.get_all("vary").iter().any(|v| v.to_str().is_ok_and(|v| v.split(',').any(|n| n.trim() == "*")));
    if vary_all {
        return RespCacheable::Uncacheable(NoCacheReason::Custom("vary: *"));
    }
    let cc = CacheControl::from_resp_headers(resp);
    if cc.as_ref().is_some_and(|cc| cc.private()) {
        return RespCacheable::Uncacheable(NoCacheReason::Custom("private"));
    }
    resp_cacheable(cc.as_ref(), resp.clone(), authorization, &DEFAULTS)
}

/// The variance of a stored response for `req`: the values of the request
/// headers its `Vary` names.
pub fn variance(meta: &CacheMeta, req: &pingora::http::RequestHeader) -> Option<pingora_cache::key::HashBinary> {
    let mut names: Vec<String> = Vec::new();
    for v in meta.headers().get_all("vary") {
        let Ok(v) = v.to_str() else { continue };
        names.extend(v.split(',').map(|n| n.trim().to_ascii_lowercase()).filter(|n| !n.is_empty()));
    }
    if names.is_empty() {
        return None;
    }
    let mut builder = VarianceBuilder::new();
    for name in names {
        let value = req.headers.get(name.as_str()).map(|v| v.as_bytes().to_vec()).unwrap_or_default();
        builder.add_owned_name_value(name, value);
    }
    builder.finalize()
}

/// A complete stored response.
struct Stored {
    meta: (Vec<u8>, Vec<u8>),
    body: Bytes,
    key: CompactCacheKey,
    vhost: String,
    primary: String,
}

/// Complete responses in memory, by combined (primary + variance) key. A
/// response becomes visible when its body is complete; readers of a key
/// being filled wait on the cache lock instead of streaming a partial one.
#[derive(Default)]
pub struct MemoryStore {
    objects: RwLock<HashMap<String, Stored>>,
}

impl MemoryStore {
    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<String, Stored>> {
        self.objects.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<String, Stored>> {
        self.objects.write().unwrap_or_else(|p| p.into_inner())
    }

    fn remove_where(&self, pred: impl Fn(&Stored) -> bool) -> Vec<CompactCacheKey> {
        let mut all = self.write();
        let keys: Vec<String> = all.iter().filter(|(_, o)| pred(o)).map(|(k, _)| k.clone()).collect();
        keys.iter().filter_map(|k| all.remove(k)).map(|o| o.key).collect()
    }
}

#[async_trait]
impl Storage for MemoryStore {
    async fn lookup(&'static self, key: &CacheKey, _trace: &SpanHandle) -> Result<Option<(CacheMeta, HitHandler)>> {
        let all = self.read();
        let Some(o) = all.get(&key.combined()) else { return Ok(None) };
        let meta = CacheMeta::deserialize(&o.meta.0, &o.meta.1)?;
        let hit = Hit { body: o.body.clone(), start: 0, end: o.body.len(), done: false };
        Ok(Some((meta, Box::new(hit))))
    }

    async fn get_miss_handler(
        &'static self,
        key: &CacheKey,
        meta: &CacheMeta,
        _trace: &SpanHandle,
    ) -> Result<MissHandler> {
        Ok(Box::new(Fill {
            store: self,
            combined: key.combined(),
            key: key.to_compact(),
            vhost: key.user_tag.clone(),
            primary: key.primary_key_str().unwrap_or_default().to_string(),
            meta: meta.serialize()?,
            body: BytesMut::new(),
        }))
    }

    async fn purge(&'static self, target: PurgeTarget<'_>, _: PurgeType, _trace: &SpanHandle) -> Result<PurgeOutcome> {
        // Entries carry no storage-defined IDs; an identified target is not ours.
        if matches!(target, PurgeTarget::Exact(CacheEntryKey::Identified { .. })) {
            return Ok(PurgeOutcome::NotFound);
        }
        match self.write().remove(&target.key().combined()) {
            Some(_) => Ok(PurgeOutcome::Purged(None)),
            None => Ok(PurgeOutcome::NotFound),
        }
    }

    async fn update_meta(&'static self, key: &CacheKey, meta: &CacheMeta, _trace: &SpanHandle) -> Result<bool> {
        match self.write().get_mut(&key.combined()) {
            Some(o) => {
                o.meta = meta.serialize()?;
                Ok(true)
            }
            None => Ok(false),
        }
    }

    fn as_any(&self) -> &(dyn Any + Send + Sync + 'static) {
        self
    }
}

/// A body being stored; it enters the store whole when finished.
struct Fill {
    store: &'static MemoryStore,
    combined: String,
    key: CompactCacheKey,
    vhost: String,
    primary: String,
    meta: (Vec<u8>, Vec<u8>),
    body: BytesMut,
}

#[async_trait]
impl HandleMiss for Fill {
    async fn write_body(&mut self, data: Bytes, _eof: bool) -> Result<()> {
        self.body.extend_from_slice(&data);
        Ok(())
    }

    async fn finish(self: Box<Self>) -> Result<MissFinishType> {
        let size = self.body.len() + self.meta.0.len() + self.meta.1.len();
        let stored = Stored {
            meta: self.meta,
            body: self.body.freeze(),
            key: self.key,
            vhost: self.vhost,
            primary: self.primary,
        };
        self.store.write().insert(self.combined, stored);
        Ok(MissFinishType::Created(size))
    }
}

/// A stored body being read, whole or one range at a time.
struct Hit {
    body: Bytes,
    start: usize,
    end: usize,
    done: bool,
}

#[async_trait]
impl HandleHit for Hit {
    async fn read_body(&mut self) -> Result<Option<Bytes>> {
        if self.done {
            return Ok(None);
        }
        self.done = true;
        Ok(Some(self.body.slice(self.start..self.end)))
    }

    async fn finish(
        self: Box<Self>,
        _storage: &'static (dyn Storage + Sync),
        _key: &CacheKey,
        _trace: &SpanHandle,
    ) -> Result<()> {
        Ok(())
    }

    fn can_seek(&self) -> bool {
        true
    }

    fn seek(&mut self, start: usize, end: Option<usize>) -> Result<()> {
        if start >= self.body.len() {
            return Error::e_explain(ErrorType::InternalError, format!("seek to {start} past {}", self.body.len()));
        }
        self.start = start;
        self.end = end.map_or(self.body.len(), |e| e.min(self.body.len()));
        self.done = false;
        Ok(())
    }

    fn get_eviction_weight(&self) -> usize {
        self.body.len()
    }

    fn as_any(&self) -> &(dyn Any + Send + Sync) {
        self
    }

    fn as_any_mut(&mut self) -> &mut (dyn Any + Send + Sync) {
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resp(headers: &[(&str, &str)]) -> ResponseHeader {
        let mut r = ResponseHeader::build(200, None).expect("resp");
        for (n, v) in headers {
            r.append_header(n.to_string(), *v).expect("header");
        }
        r
    }

    fn stored(c: RespCacheable) -> bool {
        matches!(c, RespCacheable::Cacheable(_))
    }

    #[test]
    fn only_what_a_shared_cache_may_store_is_stored() {
        assert!(stored(cacheable(&resp(&[("cache-control", "max-age=60")]), false)));
        assert!(stored(cacheable(&resp(&[("cache-control", "s-maxage=60")]), false)));
        assert!(!stored(cacheable(&resp(&[]), false)), "no explicit freshness, no heuristics");
        assert!(!stored(cacheable(&resp(&[("cache-control", "no-store, max-age=60")]), false)));
        assert!(!stored(cacheable(&resp(&[("cache-control", "private, max-age=60")]), false)));
        assert!(!stored(cacheable(&resp(&[("cache-control", "max-age=60"), ("set-cookie", "a=b")]), false)));
        assert!(!stored(cacheable(&resp(&[("cache-control", "max-age=60"), ("vary", "*")]), false)));
        // With Authorization only what the origin marks public or s-maxage (RFC 9111 §3.5).
        assert!(!stored(cacheable(&resp(&[("cache-control", "max-age=60")]), true)));
        assert!(stored(cacheable(&resp(&[("cache-control", "public, max-age=60")]), true)));
    }

    #[test]
    fn keys_hold_scheme_host_and_port() {
        let k = |scheme, host, port| key(scheme, host, port, "/a?b=1", "v").primary_key_str().map(str::to_string);
        assert_eq!(k("http", "Shop.Example.com", 80).as_deref(), Some("http://shop.example.com:80/a?b=1"));
        assert_eq!(k("http", "shop.example.com:80", 80), k("http", "shop.example.com", 80));
        assert_ne!(k("https", "shop.example.com", 443), k("http", "shop.example.com", 80));
        assert_ne!(k("http", "shop.example.com:8080", 80), k("http", "shop.example.com", 80));
        assert_eq!(k("http", "[2001:db8::1]", 80).as_deref(), Some("http://[2001:db8::1]:80/a?b=1"));
        assert_eq!(path_of("http://h:80/a/b?c"), "/a/b?c");
    }
}
