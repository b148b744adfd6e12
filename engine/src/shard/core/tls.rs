//! The core's side of TLS connections: the backend reads and writes ciphertext, the core runs
//! each connection's [`TlsLink`] between the socket and the connection's HTTP state machine.
//!
//! ```text
//!  backend read ──on_read──► link.receive ──request bytes──► Conn (as for plain HTTP)
//!  Conn's queue (shared Bytes, mapped memfds) ──seal──► link ──tls_outgoing / tls_begin_send──►
//!  backend write ──tls_sent──► link (the buffer freed once all is sent)
//! ```
//!
//! A connection's bytes count as written (its progress, rate and lag) when they are sealed:
//! the link holds at most [`crate::tls::link::OUT_CAPACITY`] of ciphertext beyond that.

use super::ShardCore;
use crate::tls::{TlsCounters, TlsLink};
use rustls::ServerConfig;
use std::sync::atomic::Ordering;
use std::sync::Arc;

/// Queued buffers sealed per call at most (the rest at the next).
const SEAL_SLICES: usize = 16;

/// The TLS settings a shard accepts its TLS connections with.
#[derive(Clone, Debug)]
pub struct ShardTls {
    /// The rustls configuration (certificates by SNI, reloaded in place).
    pub config: Arc<ServerConfig>,
    /// Handshakes, failures, connections.
    pub counters: Arc<TlsCounters>,
}

impl ShardCore {
    /// A new TLS connection from `peer` (see [`ShardCore::open`]); `None`: close it at once.
    pub fn open_tls(
        &mut self,
        max_connections: usize,
        peer: Option<std::net::IpAddr>,
        tls: &ShardTls,
    ) -> Option<usize> {
        let key = self.open(max_connections, peer)?;
        let link = match TlsLink::new(tls.config.clone()) {
            Ok(link) => link,
            Err(e) => {
                tracing::warn!(shard = self.index, "cannot start a TLS session: {e}");
                self.close(key);
                return None;
            }
        };
        if self.tls.len() <= key {
            self.tls.resize_with(key + 1, || None);
        }
        self.tls[key] = Some(Box::new(link));
        self.tls_counters = Some(tls.counters.clone());
        tls.counters.connections.fetch_add(1, Ordering::Relaxed);
        let now = self.now_ns();
        if let Some(conn) = self.conns.get_mut(key) {
            conn.set_secure();
            // The handshake is part of the first request: the header timeout covers it.
            conn.request_begun(now);
        }
        Some(key)
    }

    /// Whether connection `key` is a TLS connection.
    pub fn is_tls(&self, key: usize) -> bool {
        matches!(self.tls.get(key), Some(Some(_)))
    }

    /// Ciphertext read from TLS connection `key`: its request bytes go to the connection.
    pub(super) fn tls_read(&mut self, key: usize, data: &[u8]) {
        let Some(Some(link)) = self.tls.get_mut(key) else {
            return;
        };
        let mut plain = std::mem::take(&mut self.plaintext);
        plain.clear();
        let result = link.receive(data, &mut plain);
        let peer_closed = link.peer_closed();
        let counters = self.tls_counters.clone();
        match result {
            Ok(r) if r.established => {
                if let Some(c) = &counters {
                    c.handshakes.fetch_add(1, Ordering::Relaxed);
                }
            }
            Ok(_) => {}
            Err(e) => {
                if let Some(c) = &counters {
                    c.failures.fetch_add(1, Ordering::Relaxed);
                }
                tracing::debug!(shard = self.index, "TLS connection failed: {e}");
                if let Some(conn) = self.conns.get_mut(key) {
                    conn.abort();
                }
                self.plaintext = plain;
                return;
            }
        }
        if !plain.is_empty() {
            self.drive(key, |conn, now, router| conn.on_read(&plain, now, router));
        }
        if peer_closed {
            if let Some(conn) = self.conns.get_mut(key) {
                conn.abort();
            }
        }
        self.plaintext = plain;
    }

