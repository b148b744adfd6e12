//! `/metrics` in the Prometheus text exposition format (version 0.0.4).
//!
//! The values are the engine's own atomics read at scrape time, so there is no registry to
//! keep in step with the streams: this writes the format directly (HELP, TYPE, one sample per
//! stream, label values escaped). Names are listed in README ("Metrics").
//!
//! Per shard: connections, loop turns and the time the loop worked (rate of busy seconds:
//! how loaded the shard is; busy over turns: the mean turn). Per stream: the ingest-to-send
//! latency histogram of progressive delivery. What it does not have yet: trigger counts
//! (they arrive with the triggers).

use super::ControlState;
use crate::stream::{StreamCountersSnapshot, LATENCY_BUCKETS_MS};
use std::fmt::Write as _;
use std::sync::atomic::Ordering;

/// A label value with `\`, `"` and newlines escaped.
fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

type Read = fn(&StreamCountersSnapshot) -> u64;

/// Per-stream families: name, type, help, value.
const STREAM_FAMILIES: [(&str, &str, &str, Read); 28] = [
    (
        "shardcast_stream_received_bytes_total",
        "counter",
        "Bytes received from the source.",
        |c| c.bytes_in,
    ),
    (
        "shardcast_stream_received_datagrams_total",
        "counter",
        "Datagrams (or reads) received from the source.",
        |c| c.datagrams,
    ),
    (
        "shardcast_stream_sent_bytes_total",
        "counter",
        "Bytes sent to viewers.",
        |c| c.bytes_out,
    ),
    (
        "shardcast_stream_continuity_errors_total",
        "counter",
        "MPEG-TS continuity counter gaps in the source.",
        |c| c.continuity_errors,
    ),
    (
        "shardcast_stream_malformed_packets_total",
        "counter",
        "Unreadable or flagged transport packets dropped.",
        |c| c.malformed_packets,
    ),
    (
        "shardcast_stream_sync_skipped_bytes_total",
        "counter",
        "Source bytes skipped to find the 0x47 sync of transport packets (garbage, a stream cut mid-packet).",
        |c| c.sync_skipped_bytes,
    ),
    (
        "shardcast_stream_source_switches_total",
        "counter",
        "Switches between the sources of a failover list.",
        |c| c.source_switches,
    ),
    (
        "shardcast_stream_kernel_drops_total",
        "counter",
        "Datagrams the kernel dropped because the socket buffer was full.",
        |c| c.kernel_drops,
    ),
    (
        "shardcast_stream_fanout_drops_total",
        "counter",
        "Chunks a shard missed because its queue was full.",
        |c| c.fanout_drops,
    ),
    (
        "shardcast_stream_lag_skips_total",
        "counter",
        "Viewers moved ahead to a newer keyframe because they fell behind.",
        |c| c.lag_skips,
    ),
    (
        "shardcast_stream_segments_total",
        "counter",
        "HLS segments sealed.",
        |c| c.segments,
    ),
    (
        "shardcast_stream_segments_dropped_total",
        "counter",
        "HLS segments dropped while being built (over max_segment without a keyframe, or made faster than real time allows).",
        |c| c.segments_dropped,
    ),
    (
        "shardcast_stream_segments_evicted_total",
        "counter",
        "HLS segments let go early to stay within max_hls_bytes.",
        |c| c.segments_evicted,
    ),
    (
        "shardcast_stream_segments_without_keyframe_total",
        "counter",
        "HLS segments begun between keyframes so that a low-latency playlist's target duration holds (the source's keyframes are further apart).",
        |c| c.segments_without_keyframe,
    ),
    (
        "shardcast_stream_buffer_trims_total",
        "counter",
        "Chunks the progressive buffer dropped to stay within max_buffer.",
        |c| c.buffer_trims,
    ),
    (
        "shardcast_stream_source_connections_total",
        "counter",
        "Connections a source accepted or made (encoders connecting, reconnects).",
        |c| c.source_connections,
    ),
    (
        "shardcast_stream_source_refused_total",
        "counter",
        "Connections a listening source refused (not in its allow list).",
        |c| c.source_refused,
    ),
    (
        "shardcast_stream_source_failures_total",
        "counter",
        "Failed attempts of a source that connects.",
        |c| c.source_failures,
    ),
    (
        "shardcast_stream_source_connected",
        "gauge",
        "1 while a connection-based source is connected.",
        |c| c.source_connected,
    ),
    (
        "shardcast_stream_rtp_datagrams_total",
        "counter",
        "Datagrams that came as MPEG-TS in RTP.",
        |c| c.rtp_datagrams,
    ),
    (
        "shardcast_stream_rtp_lost_total",
        "counter",
        "RTP datagrams missing from the sequence (lost in the network).",
        |c| c.rtp_lost,
    ),
    (
        "shardcast_stream_rtp_late_total",
        "counter",
        "RTP datagrams that came after a later one (reordered or repeated).",
        |c| c.rtp_late,
    ),
    (
        "shardcast_stream_segment_bytes",
        "gauge",
        "Bytes of HLS segments held (listed and in grace).",
        |c| c.segment_bytes,
    ),
    (
        "shardcast_stream_hls_requests_total",
        "counter",
        "HLS requests answered (playlists and segments).",
        |c| c.hls_requests,
    ),
    (
        "shardcast_stream_hls_held_total",
        "counter",
        "Low-latency HLS requests (blocking playlist reloads, hinted parts) held until what they name exists.",
        |c| c.hls_held,
    ),
    (
        "shardcast_stream_hls_hold_timeouts_total",
        "counter",
        "Held low-latency HLS requests answered 503 after three target durations.",
        |c| c.hls_hold_timeouts,
    ),
    (
        "shardcast_stream_cmaf_fragments_total",
        "counter",
        "CMAF (fMP4) fragments made, one per track per cut.",
        |c| c.cmaf_fragments,
    ),
    (
        "shardcast_stream_cmaf_dropped_samples_total",
        "counter",
        "Samples the CMAF remuxer dropped (before its init segment, past its bounds).",
        |c| c.cmaf_dropped_samples,
    ),
];

