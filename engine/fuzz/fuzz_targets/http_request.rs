//! Arbitrary bytes as what a viewer's connection sends, through the request head parser and
//! the shard's whole request path (routing, the access gate, sessions, wildcard names,
//! pipelining and its bounds, every answer): nothing may panic, every answer is HTTP/1.1,
//! and what a connection queues stays within its bounds. A push's body (a length, or chunked)
//! goes through the body reader, which never takes more than it is given nor more than the
//! length. The first byte says where the input is split into two reads. The HLS proxy is
//! there too (a configured proxy, and upstream URLs in paths for every host): what it is asked
//! to fetch is answered with a playlist or an error, and the held requests go on.
#![no_main]

use libfuzzer_sys::fuzz_target;
use shardcast::config::Config;
use shardcast::hls::SegmentSend;
use shardcast::http::{parse_head, BodyReader, ConnLimits, RequestBody};
use shardcast::session::{ShardCommand, ShardLink, Verdict};
use shardcast::shard::core::ShardCore;
use shardcast::shard::{Clock, Streams};
use std::cell::RefCell;
use std::io::IoSlice;
use std::time::Duration;

/// A demo stream, a template, a gated stream and a gated template.
const CONFIG: &str = r#"
[server]
proxy_any_url = true
proxy_hosts = ["*"]

[[proxy]]
name = "news"
url = "http://origin.example/live/master.m3u8"
access = { url = "http://127.0.0.1:9/check" }

[[proxy]]
name = "open"
url = "http://origin.example/live/index.m3u8"

[[stream]]
name = "demo"
source = "demo:"

[[stream]]
name = "cams"
source = "demo:"
wildcard = { instances = 4, pattern = "[a-z0-9]+" }

[[stream]]
name = "paid"
source = "demo:"
access = { url = "http://127.0.0.1:9/check" }

[[stream]]
name = "ingest"
source = "push://?key=k"

[[stream]]
name = "live"
source = "udp://127.0.0.1:$wildcard"
wildcard = { ports = [5000, 5999] }
"#;

/// Small bounds, so that inputs reach them.
fn limits() -> ConnLimits {
    ConnLimits {
        max_queued_bytes: 64 * 1024,
        max_pipelined: 4,
        ..ConnLimits::default()
    }
}

thread_local! {
    /// One core for every input (its tables fill up as they would on a shard that runs).
    static CORE: RefCell<(ShardCore, Streams, ShardLink)> = RefCell::new({
        let config = Config::parse(CONFIG).expect("the fuzz configuration is valid");
        let streams = Streams::new(&config.streams, Vec::new());
        let mut core = ShardCore::new(
            0,
            streams.shared(),
            Vec::new(),
            limits(),
            Duration::ZERO,
            SegmentSend::Copy,
            Clock::now(),
        );
        let link = ShardLink::new();
        core.set_link(link.clone());
        core.set_proxies(std::sync::Arc::new(shardcast::proxy::Proxies::new(
            config.proxy.clone(),
            &config.proxies,
            b"fuzz",
        )));
        core.follow_catalog();
        (core, streams, link)
    });
}

fuzz_target!(|data: &[u8]| {
    let Some((&split, data)) = data.split_first() else {
        return;
    };
    let max_head = limits().max_head;
    let at = usize::from(split) * data.len() / 256;
    if let Ok(Some((head, len))) = parse_head(data, max_head) {
        assert!(len <= data.len() && len <= max_head);
        let rest = &data[len..];
        let mid = at.saturating_sub(len).min(rest.len());
        let mut body = BodyReader::new(head.body);
        let mut seen = 0u64;
        for part in [&rest[..mid], &rest[mid..]] {
            match body.read(part, |d| seen += d.len() as u64) {
                Ok(used) => assert!(used <= part.len()),
                Err(_) => break,
            }
            if body.done() {
                break;
            }
        }
        match head.body {
            RequestBody::Length(n) => assert!(seen <= n),
            RequestBody::None => assert_eq!(seen, 0),
            RequestBody::Chunked => {}
        }
    }
    CORE.with(|cell| {
        let (core, _, link) = &mut *cell.borrow_mut();
        let Some(key) = core.open(usize::MAX, Some([203, 0, 113, split].into())) else {
            return;
        };
        let mut out = Vec::new();
        for part in [&data[..at], &data[at..]] {
            // As a backend does: read only while the connection wants to.
            if core.conn(key).is_some_and(|c| c.wants_read()) {
                core.on_read(key, part);
            }
            drain(core, key, &mut out);
        }
        // Answer the access questions asked, as the control plane would (allowed, refused
        // or busy, as the split byte says), and let the held requests go on.
        while let Some(ask) = link.asks.pop() {
            let verdict = Verdict {
                refused: [None, Some(401), Some(503), Some(429)][usize::from(split % 4)],
                headers: (split & 4 != 0).then(|| "X-Granted: yes\r\n".into()),
                ttl: Duration::from_secs(1),
                redirect: None,
            };
            let _ = link.commands.push(ShardCommand::Verdict(ask.key, verdict));
        }
        // Answer the proxy's fetches: a playlist, a segment's bytes or an error.
        while let Some(resource) = link.fetches.pop() {
            let (status, body, content_type): (u16, &[u8], &'static str) = match split % 3 {
                0 => (
                    200,
                    b"#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXT-X-MAP:URI=\"i.mp4\"\n#EXTINF:2,\na.ts\n",
                    "application/vnd.apple.mpegurl",
                ),
                1 => (200, b"\x47\x40\x00\x10", "video/mp2t"),
                _ => (502, b"the upstream is unreachable\n", "text/plain; charset=utf-8"),
            };
            let object = shardcast::proxy::cache::Object {
                status,
                body: bytes::Bytes::from_static(body),
                content_type,
                fresh_until: None,
                cache_control: "no-cache",
                children: Vec::new(),
            };
            let _ = link
                .commands
                .push(ShardCommand::Fetched(resource, std::sync::Arc::new(object)));
        }
        let work = core.take_commands();
        for k in work.write {
            if k == key {
                drain(core, key, &mut out);
            }
        }
        if !out.is_empty() {
            assert!(
                out.starts_with(b"HTTP/1.1 "),
                "{:?}",
                &out[..out.len().min(64)]
            );
        }
        core.close(key);
    });
});

/// Write what connection `key` queued, as a backend would, checking its bounds.
fn drain(core: &mut ShardCore, key: usize, out: &mut Vec<u8>) {
    for _ in 0..10_000 {
        let Some(conn) = core.conn(key) else { return };
        if !conn.wants_write() {
            return;
        }
        let mut slices = [IoSlice::new(&[]); 16];
        let n = conn.write_slices(&mut slices);
        let written: usize = slices[..n].iter().map(|s| s.len()).sum();
        if written == 0 {
            // A segment's memfd range (not in this configuration): nothing more to see.
            return;
        }
        out.extend(
            slices[..n]
                .iter()
                .flat_map(|s| s.iter().copied())
                .take(1 << 16),
        );
        if core.wrote(key, written) {
            return;
        }
    }
}
