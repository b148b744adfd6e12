//! Validation: the file as its schema reads it ([`super::file`]) made into a [`Config`]. Every
//! value is checked here and every absent one given its default; a refusal names the line it
//! is on and the reason.

use super::file::{
    ApiSection, File, ProxySection, ServerSection, Setting, StreamSection, TriggerSection,
    WildcardSection,
};
use super::{
    valid_api_token, Config, ConfigError, ServerLimits, StreamConfig, TriggerConfig,
    WildcardPattern, WildcardRule, MAX_WILDCARD_INSTANCES, TRIGGERS, WILDCARD,
};
use crate::hls::HlsSettings;
use crate::source::SourceSpec;
use crate::stream::StreamLimits;
use std::net::SocketAddr;
use std::ops::{Range, RangeInclusive};
use std::path::PathBuf;
use toml::Spanned;

/// What is wrong, and where in the text when that is known.
struct Refusal {
    span: Option<Range<usize>>,
    message: String,
}

impl Refusal {
    fn at(span: Range<usize>, message: impl Into<String>) -> Self {
        Self {
            span: Some(span),
            message: message.into(),
        }
    }
}

impl Config {
    /// Validate the text of a configuration file.
    pub fn parse(text: &str) -> Result<Config, ConfigError> {
        let line_of = |offset: usize| text[..offset.min(text.len())].matches('\n').count() + 1;
        let file: File = toml::from_str(text).map_err(|e| ConfigError {
            line: e.span().map(|s| line_of(s.start)),
            message: e.message().to_owned(),
        })?;
        config(file).map_err(|r| ConfigError {
            line: r.span.map(|s| line_of(s.start)),
            message: r.message,
        })
    }
}