/// The HELP and TYPE lines of a metric family.
/// The streams being sent on: one series per push, labelled by stream, id and target (its
/// secrets left out).
fn push_out_metrics(out: &mut String, push_outs: &crate::output::push_out::PushOuts) {
    let pushes = push_outs.list();
    family(
        out,
        "shardcast_push_outs",
        "gauge",
        "Streams being sent on (pushes out and re-emissions), at most max_push_outs.",
    );
    let _ = writeln!(out, "shardcast_push_outs {}", pushes.len());
    family(
        out,
        "shardcast_push_outs_refused_total",
        "counter",
        "Pushes out not started: max_push_outs ran, or PUSH_OUT_START refused.",
    );
    let _ = writeln!(
        out,
        "shardcast_push_outs_refused_total {}",
        push_outs.refused.load(Ordering::Relaxed)
    );
    type Read = fn(&crate::output::push_out::PushOut) -> u64;
    let families: [(&str, &str, &str, Read); 10] = [
        ("shardcast_push_out_bytes_total", "counter", "Bytes of TS a push sent (without RTP or HTTP framing).", |p| p.counters.bytes.load(Ordering::Relaxed)),
        ("shardcast_push_out_datagrams_total", "counter", "Datagrams a UDP push sent.", |p| p.counters.datagrams.load(Ordering::Relaxed)),
        ("shardcast_push_out_late_datagrams_total", "counter", "Datagrams a UDP push sent more than 5 ms after they were due.", |p| p.counters.late_datagrams.load(Ordering::Relaxed)),
        ("shardcast_push_out_send_errors_total", "counter", "Datagrams a UDP push's socket refused (its buffer full, the host unreachable).", |p| p.counters.send_errors.load(Ordering::Relaxed)),
        ("shardcast_push_out_resyncs_total", "counter", "Times a UDP push mapped the stream's clock again (its PCRs jumped, or data came late).", |p| p.counters.resyncs.load(Ordering::Relaxed)),
        ("shardcast_push_out_reconnects_total", "counter", "Connections a TCP, HTTP, SRT or RTMP push made after its first.", |p| p.counters.reconnects.load(Ordering::Relaxed)),
        ("shardcast_push_out_failures_total", "counter", "Connection attempts of a TCP, HTTP, SRT or RTMP push that failed (an RTMP publish refused too); for a recording, files it could not open or write (a full disk).", |p| p.counters.failures.load(Ordering::Relaxed)),
        ("shardcast_push_out_files_total", "counter", "Files a recording finished.", |p| p.counters.files.load(Ordering::Relaxed)),
        ("shardcast_push_out_dropped_chunks_total", "counter", "Chunks a push lost because it fell behind (it resumes at the next access point).", |p| p.dropped_chunks()),
        ("shardcast_push_out_connected", "gauge", "Whether a push is connected (UDP: always; a recording: writing).", |p| u64::from(p.counters.connected.load(Ordering::Relaxed))),
    ];
    for (name, kind, help, read) in families {
        family(out, name, kind, help);
        for p in &pushes {
            let _ = writeln!(
                out,
                "{name}{{stream=\"{}\",id=\"{}\",target=\"{}\"}} {}",
                escape(&p.stream),
                p.id,
                escape(&crate::output::push_out::redacted(&p.actual)),
                read(p)
            );
        }
    }
}

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// The whole exposition.
pub(super) fn render(state: &ControlState) -> String {
    let mut out = String::with_capacity(4096);
    family(
        &mut out,
        "shardcast_info",
        "gauge",
        "The running server: version and I/O backend.",
    );
    let _ = writeln!(
        out,
        "shardcast_info{{version=\"{}\",io_backend=\"{}\"}} 1",
        escape(env!("CARGO_PKG_VERSION")),
        escape(state.io_backend)
    );
    family(
        &mut out,
        "shardcast_uptime_seconds",
        "gauge",
        "Seconds since the server started.",
    );
    let _ = writeln!(
        out,
        "shardcast_uptime_seconds {:.3}",
        state.started.elapsed().as_secs_f64()
    );
    family(
        &mut out,
        "shardcast_shards",
        "gauge",
        "Shards (pinned event loops) running.",
    );
    let _ = writeln!(out, "shardcast_shards {}", state.cpus.len());

    let catalog = state.catalog();
    let streams: Vec<_> = catalog.streams().map(|(_, s)| s).collect();
    let snapshots: Vec<_> = streams.iter().map(|s| s.counters.snapshot()).collect();
    let names: Vec<String> = streams.iter().map(|s| escape(&s.name)).collect();
    family(
        &mut out,
        "shardcast_stream_input_bytes_per_second",
        "gauge",
        "Bytes received from the source per second, over the last second or more (0 once the source is silent).",
    );
    for (info, name) in streams.iter().zip(&names) {
        let _ = writeln!(
            out,
            "shardcast_stream_input_bytes_per_second{{stream=\"{name}\"}} {}",
            info.counters.input_rate.at(crate::sys::unix_ns()) / 8
        );
    }
    let latency = "shardcast_stream_send_latency_seconds";
    family(&mut out, latency, "histogram", "Time from ingest receiving data to its write to progressive viewers (one observation per flush).");
    for (info, name) in streams.iter().zip(&names) {
        histogram(
            &mut out,
            latency,
            &format!("stream=\"{name}\""),
            &info.counters.send_latency,
        );
    }
    srt_stream_metrics(&mut out, &streams, &names);
    let stats = state.run.shard_stats();
    for (metric, kind, help) in [
        (
            "shardcast_shard_connections",
            "gauge",
            "Connections open on the shard.",
        ),
        (
            "shardcast_shard_loop_turns_total",
            "counter",
            "Turns of the shard's event loop.",
        ),
        (
            "shardcast_shard_busy_seconds_total",
            "counter",
            "Time the shard's loop spent working rather than waiting.",
        ),
        (
            "shardcast_shard_sessions",
            "gauge",
            "Viewer sessions the shard tracks.",
        ),
        (
            "shardcast_shard_sessions_evicted_total",
            "counter",
            "Sessions the shard forgot early to stay within max_sessions.",
        ),
        (
            "shardcast_shard_ingest_ticked",
            "gauge",
            "UDP ingest sockets the shard reads every ingest_interval rather than as each datagram comes.",
        ),
        (
            "shardcast_shard_receive_waits_total",
            "counter",
            "io_uring receives that found all of the shard's shared receive buffers taken and waited a loop turn.",
        ),
        (
            "shardcast_shard_completions_lost_total",
            "counter",
            "io_uring completions the kernel dropped (completion queue overflow).",
        ),
        (
            "shardcast_shard_submit_errors_total",
            "counter",
            "io_uring submissions that failed.",
        ),
    ] {
        family(&mut out, metric, kind, help);
        for (i, (s, cpu)) in stats.iter().zip(&state.cpus).enumerate() {
            let count = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed).to_string();
            let value = match metric {
                "shardcast_shard_connections" => count(&s.connections),
                "shardcast_shard_loop_turns_total" => count(&s.turns),
                "shardcast_shard_sessions" => count(&s.sessions),
                "shardcast_shard_sessions_evicted_total" => count(&s.sessions_evicted),
                "shardcast_shard_ingest_ticked" => count(&s.ingest_ticked),
                "shardcast_shard_completions_lost_total" => count(&s.completions_lost),
                "shardcast_shard_receive_waits_total" => count(&s.receive_waits),
                "shardcast_shard_submit_errors_total" => count(&s.submit_errors),
                _ => format!("{:.6}", s.busy_ns.load(Ordering::Relaxed) as f64 / 1e9),
            };
            let _ = writeln!(out, "{metric}{{shard=\"{i}\",cpu=\"{cpu}\"}} {value}");
        }
    }
    family(
        &mut out,
        "shardcast_stream_viewers",
        "gauge",
        "Viewers now, by protocol: progressive HTTP-TS connections open, HLS sessions not ended.",
    );
    let sessions = state.sessions();
    for ((name, snapshot), info) in names.iter().zip(&snapshots).zip(&streams) {
        let _ = writeln!(
            out,
            "shardcast_stream_viewers{{stream=\"{name}\",protocol=\"http_ts\"}} {}",
            snapshot.viewers
        );
        let _ = writeln!(
            out,
            "shardcast_stream_viewers{{stream=\"{name}\",protocol=\"hls\"}} {}",
            sessions.viewers(&info.name).1
        );
    }
    family(
        &mut out,
        "shardcast_sessions_ended_total",
        "counter",
        "Viewer sessions that have ended (each one is a line in the access log).",
    );
    let _ = writeln!(out, "shardcast_sessions_ended_total {}", sessions.ended);
    family(
        &mut out,
        "shardcast_sessions",
        "gauge",
        "Viewer sessions kept by the control plane.",
    );
    let _ = writeln!(out, "shardcast_sessions {}", sessions.len());
    family(
        &mut out,
        "shardcast_sessions_evicted_total",
        "counter",
        "Sessions ended early because the table was at max_sessions.",
    );
    let _ = writeln!(out, "shardcast_sessions_evicted_total {}", sessions.evicted);
    family(
        &mut out,
        "shardcast_session_reports_dropped_total",
        "counter",
        "Shard session reports dropped for want of room in the session table.",
    );
    let _ = writeln!(
        out,
        "shardcast_session_reports_dropped_total {}",
        sessions.dropped
    );
    drop(sessions);
    let admission = &state.admission;
    family(
        &mut out,
        "shardcast_connections_refused_total",
        "counter",
        "Connections answered 503 or closed at accept, by reason: server_full (max_connections_per_shard) or per_address (max_connections_per_address).",
    );
    for (reason, value) in [
        ("server_full", &admission.refused_full),
        ("per_address", &admission.refused_address),
    ] {
        let _ = writeln!(
            out,
            "shardcast_connections_refused_total{{reason=\"{reason}\"}} {}",
            value.load(Ordering::Relaxed)
        );
    }
    family(
        &mut out,
        "shardcast_accept_errors_total",
        "counter",
        "Accepts that failed for want of descriptors or memory (the shard backed off).",
    );
    let _ = writeln!(
        out,
        "shardcast_accept_errors_total {}",
        admission.accept_errors.load(Ordering::Relaxed)
    );
    let pushes = &state.pushes.counts;
    family(
        &mut out,
        "shardcast_push_connections",
        "gauge",
        "HTTP push connections open (being decided or pushing).",
    );
    let _ = writeln!(
        out,
        "shardcast_push_connections {}",
        pushes.open.load(Ordering::Relaxed)
    );
    family(
        &mut out,
        "shardcast_push_refused_total",
        "counter",
        "HTTP pushes refused before any stream was found, by reason: no_stream (404) or busy (max_pushes open, 503). Refusals by a stream's key, allow= or PUSH_REWRITE are its source_refused.",
    );
    for (reason, value) in [
        ("no_stream", &pushes.refused_unknown),
        ("busy", &pushes.refused_busy),
    ] {
        let _ = writeln!(
            out,
            "shardcast_push_refused_total{{reason=\"{reason}\"}} {}",
            value.load(Ordering::Relaxed)
        );
    }
    let rtmp = &state.pushes.rtmp().counts;
    family(
        &mut out,
        "shardcast_rtmp_connections",
        "gauge",
        "RTMP connections open (in the handshake or publishing).",
    );
    let _ = writeln!(
        out,
        "shardcast_rtmp_connections {}",
        rtmp.open.load(Ordering::Relaxed)
    );
    family(
        &mut out,
        "shardcast_rtmp_refused_total",
        "counter",
        "RTMP connections refused before any stream was found, by reason: no_app (no stream has the application), no_stream (none of it takes the name or key published), busy (max_pushes open) or no_publish (closed for not publishing within 10 s and 64 KiB). Refusals by a stream's key, allow= or PUSH_REWRITE are its source_refused.",
    );
    for (reason, value) in [
        ("no_app", &rtmp.refused_app),
        ("no_stream", &rtmp.refused_unknown),
        ("busy", &rtmp.refused_busy),
        ("no_publish", &rtmp.no_publish),
    ] {
        let _ = writeln!(
            out,
            "shardcast_rtmp_refused_total{{reason=\"{reason}\"}} {}",
            value.load(Ordering::Relaxed)
        );
    }
    let srt = &state.pushes.srt().counts;
    family(
        &mut out,
        "shardcast_srt_connections",
        "gauge",
        "SRT connections open (callers accepted and calls made).",
    );
    let _ = writeln!(
        out,
        "shardcast_srt_connections {}",
        srt.open.load(Ordering::Relaxed)
    );
    family(
        &mut out,
        "shardcast_srt_refused_total",
        "counter",
        "SRT callers refused in the handshake before any stream took them, by reason: no_stream (404: no stream has the stream id), mode (405: m= other than publish) or busy (402: max_pushes open). Refusals by a stream's allow= or passphrase are its source_refused.",
    );
    for (reason, value) in [
        ("no_stream", &srt.refused_unknown),
        ("mode", &srt.refused_mode),
        ("busy", &srt.refused_busy),
    ] {
        let _ = writeln!(
            out,
            "shardcast_srt_refused_total{{reason=\"{reason}\"}} {}",
            value.load(Ordering::Relaxed)
        );
    }
    push_out_metrics(&mut out, &state.push_outs);
    if let Some(certs) = state.store.certificates() {
        tls_metrics(&mut out, certs);
    }
    if let Some(proxies) = state.store.proxies() {
        proxy_metrics(&mut out, proxies);
    }
    let triggers = state.triggers.stats();
    for (metric, help) in [
        ("shardcast_trigger_calls_total", "Trigger handler calls (each attempt), by trigger."),
        ("shardcast_trigger_failures_total", "Trigger handler calls that failed (error status, unreachable, timeout, non-zero exit), by trigger."),
        ("shardcast_trigger_dropped_total", "Non-blocking trigger events dropped because the delivery queue was full, by trigger."),
    ] {
        family(&mut out, metric, "counter", help);
        for (name, stats) in &triggers {
            let value = match metric {
                "shardcast_trigger_calls_total" => &stats.calls,
                "shardcast_trigger_failures_total" => &stats.failures,
                _ => &stats.dropped,
            };
            let _ = writeln!(
                out,
                "{metric}{{trigger=\"{name}\"}} {}",
                value.load(Ordering::Relaxed)
            );
        }
    }
    let latency = "shardcast_trigger_latency_seconds";
    family(
        &mut out,
        latency,
        "histogram",
        "Time trigger handlers took to answer, by trigger.",
    );
    for (name, stats) in &triggers {
        histogram(
            &mut out,
            latency,
            &format!("trigger=\"{name}\""),
            &stats.latency,
        );
    }
    let a = &state.access.stats;
    for (metric, help, value) in [
        ("shardcast_access_backend_calls_total", "Calls to the token access backends.", &a.calls),
        ("shardcast_access_backend_failures_total", "Access backend calls without a usable answer (unreachable, timeout, unexpected status): on_error decided.", &a.failures),
        ("shardcast_access_cached_total", "Access questions answered from the decision cache.", &a.cached),
        ("shardcast_access_busy_total", "Access questions answered 503 at once: max_access_checks (or its per-address share) in progress.", &a.busy),
        ("shardcast_wildcard_starts_limited_total", "Wildcard instances not started: the address had started wildcard_starts_per_minute.", &a.start_limited),
    ] {
        family(&mut out, metric, "counter", help);
        let _ = writeln!(out, "{metric} {}", value.load(Ordering::Relaxed));
    }
    family(
        &mut out,
        "shardcast_access_checks",
        "gauge",
        "Access decisions in progress (token backend calls, blocking triggers).",
    );
    let _ = writeln!(
        out,
        "shardcast_access_checks {}",
        state.access.checks_in_progress()
    );
    for (metric, kind, help, read) in STREAM_FAMILIES {
        family(&mut out, metric, kind, help);
        for (name, snapshot) in names.iter().zip(&snapshots) {
            let _ = writeln!(out, "{metric}{{stream=\"{name}\"}} {}", read(snapshot));
        }
    }
    out
}