    /// Seal what connection `key` has queued into its link, as far as the link has room; once
    /// the connection is done, end the session with close_notify.
    fn tls_seal(&mut self, key: usize) {
        loop {
            let (Some(Some(link)), Some(conn)) = (self.tls.get_mut(key), self.conns.get_mut(key))
            else {
                return;
            };
            if conn.finished() {
                link.close();
                return;
            }
            if !conn.wants_write() || !link.is_open() {
                return;
            }
            let mut slices: [&[u8]; SEAL_SLICES] = [&[]; SEAL_SLICES];
            let n = conn.queued_slices(&mut slices);
            let sealed = if n == 0 {
                Err(None)
            } else {
                link.seal(&slices[..n]).map_err(Some)
            };
            match sealed {
                Ok(0) => return,
                Ok(taken) => {
                    self.wrote(key, taken);
                }
                Err(why) => {
                    match why {
                        Some(e) => {
                            tracing::debug!(shard = self.index, "TLS connection failed: {e}")
                        }
                        None => tracing::warn!(
                            shard = self.index,
                            "a segment cannot be read into memory for TLS: closing the connection"
                        ),
                    }
                    if let Some(c) = &self.tls_counters {
                        c.failures.fetch_add(1, Ordering::Relaxed);
                    }
                    if let Some(conn) = self.conns.get_mut(key) {
                        conn.abort();
                    }
                    if let Some(Some(link)) = self.tls.get_mut(key) {
                        link.close();
                    }
                    return;
                }
            }
        }
    }

    /// For a readiness-based backend: the ciphertext of TLS connection `key` to write now
    /// (sealed from its queue first). Empty: nothing to write. Report what was written with
    /// [`ShardCore::tls_sent`].
    pub fn tls_outgoing(&mut self, key: usize) -> &[u8] {
        self.tls_seal(key);
        match self.tls.get(key) {
            Some(Some(link)) => link.outgoing(),
            _ => &[],
        }
    }

    /// For a completion-based backend: the ciphertext of TLS connection `key` to send now
    /// (sealed from its queue first). These bytes stay where they are, unchanged, until
    /// [`ShardCore::tls_sent`], and the core frees them only in [`ShardCore::close`].
    pub fn tls_begin_send(&mut self, key: usize) -> &[u8] {
        self.tls_seal(key);
        match self.tls.get_mut(key) {
            Some(Some(link)) if link.wants_write() => link.begin_send(),
            _ => &[],
        }
    }

    /// `n` bytes of TLS connection `key`'s ciphertext went out (ends a send begun with
    /// [`ShardCore::tls_begin_send`]).
    pub fn tls_sent(&mut self, key: usize, n: usize) {
        if let Some(Some(link)) = self.tls.get_mut(key) {
            link.sent(n);
        }
        if n > 0 {
            let now = self.now_ns();
            if let Some(conn) = self.conns.get_mut(key) {
                conn.progressed(now);
            }
        }
    }

    /// Whether connection `key` is done (close it): for TLS, once its session has ended and
    /// everything is sent.
    pub fn finished(&self, key: usize) -> bool {
        match self.tls.get(key) {
            Some(Some(link)) => link.finished(),
            _ => self.conns.get(key).is_none_or(|c| c.finished()),
        }
    }

    /// Whether TLS connection `key` has ciphertext that has waited longer than the idle
    /// timeout to be sent (its peer reads nothing).
    pub(super) fn tls_stalled(&self, key: usize, now_ns: u64) -> bool {
        match (self.tls.get(key), self.conns.get(key)) {
            (Some(Some(link)), Some(conn)) => {
                link.wants_write() && conn.idle_ns(now_ns) > self.limits.idle_timeout_ns
            }
            _ => false,
        }
    }

    /// Whether TLS connection `key` has ciphertext waiting.
    pub(super) fn tls_wants_write(&self, key: usize) -> bool {
        matches!(self.tls.get(key), Some(Some(link)) if link.wants_write())
    }

    /// Forget connection `key`'s link (the connection is closed).
    pub(super) fn tls_close(&mut self, key: usize) {
        if let Some(slot) = self.tls.get_mut(key) {
            if slot.take().is_some() {
                if let Some(c) = &self.tls_counters {
                    c.connections.fetch_sub(1, Ordering::Relaxed);
                }
            }
        }
    }

    /// For a backend that must leave memory allocated because the kernel may still read it:
    /// every link's buffers are leaked, never freed.
    pub fn leak_tls_buffers(&mut self) {
        std::mem::forget(std::mem::take(&mut self.tls));
    }
}