fn config(file: File) -> Result<Config, Refusal> {
    let File {
        server: s,
        streams: stream_sections,
        api,
        triggers: trigger_sections,
        proxies: proxy_sections,
    } = file;
    let limits = server_limits(&s)?;
    let proxy = proxy_settings(&s)?;
    let listen = match &s.listen {
        None => SocketAddr::from(([0, 0, 0, 0], 8080)),
        Some(l) => l.get_ref().parse().map_err(|_| {
            Refusal::at(
                l.span(),
                format!("listen {:?} is not an address:port", l.get_ref()),
            )
        })?,
    };
    let (tls_listen, tls_certificates) = tls_settings(&s, listen)?;
    let cpus = cpus(s.cpus)?;
    let max_connections_per_shard = within(
        s.max_connections_per_shard,
        1..=10_000_000,
        20_000,
        "max_connections_per_shard",
    )?;
    let header_timeout_s = within(
        s.header_timeout,
        0.001..=3600.0,
        10.0,
        "header_timeout (seconds)",
    )?;
    let idle_timeout_s = within(
        s.idle_timeout,
        0.001..=3600.0,
        30.0,
        "idle_timeout (seconds)",
    )?;
    let session_timeout_s = within(
        s.session_timeout,
        1.0..=3600.0,
        20.0,
        "session_timeout (seconds)",
    )?;
    let flush_interval_ms = within(s.flush_interval, 0.0..=1000.0, 20.0, "flush_interval (ms)")?;
    let gather_ms = within(s.gather, 0.0..=10.0, DEFAULT_GATHER_MS, "gather (ms)")?;
    let ingest_interval_ms = within(
        s.ingest_interval,
        0.0..=1000.0,
        DEFAULT_INGEST_INTERVAL_MS,
        "ingest_interval (ms)",
    )?;
    let max_lag_bytes = within(s.max_lag, 0..=1 << 40, 4 << 20, "max_lag (bytes)")?;
    let send_buffer = within(s.send_buffer, 0..=1 << 30, 0, "send_buffer (bytes)")?;
    let (api_listen, api_token) = api_settings(&api)?;
    let api_tls = match &api.tls {
        Some(t) if *t.get_ref() && tls_listen.is_none() => {
            return Err(Refusal::at(
                t.span(),
                "api tls = true needs [server.tls] (its certificates serve the API too)",
            ))
        }
        Some(t) => *t.get_ref(),
        None => false,
    };
    let public_base_url = match &s.public_base_url {
        None => None,
        Some(u) => Some(
            crate::site::parse_public_base(u.get_ref())
                .map_err(|e| Refusal::at(u.span(), e.to_string()))?,
        ),
    };
    let trusted_proxies = s
        .trusted_proxies
        .iter()
        .map(|t| {
            crate::site::Cidr::parse(t.get_ref())
                .map_err(|e| Refusal::at(t.span(), format!("trusted_proxies: {e}")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let mut proxies: Vec<super::ProxyConfig> = Vec::new();
    for section in proxy_sections {
        let p = proxy_entry(section, &proxies)?;
        proxies.push(p);
    }
    let mut streams: Vec<StreamConfig> = Vec::new();
    for section in stream_sections {
        let st = stream(section, &streams, &proxies)?;
        streams.push(st);
    }
    let triggers = trigger_sections
        .into_iter()
        .map(trigger)
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Config {
        triggers,
        listen,
        cpus,
        io: s.io.unwrap_or_default(),
        max_connections_per_shard,
        header_timeout_s,
        idle_timeout_s,
        max_lag_bytes,
        flush_interval_ms,
        gather_ms,
        ingest_interval_ms,
        send_buffer,
        segment_send: s.segment_send.unwrap_or_default(),
        streams,
        api_listen,
        api_token,
        metrics_need_token: api.metrics_need_token,
        api_tls,
        tls_listen,
        tls_certificates,
        state_dir: s.state_dir.map(PathBuf::from),
        session_timeout_s,
        access_log: s.access_log.map(PathBuf::from).or_else(|| {
            std::env::var_os("LOGS_DIRECTORY").map(|d| PathBuf::from(d).join("access.log"))
        }),
        public_base_url,
        trusted_proxies,
        limits,
        proxy,
        proxies,
    })
}

/// The HLS proxy's server-wide settings.
fn proxy_settings(s: &ServerSection) -> Result<super::ProxySettings, Refusal> {
    let d = super::ProxySettings::default();
    let any_url = s.proxy_any_url.unwrap_or(false);
    let mut hosts = Vec::new();
    for host in &s.proxy_hosts {
        let h = host.get_ref().trim().to_ascii_lowercase();
        let bare = h.strip_prefix('.').unwrap_or(&h);
        let valid = h == "*"
            || (!bare.is_empty()
                && url::Host::parse(bare).is_ok()
                && !bare.contains(['/', ':', '@', '*']));
        if !valid {
            return Err(Refusal::at(
                host.span(),
                format!("proxy_hosts: {:?} is not a host name (example.com, .example.com for its subdomains too, or * for every host)", host.get_ref()),
            ));
        }
        hosts.push(h);
    }
    if any_url && hosts.is_empty() {
        let span = s.proxy_hosts.first().map(|h| h.span());
        return Err(Refusal {
            span,
            message: "proxy_any_url = true needs proxy_hosts: the hosts upstream URLs may name (\"*\" for every host)".into(),
        });
    }
    let mut allow_addresses = Vec::new();
    for net in &s.proxy_allow_addresses {
        let text = net.get_ref().trim();
        let parsed: Result<ipnet::IpNet, _> = text
            .parse()
            .or_else(|_| text.parse::<std::net::IpAddr>().map(ipnet::IpNet::from));
        match parsed {
            Ok(n) => allow_addresses.push(n.to_string()),
            Err(_) => {
                return Err(Refusal::at(
                    net.span(),
                    format!("proxy_allow_addresses: {text:?} is not an address or network (10.0.0.0/8, ::1)"),
                ))
            }
        }
    }
    Ok(super::ProxySettings {
        any_url,
        hosts,
        allow_addresses,
        cache_bytes: within(
            s.proxy_cache_bytes.clone(),
            1 << 20..=1 << 40,
            d.cache_bytes,
            "proxy_cache_bytes",
        )?,
        max_object: within(
            s.proxy_max_object.clone(),
            1024..=1 << 34,
            d.max_object,
            "proxy_max_object (bytes)",
        )?,
        timeout_s: within(
            s.proxy_timeout.clone(),
            0.1..=300.0,
            d.timeout_s,
            "proxy_timeout (seconds)",
        )?,
        max_fetches: within(
            s.proxy_max_fetches.clone(),
            1..=100_000,
            d.max_fetches,
            "proxy_max_fetches",
        )?,
        prefetch: within(
            s.proxy_prefetch.clone(),
            0..=16,
            d.prefetch,
            "proxy_prefetch",
        )?,
        access: access_config(s.proxy_access.clone())?,
    })
}

/// A stream's or a proxy's `access`: the token backend viewers are checked with.
fn access_config(
    access: Setting<crate::config::AccessConfig>,
) -> Result<Option<crate::config::AccessConfig>, Refusal> {
    let Some(a) = access else {
        return Ok(None);
    };
    let span = a.span();
    let a = a.into_inner();
    if !(a.url.starts_with("http://") || a.url.starts_with("https://"))
        || reqwest::Url::parse(&a.url).is_err()
    {
        return Err(Refusal::at(
            span,
            format!("access url {:?} is not an http(s):// URL", a.url),
        ));
    }
    if !(0.0..=86_400.0).contains(&a.ttl) || !(0.1..=60.0).contains(&a.timeout) {
        return Err(Refusal::at(
            span,
            "access ttl must be 0 to 86400 seconds and timeout 0.1 to 60",
        ));
    }
    Ok(Some(a))
}

/// One `[[proxy]]`, checked against the ones before it.
fn proxy_entry(
    section: Spanned<ProxySection>,
    before: &[super::ProxyConfig],
) -> Result<super::ProxyConfig, Refusal> {
    let p = section.into_inner();
    let name = p.name.get_ref();
    if !crate::proxy::paths::valid_name(name) {
        return Err(Refusal::at(
            p.name.span(),
            format!("proxy name {name:?} must be letters, digits, - or _ (up to 64, not \"_\")"),
        ));
    }
    if crate::proxy::paths::decode_url(name).is_some() {
        return Err(Refusal::at(
            p.name.span(),
            format!("proxy name {name:?} reads as an upstream URL in base64: choose another"),
        ));
    }
    if before.iter().any(|b| &b.name == name) {
        return Err(Refusal::at(
            p.name.span(),
            format!("proxy {name:?} is defined twice"),
        ));
    }
    let url = match url::Url::parse(p.url.get_ref()) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => u.to_string(),
        _ => {
            return Err(Refusal::at(
                p.url.span(),
                format!("proxy url {:?} must be an http(s):// URL", p.url.get_ref()),
            ))
        }
    };
    if url.len() > crate::proxy::paths::MAX_URL {
        return Err(Refusal::at(p.url.span(), "proxy url is too long"));
    }
    let mut headers = Vec::new();
    if let Some(table) = &p.headers {
        for (header, value) in table.get_ref() {
            let valid = reqwest::header::HeaderName::from_bytes(header.as_bytes()).is_ok()
                && reqwest::header::HeaderValue::from_str(value).is_ok();
            let hop = [
                "host",
                "connection",
                "content-length",
                "transfer-encoding",
                "upgrade",
                "te",
            ]
            .contains(&header.to_ascii_lowercase().as_str());
            if !valid || hop {
                return Err(Refusal::at(
                    table.span(),
                    format!("proxy header {header:?}: {value:?} is not one that can be sent (a valid name and value, not a hop-by-hop header)"),
                ));
            }
            headers.push((header.clone(), value.clone()));
        }
    }
    Ok(super::ProxyConfig {
        name: name.clone(),
        url,
        headers,
        access: access_config(p.access)?,
    })
}

/// An optional setting's value, `default` when absent; out of `range`, refused where it is.
fn within<T: PartialOrd + Copy + std::fmt::Display>(
    value: Setting<T>,
    range: RangeInclusive<T>,
    default: T,
    what: &str,
) -> Result<T, Refusal> {
    match value {
        None => Ok(default),
        Some(v) if range.contains(v.get_ref()) => Ok(v.into_inner()),
        Some(v) => Err(Refusal::at(
            v.span(),
            format!(
                "{what} is {}: it must be {} to {}",
                v.get_ref(),
                range.start(),
                range.end()
            ),
        )),
    }
}

fn cpus(configured: Setting<Vec<usize>>) -> Result<Vec<usize>, Refusal> {
    let available = crate::sys::available_cpus();
    let Some(c) = configured else {
        return Ok(available);
    };
    if c.get_ref().is_empty() {
        return Err(Refusal::at(c.span(), "cpus is empty"));
    }
    if let Some(cpu) = c.get_ref().iter().find(|cpu| !available.contains(cpu)) {
        return Err(Refusal::at(
            c.span(),
            format!("cpu {cpu} is not available to this process (available: {available:?})"),
        ));
    }
    Ok(c.into_inner())
}

/// `[server.tls]`: the listener (default 0.0.0.0:8443) and the certificates, `cert`/`key`
/// first, then `[[server.tls.certificates]]`.
fn tls_settings(
    s: &ServerSection,
    plain: SocketAddr,
) -> Result<(Option<SocketAddr>, Vec<crate::tls::CertFiles>), Refusal> {
    let Some(tls) = &s.tls else {
        return Ok((None, Vec::new()));
    };
    let t = tls.get_ref();
    let listen = match &t.listen {
        None => SocketAddr::from(([0, 0, 0, 0], 8443)),
        Some(l) => l.get_ref().parse().map_err(|_| {
            Refusal::at(
                l.span(),
                format!("tls listen {:?} is not an address:port", l.get_ref()),
            )
        })?,
    };
    if listen.port() != 0 && listen.port() == plain.port() && listen.ip() == plain.ip() {
        return Err(Refusal::at(
            tls.span(),
            format!("tls listen {listen} is the plain listener's address too"),
        ));
    }
    let mut certificates = Vec::new();
    match (&t.cert, &t.key) {
        (Some(cert), Some(key)) => certificates.push(crate::tls::CertFiles {
            cert: PathBuf::from(cert.get_ref()),
            key: PathBuf::from(key.get_ref()),
        }),
        (None, None) => {}
        (Some(c), None) => return Err(Refusal::at(c.span(), "tls cert needs its key")),
        (None, Some(k)) => return Err(Refusal::at(k.span(), "tls key needs its cert")),
    }
    for c in &t.certificates {
        let c = c.get_ref();
        certificates.push(crate::tls::CertFiles {
            cert: PathBuf::from(c.cert.get_ref()),
            key: PathBuf::from(c.key.get_ref()),
        });
    }
    if certificates.is_empty() {
        return Err(Refusal::at(
            tls.span(),
            "[server.tls] needs a certificate: cert and key, or [[server.tls.certificates]]",
        ));
    }
    Ok((Some(listen), certificates))
}

fn api_settings(api: &ApiSection) -> Result<(Option<SocketAddr>, Option<String>), Refusal> {
    let listen = match &api.listen {
        None => Some(SocketAddr::from(([127, 0, 0, 1], 4242))),
        Some(l) if l.get_ref() == "off" => None,
        Some(l) => Some(l.get_ref().parse().map_err(|_| {
            Refusal::at(
                l.span(),
                format!(
                    "api listen {:?} is not an address:port or \"off\"",
                    l.get_ref()
                ),
            )
        })?),
    };
    let token = match &api.token {
        None => None,
        Some(t) if valid_api_token(t.get_ref()) => Some(t.get_ref().clone()),
        Some(t) => {
            return Err(Refusal::at(
                t.span(),
                "api token must be 16 to 256 printable characters without spaces",
            ))
        }
    };
    Ok((listen, token))
}

fn server_limits(s: &ServerSection) -> Result<ServerLimits, Refusal> {
    let d = ServerLimits::default();
    Ok(ServerLimits {
        max_connections_per_address: within(
            s.max_connections_per_address.clone(),
            0..=10_000_000,
            d.max_connections_per_address,
            "max_connections_per_address",
        )?,
        max_queued: within(
            s.max_queued.clone(),
            4096..=1 << 30,
            d.max_queued,
            "max_queued (bytes)",
        )?,
        max_pipelined: within(
            s.max_pipelined.clone(),
            1..=1024,
            d.max_pipelined,
            "max_pipelined",
        )?,
        min_send_rate: within(
            s.min_send_rate.clone(),
            0..=1 << 30,
            d.min_send_rate,
            "min_send_rate (bytes per second)",
        )?,
        max_sessions: within(
            s.max_sessions.clone(),
            1..=10_000_000,
            d.max_sessions,
            "max_sessions",
        )?,
        max_sessions_per_stream: within(
            s.max_sessions_per_stream.clone(),
            1..=10_000_000,
            d.max_sessions_per_stream,
            "max_sessions_per_stream",
        )?,
        max_access_checks: within(
            s.max_access_checks.clone(),
            1..=100_000,
            d.max_access_checks,
            "max_access_checks",
        )?,
        max_access_checks_per_address: within(
            s.max_access_checks_per_address.clone(),
            1..=100_000,
            d.max_access_checks_per_address,
            "max_access_checks_per_address",
        )?,
        max_pushes: within(s.max_pushes.clone(), 1..=10_000, d.max_pushes, "max_pushes")?,
        max_push_outs: within(
            s.max_push_outs.clone(),
            1..=10_000,
            d.max_push_outs,
            "max_push_outs",
        )?,
        wildcard_starts_per_minute: within(
            s.wildcard_starts_per_minute.clone(),
            1..=1_000_000,
            d.wildcard_starts_per_minute,
            "wildcard_starts_per_minute",
        )?,
        access_log_max_bytes: within(
            s.access_log_max_bytes.clone(),
            4096..=1 << 40,
            d.access_log_max_bytes,
            "access_log_max_bytes",
        )?,
        access_log_files: within(
            s.access_log_files.clone(),
            0..=1000,
            d.access_log_files,
            "access_log_files",
        )?,
    })
}

/// One `[[stream]]`, checked against the ones before it.
fn stream(
    section: Spanned<StreamSection>,
    before: &[StreamConfig],
    proxies: &[super::ProxyConfig],
) -> Result<StreamConfig, Refusal> {
    let st = section.into_inner();
    let name = st.name.get_ref();
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_+".contains(c))
    {
        return Err(Refusal::at(
            st.name.span(),
            format!("stream name {name:?} must be letters, digits, - _ or +"),
        ));
    }
    if before.iter().any(|s| &s.name == name) {
        return Err(Refusal::at(
            st.name.span(),
            format!("stream {name:?} is defined twice"),
        ));
    }
    if name == "proxy" || name == "vod" {
        return Err(Refusal::at(
            st.name.span(),
            format!("stream name {name:?} is taken: /{name}/ is the server's own (the HLS proxy, recordings)"),
        ));
    }
    // A template (`$wildcard` in the source) is checked with a stand-in value; its instances
    // are checked again with theirs.
    let urls = st.source.get_ref().urls();
    let (dry, back_after) = failover_times(&st)?;
    if urls.len() > 1 && urls.iter().any(|u| u.contains(WILDCARD)) {
        return Err(Refusal::at(
            st.source.span(),
            "a failover list of sources cannot be a wildcard template ($wildcard)",
        ));
    }
    let stand_in: Vec<String> = urls.iter().map(|u| u.replace(WILDCARD, "1")).collect();
    let source = SourceSpec::parse_list(&stand_in, dry, back_after)
        .map_err(|e| Refusal::at(st.source.span(), e.to_string()))?;
    if let SourceSpec::Failover(list) = &source {
        for (i, (_, a)) in list.sources.iter().enumerate() {
            if list.sources[..i].iter().any(|(_, b)| a.shares_input(b)) {
                return Err(Refusal::at(
                    st.source.span(),
                    format!("stream {name:?}: two sources of its list take the same input"),
                ));
            }
        }
    }
    if let Some(missing) = source
        .proxies()
        .into_iter()
        .find(|name| !proxies.iter().any(|p| p.name == *name))
    {
        return Err(Refusal::at(
            st.source.span(),
            format!("stream {name:?}: proxy://{missing} names no [[proxy]] of this file"),
        ));
    }
    // RTMP streams share one listener per address; a port is RTMP's at one address only, and
    // never a TCP source's.
    let rtmp_port = |s: &StreamConfig| s.source.rtmp_listen().map(|a| a.port());
    if let Some(rtmp) = source.rtmp_listen() {
        if let Some(other) = before.iter().find(|s| {
            s.source.tcp_listen_port() == Some(rtmp.port())
                || s.source
                    .rtmp_listen()
                    .is_some_and(|a| a.port() == rtmp.port() && a != rtmp)
        }) {
            return Err(Refusal::at(
                st.source.span(),
                format!(
                    "stream {name:?} takes RTMP on {rtmp}, and stream {:?} listens on that port otherwise",
                    other.name
                ),
            ));
        }
    }
    // SRT listeners too (one per address, its streams told apart by stream id); their UDP
    // port is no UDP source's.
    if source.srt_listen().is_some() || matches!(source, SourceSpec::Srt(_)) {
        crate::sys::srt::srt()
            .map_err(|e| Refusal::at(st.source.span(), format!("stream {name:?}: {e}")))?;
    }
    if let Some(srt) = source.srt_listen() {
        let udp_port = |s: &StreamConfig| match &s.source {
            SourceSpec::Udp(u) => u.addr.port() == srt.port(),
            _ => false,
        };
        if let Some(other) = before.iter().find(|s| {
            udp_port(s)
                || s.source
                    .srt_listen()
                    .is_some_and(|a| a.port() == srt.port() && a != srt)
        }) {
            return Err(Refusal::at(
                st.source.span(),
                format!(
                    "stream {name:?} takes SRT on {srt}, and stream {:?} takes that UDP port otherwise",
                    other.name
                ),
            ));
        }
    }
    if let SourceSpec::Udp(udp) = &source {
        let port = udp.addr.port();
        if let Some(other) = before
            .iter()
            .find(|s| s.source.srt_listen().is_some_and(|a| a.port() == port))
        {
            return Err(Refusal::at(
                st.source.span(),
                format!(
                    "stream {name:?} takes UDP on port {port}, where stream {:?} takes SRT",
                    other.name
                ),
            ));
        }
    }
    if let Some(port) = source.tcp_listen_port() {
        if let Some(other) = before.iter().find(|s| {
            !s.is_template()
                && (s.source.tcp_listen_port() == Some(port) || rtmp_port(s) == Some(port))
        }) {
            return Err(Refusal::at(
                st.source.span(),
                format!(
                    "stream {name:?} listens on TCP port {port}, as stream {:?} does already",
                    other.name
                ),
            ));
        }
    }
    if name.contains('+') {
        return Err(Refusal::at(
            st.name.span(),
            format!(
                "stream name {name:?}: + separates a wildcard instance from its stream, configure {:?}",
                name.split('+').next().unwrap_or("")
            ),
        ));
    }
    let window_s = within(st.window.clone(), 1.0..=3600.0, 10.0, "window (seconds)")?;
    let mut limits = stream_limits(&st)?;
    let dvr_s = within(st.dvr.clone(), 0.0..=86_400.0, 0.0, "dvr (seconds)")?;
    if dvr_s > 0.0 && st.max_hls_bytes.is_none() {
        // A DVR window's segments are held in memory: a larger default than the live window's.
        limits.max_hls_bytes = limits.max_hls_bytes.max(DVR_HLS_BYTES);
    }
    let defaults = HlsSettings::default();
    let hls = HlsSettings {
        segment_duration_s: within(
            st.segment_duration.clone(),
            0.5..=60.0,
            defaults.segment_duration_s,
            "segment_duration (seconds)",
        )?,
        playlist_segments: within(
            st.playlist_segments.clone(),
            2..=1000,
            defaults.playlist_segments,
            "playlist_segments",
        )?,
        segment_grace_s: within(
            st.segment_grace.clone(),
            0.0..=3600.0,
            defaults.segment_grace_s,
            "segment_grace (seconds)",
        )?,
        dvr_s,
        part_duration_s: None,
        cmaf: st.cmaf.unwrap_or(false),
    };
    let part_span = st.part_duration.as_ref().map(|p| p.span());
    let part = within(
        st.part_duration.clone(),
        0.0..=5.0,
        0.0,
        "part_duration (seconds)",
    )?;
    let hls = match part {
        0.0 => hls,
        p if (0.1..=hls.segment_duration_s / 2.0).contains(&p) => HlsSettings {
            part_duration_s: Some(p),
            ..hls
        },
        p => {
            return Err(Refusal::at(
                part_span.unwrap_or_default(),
                format!(
                    "part_duration is {p}: it must be 0 (no low-latency HLS), or 0.1 seconds to half the segment_duration ({})",
                    hls.segment_duration_s / 2.0
                ),
            ))
        }
    };
    let access = access_config(st.access)?;
    let wildcard = match st.wildcard {
        None => None,
        Some(w) => {
            let span = w.span();
            let rule = wildcard_rule(w.into_inner(), span.clone())?;
            if matches!(source, SourceSpec::Udp(_))
                && !st.source.get_ref().first().contains(WILDCARD)
            {
                return Err(Refusal::at(
                    span,
                    format!("stream {name:?}: a wildcard template with a UDP source needs $wildcard in the source (its instances would share one socket's datagrams)"),
                ));
            }
            if source.tcp_listen_port().is_some() && !st.source.get_ref().first().contains(WILDCARD)
            {
                return Err(Refusal::at(
                    span,
                    format!("stream {name:?}: a wildcard template with a listening TCP source needs $wildcard in the source (its instances would all listen on one port)"),
                ));
            }
            Some(rule)
        }
    };
    let mut push = Vec::with_capacity(st.push.len());
    for target in &st.push {
        // A template's target may have $wildcard: checked as an instance's would be.
        let parsed =
            crate::output::push_target::PushTarget::parse(&target.get_ref().replace(WILDCARD, "1"))
                .map_err(|e| Refusal::at(target.span(), format!("stream {name:?}: {e}")))?;
        if matches!(parsed, crate::output::push_target::PushTarget::Srt(_)) {
            crate::sys::srt::srt()
                .map_err(|e| Refusal::at(target.span(), format!("stream {name:?}: {e}")))?;
        }
        push.push(target.get_ref().clone());
    }
    let record = match st.record {
        None => None,
        Some(r) => {
            let span = r.span();
            let r = r.into_inner();
            r.check()
                .map_err(|e| Refusal::at(span, format!("stream {name:?}: {e}")))?;
            Some(r)
        }
    };
    Ok(StreamConfig {
        name: name.clone(),
        source,
        source_url: st.source.get_ref().first().to_owned(),
        source_urls: st.source.get_ref().clone(),
        window_s,
        hls,
        access,
        limits,
        wildcard,
        required: st.required.unwrap_or(false),
        push,
        record,
    })
}

/// A failover list's `dry` and `back_after` (`None`: never back).
fn failover_times(
    st: &StreamSection,
) -> Result<(std::time::Duration, Option<std::time::Duration>), Refusal> {
    let Some(f) = &st.failover else {
        return Ok((
            std::time::Duration::from_secs(1),
            Some(std::time::Duration::from_secs(10)),
        ));
    };
    let (dry, back) = (
        f.get_ref().dry.unwrap_or(1.0),
        f.get_ref().back_after.unwrap_or(10.0),
    );
    if !(0.1..=60.0).contains(&dry) || !(0.0..=86_400.0).contains(&back) {
        return Err(Refusal::at(
            f.span(),
            "failover dry must be 0.1 to 60 seconds and back_after 0 (never) to 86400",
        ));
    }
    let back_after = (back > 0.0).then(|| std::time::Duration::from_secs_f64(back));
    Ok((std::time::Duration::from_secs_f64(dry), back_after))
}

/// `max_hls_bytes` of a stream with a DVR window, unless set.
const DVR_HLS_BYTES: usize = 1 << 30;

/// `gather`'s default: a millisecond. Against a ring that wakes per event it cut an IPTV
/// host's 100 channels from one wake-up per datagram (about 24,000 a second) to at most one a
/// millisecond, and it adds at most that to any event's handling (bench/RESULTS.md, issue 22).
pub(super) const DEFAULT_GATHER_MS: f64 = 1.0;

/// `ingest_interval`'s default: an unhurried UDP stream (HLS players only, segments of seconds)
/// is read every 100 ms, so that its shard wakes ten times a second for it, not fifty as at 20
/// ms; streams that something waits on byte by byte are read promptly (bench/RESULTS.md,
/// issue 22).
pub(super) const DEFAULT_INGEST_INTERVAL_MS: f64 = 100.0;

fn stream_limits(st: &StreamSection) -> Result<StreamLimits, Refusal> {
    let d = StreamLimits::default();
    let max_segment = within(
        st.max_segment.clone(),
        64 * 1024..=1 << 30,
        d.max_segment,
        "max_segment (bytes)",
    )?;
    let max_hls_bytes = within(
        st.max_hls_bytes.clone(),
        64 * 1024..=1 << 34,
        d.max_hls_bytes.max(max_segment),
        "max_hls_bytes",
    )?;
    Ok(StreamLimits {
        max_buffer: within(
            st.max_buffer.clone(),
            64 * 1024..=1 << 32,
            d.max_buffer,
            "max_buffer (bytes)",
        )?,
        max_segment,
        max_hls_bytes,
        source_timeout_s: within(
            st.source_timeout.clone(),
            1.0..=86_400.0,
            d.source_timeout_s,
            "source_timeout (seconds)",
        )?,
        public_cache: st.public_cache.unwrap_or(d.public_cache),
    })
}

fn wildcard_rule(w: WildcardSection, span: Range<usize>) -> Result<WildcardRule, Refusal> {
    let refuse = |message: String| Refusal::at(span.clone(), message);
    let d = WildcardRule::default();
    let instances = w.instances.unwrap_or(d.instances);
    if !(1..=MAX_WILDCARD_INSTANCES).contains(&instances) {
        return Err(refuse(format!(
            "wildcard instances is {instances}: it must be 1 to {MAX_WILDCARD_INSTANCES}"
        )));
    }
    let ports = match w.ports {
        Some([low, high]) if low == 0 || low > high => {
            return Err(refuse(format!(
                "wildcard ports [{low}, {high}] is not a range of ports"
            )))
        }
        Some([low, high]) => Some((low, high)),
        None => None,
    };
    let pattern = w
        .pattern
        .as_deref()
        .map(WildcardPattern::new)
        .transpose()
        .map_err(|e| refuse(e.to_string()))?;
    Ok(WildcardRule {
        instances,
        ports,
        pattern,
    })
}

/// One `[[trigger]]`.
fn trigger(section: Spanned<TriggerSection>) -> Result<TriggerConfig, Refusal> {
    let t = section.into_inner();
    let name = t.on.get_ref();
    if !TRIGGERS.iter().any(|(n, _)| n == name) {
        return Err(Refusal::at(
            t.on.span(),
            format!("{name:?} is not a trigger shardcast fires (see README: Triggers)"),
        ));
    }
    let handler = t.handler.get_ref();
    let url = handler.contains("://");
    if (url
        && reqwest::Url::parse(handler).map_or(true, |u| !matches!(u.scheme(), "http" | "https")))
        || (!url && !handler.starts_with('/'))
    {
        return Err(Refusal::at(
            t.handler.span(),
            format!("trigger handler {handler:?} must be an http(s):// URL or an absolute path to an executable"),
        ));
    }
    let timeout_s = within(t.timeout, 0.1..=300.0, 5.0, "trigger timeout (seconds)")?;
    Ok(TriggerConfig {
        on: name.clone(),
        handler: handler.clone(),
        streams: t.streams,
        timeout_s,
        default: t.default.unwrap_or_else(|| "true".into()),
    })
}