/// The samples of histogram `metric` for one label set (`labels`: `name="value"`…).
fn histogram(out: &mut String, metric: &str, labels: &str, h: &crate::stream::LatencyHistogram) {
    let (cumulative, sum_ns) = h.cumulative();
    for (bound, count) in LATENCY_BUCKETS_MS.iter().zip(&cumulative) {
        let le = *bound as f64 / 1000.0;
        let _ = writeln!(out, "{metric}_bucket{{{labels},le=\"{le}\"}} {count}");
    }
    let total = cumulative[LATENCY_BUCKETS_MS.len()];
    let _ = writeln!(out, "{metric}_bucket{{{labels},le=\"+Inf\"}} {total}");
    let _ = writeln!(out, "{metric}_sum{{{labels}}} {:.6}", sum_ns as f64 / 1e9);
    let _ = writeln!(out, "{metric}_count{{{labels}}} {total}");
}

/// The TLS listener's handshakes, failures, connections, reloads and certificates.
fn tls_metrics(out: &mut String, certs: &crate::tls::Certificates) {
    let c = certs.counters();
    for (name, kind, help, value) in [
        ("shardcast_tls_handshakes_total", "counter", "TLS handshakes completed.", &c.handshakes),
        ("shardcast_tls_failures_total", "counter", "TLS connections that failed: handshakes refused (no common version, cipher or protocol; no certificate for the name asked; garbage) and broken records.", &c.failures),
        ("shardcast_tls_unknown_name_total", "counter", "TLS handshakes refused because no certificate serves the name the client asked for (SNI); also counted in shardcast_tls_failures_total.", &c.unknown_name),
        ("shardcast_tls_connections", "gauge", "TLS connections open.", &c.connections),
    ] {
        family(out, name, kind, help);
        let _ = writeln!(out, "{name} {}", value.load(Ordering::Relaxed));
    }
    family(
        out,
        "shardcast_tls_reloads_total",
        "counter",
        "Certificate reloads (SIGHUP, the API), by result: ok, or refused (the running certificates stayed).",
    );
    for (result, value) in [("ok", &c.reloads), ("refused", &c.reloads_refused)] {
        let _ = writeln!(
            out,
            "shardcast_tls_reloads_total{{result=\"{result}\"}} {}",
            value.load(Ordering::Relaxed)
        );
    }
    family(
        out,
        "shardcast_tls_certificate_expiry_seconds",
        "gauge",
        "When each certificate in use expires, UNIX seconds, by its file.",
    );
    for cert in certs.current().certs() {
        let _ = writeln!(
            out,
            "shardcast_tls_certificate_expiry_seconds{{cert=\"{}\"}} {}",
            escape(&cert.files.cert.display().to_string()),
            cert.not_after
        );
    }
}

/// The HLS proxy's counts, by proxy (`_` for upstream URLs named in paths), and its cache.
fn proxy_metrics(out: &mut String, proxies: &crate::proxy::Proxies) {
    use crate::proxy::ProxyCounters;
    let named = proxies.named();
    let mut all: Vec<(&str, &ProxyCounters)> = vec![("_", &**proxies.any_counters())];
    let mut names: Vec<&String> = named.keys().collect();
    names.sort();
    for name in names {
        all.push((name, &named[name].counters));
    }
    type Pick = fn(&ProxyCounters) -> &std::sync::atomic::AtomicU64;
    let families: [(&str, &str, Pick); 7] = [
        (
            "shardcast_proxy_requests_total",
            "Viewer requests to the HLS proxy, by proxy (_: upstream URLs named in the path).",
            |c| &c.requests,
        ),
        (
            "shardcast_proxy_cache_hits_total",
            "Of those, answered from the cache at once.",
            |c| &c.hits,
        ),
        (
            "shardcast_proxy_upstream_requests_total",
            "Requests the proxy made upstream (each attempt, prefetches included).",
            |c| &c.fetches,
        ),
        (
            "shardcast_proxy_upstream_errors_total",
            "Upstream fetches that failed after their retries (viewers got 404, 502 or 504).",
            |c| &c.errors,
        ),
        (
            "shardcast_proxy_refused_total",
            "Upstreams refused: by the SSRF guard, proxy_any_url or proxy_hosts (viewers got 403).",
            |c| &c.refused,
        ),
        (
            "shardcast_proxy_upstream_bytes_total",
            "Bytes read from upstreams.",
            |c| &c.upstream_bytes,
        ),
        (
            "shardcast_proxy_playlist_stalls_total",
            "Live playlists that did not move on for three target durations (viewers still get them).",
            |c| &c.stalls,
        ),
    ];
    for (metric, help, pick) in families {
        family(out, metric, "counter", help);
        for (name, counters) in &all {
            let _ = writeln!(
                out,
                "{metric}{{proxy=\"{}\"}} {}",
                escape(name),
                pick(counters).load(Ordering::Relaxed)
            );
        }
    }
    let cache = proxies.cache.stats();
    for (metric, kind, help, value) in [
        (
            "shardcast_proxy_cache_objects",
            "gauge",
            "Objects (playlists, segments, keys, errors) the proxy's cache holds.",
            cache.objects as u64,
        ),
        (
            "shardcast_proxy_cache_bytes",
            "gauge",
            "Their bytes (at most proxy_cache_bytes).",
            cache.bytes as u64,
        ),
        (
            "shardcast_proxy_cache_evicted_total",
            "counter",
            "Objects dropped, least recently used first, to stay within proxy_cache_bytes.",
            cache.evicted,
        ),
        (
            "shardcast_proxy_fetches_in_flight",
            "gauge",
            "Upstream fetches in flight (at most proxy_max_fetches).",
            proxies.load.in_flight.load(Ordering::Relaxed),
        ),
        (
            "shardcast_proxy_followed_playlists",
            "gauge",
            "Live upstream playlists the proxy follows for stalls (at most 10000).",
            proxies.load.followed.load(Ordering::Relaxed),
        ),
        (
            "shardcast_proxy_busy_total",
            "counter",
            "Requests answered 503 at once: proxy_max_fetches fetches in flight, or a shard's queue to the fetcher full.",
            proxies.load.busy.load(Ordering::Relaxed),
        ),
    ] {
        family(out, metric, kind, help);
        let _ = writeln!(out, "{metric} {value}");
    }
}

/// The statistics of each stream's SRT connection, for streams fed over SRT now.
fn srt_stream_metrics(
    out: &mut String,
    streams: &[&std::sync::Arc<crate::shard::StreamInfo>],
    names: &[String],
) {
    let stats: Vec<_> = streams
        .iter()
        .zip(names)
        .filter_map(|(info, name)| {
            let stats = info.counters.srt.lock().ok()?.clone()?;
            Some((name, stats))
        })
        .collect();
    type Read = fn(&crate::sys::srt::Stats) -> f64;
    let families: [(&str, &str, &str, Read); 7] = [
        (
            "shardcast_stream_srt_rtt_seconds",
            "gauge",
            "The SRT connection's smoothed round-trip time.",
            |s| s.rtt_ms / 1000.0,
        ),
        (
            "shardcast_stream_srt_received_packets_total",
            "counter",
            "SRT data packets received, retransmissions included (this connection).",
            |s| s.received_packets as f64,
        ),
        (
            "shardcast_stream_srt_lost_packets_total",
            "counter",
            "SRT packets found missing and asked for again (this connection).",
            |s| s.lost_packets as f64,
        ),
        (
            "shardcast_stream_srt_retransmitted_packets_total",
            "counter",
            "Retransmitted SRT packets received (this connection).",
            |s| s.retransmitted_packets as f64,
        ),
        (
            "shardcast_stream_srt_dropped_packets_total",
            "counter",
            "SRT packets given up on: not recovered within the latency (this connection).",
            |s| s.dropped_packets as f64,
        ),
        (
            "shardcast_stream_srt_receive_buffer_seconds",
            "gauge",
            "What the SRT receive buffer holds, in time.",
            |s| s.receive_buffer_ms as f64 / 1000.0,
        ),
        (
            "shardcast_stream_srt_receive_buffer_bytes",
            "gauge",
            "What the SRT receive buffer holds, in bytes.",
            |s| s.receive_buffer_bytes as f64,
        ),
    ];
    for (metric, kind, help, read) in families {
        family(out, metric, kind, help);
        for (name, s) in &stats {
            let _ = writeln!(out, "{metric}{{stream=\"{name}\"}} {}", read(s));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
