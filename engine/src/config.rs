//! Configuration: TOML file or the embedded default (HTTP on 0.0.0.0:8080, a `demo` stream).
//!
//! ```toml
//! [server]
//! listen = "0.0.0.0:8080"
//! cpus = [0, 1]                   # default: every CPU this process may run on
//! io = "auto"                     # auto (io_uring, else epoll with a log line) | io_uring | epoll
//! max_connections_per_shard = 20000
//! header_timeout = 10             # seconds to send a request head
//! idle_timeout = 30               # seconds without progress before a connection is closed
//! max_lag = 4194304               # bytes a viewer may fall behind before it skips
//! flush_interval = 20             # ms new data may wait so viewers get fewer, larger writes
//! send_buffer = 0                 # SO_SNDBUF per viewer in bytes (0: kernel autotuning)
//! segment_send = "auto"           # how HLS segments go out: auto | copy | sendfile | zerocopy
//! state_dir = "/var/lib/shardcast" # default: $STATE_DIRECTORY, /var/lib/shardcast as root,
//!                                  # else ~/.local/state/shardcast
//! session_timeout = 20            # seconds without a request or connection ending a session
//! access_log = "/var/log/shardcast/access.log"  # a JSON line per ended session
//!                                  # default: $LOGS_DIRECTORY/access.log, else none
//! public_base_url = "https://tv.example.com/live/"  # written into stream info and embeds
//! trusted_proxies = ["127.0.0.1", "10.0.0.0/8"]     # X-Forwarded-* believed from these only
//! max_connections_per_address = 4096  # open connections from one address (0: no cap)
//! max_queued = 1048576            # bytes of responses queued before a connection's further
//! max_pipelined = 16              # requests (or this many responses) wait unread
//! min_send_rate = 4096            # bytes/s a backlogged connection must take (0: no minimum)
//! max_sessions = 100000           # viewer sessions a shard tracks; more are refused (503)
//! max_sessions_per_stream = 50000 # of one stream
//! max_access_checks = 64          # access decisions (backend, blocking triggers) at once
//! max_access_checks_per_address = 8  # of one viewer address; past either: 503 Retry-After
//! wildcard_starts_per_minute = 10 # wildcard instances one address may start per minute
//! access_log_max_bytes = 104857600  # the access log is rotated past this size
//! access_log_files = 5            # rotated access logs kept (access.log.1 …)
//!
//! [api]
//! listen = "127.0.0.1:4242"       # the JSON API and /metrics; "off" for none
//! token = "…"                     # bearer token; default: generated once, kept in state_dir
//! metrics_need_token = false      # /metrics without the token (the listener is loopback)
//!
//! [[stream]]
//! name = "cam1"
//! source = "udp://239.1.1.1:5000?source=10.0.0.7&iface=eth1&program=2"
//! window = 10                     # seconds of stream kept for joining viewers
//! segment_duration = 2            # HLS: cut at the first keyframe this many seconds in
//! playlist_segments = 6           # HLS: segments listed in the live playlist
//! segment_grace = 10              # HLS: seconds a segment stays fetchable once unlisted
//! access = { url = "http://127.0.0.1:9000/check", ttl = 60, timeout = 2, on_error = "deny" }
//! public_cache = false            # a gated stream's media may be kept by shared caches
//! max_buffer = 33554432           # bytes held for progressive viewers (oldest dropped first)
//! max_segment = 33554432          # bytes of one HLS segment (larger ones are dropped)
//! max_hls_bytes = 134217728       # bytes of HLS segments held, listed and in grace
//! source_timeout = 30             # seconds without data before progressive viewers are closed
//! wildcard = { instances = 16, ports = [5000, 5999], pattern = "[0-9]+" }  # a template
//!
//! [[trigger]]
//! on = "USER_NEW"                 # MistServer's trigger names (TRIGGERS)
//! handler = "http://127.0.0.1:9000/hook"   # or an absolute path to an executable
//! streams = ["cam1"]              # default: every stream
//! timeout = 5                     # seconds a blocking trigger waits
//! default = "true"                # its answer when the handler fails
//! ```
//!
//! A stream whose source has `$wildcard`, or that has a `wildcard` table, is a template:
//! `name+x` runs an instance of it with `x` there, if `x` is what the table allows.
//! Every refusal names the line and the reason. Applying a configuration to a running server
//! is the control plane's ([`crate::control::store`]).

use crate::hls::{HlsSettings, SegmentSend};
use crate::ingest::SourceSpec;
use crate::stream::StreamLimits;
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::Path;

/// A validated configuration.
#[derive(Clone, Debug)]
pub struct Config {
    /// HTTP listen address.
    pub listen: SocketAddr,
    /// CPUs to run a shard on, one shard each.
    pub cpus: Vec<usize>,
    /// The I/O backend.
    pub io: IoBackend,
    /// Connection cap per shard.
    pub max_connections_per_shard: usize,
    /// Seconds allowed for a request head.
    pub header_timeout_s: f64,
    /// Seconds without progress before a connection is closed.
    pub idle_timeout_s: f64,
    /// Bytes a viewer may fall behind before it skips to the newest keyframe.
    pub max_lag_bytes: usize,
    /// Milliseconds new data may wait before viewers are written to (0: at once).
    pub flush_interval_ms: f64,
    /// SO_SNDBUF for viewer sockets (0: leave it to the kernel's autotuning).
    pub send_buffer: usize,
    /// How sealed HLS segments are sent.
    pub segment_send: SegmentSend,
    /// The streams.
    pub streams: Vec<StreamConfig>,
    /// The public base URL written into what the server hands out (with a trailing slash).
    pub public_base_url: Option<String>,
    /// Peers whose X-Forwarded-* / X-Real-IP / X-Mst-Path headers are believed.
    pub trusted_proxies: Vec<crate::site::Cidr>,
    /// The API and metrics listener; `None`: no API.
    pub api_listen: Option<SocketAddr>,
    /// The API's bearer token; `None`: generated once and kept in the state directory.
    pub api_token: Option<String>,
    /// Whether `/metrics` needs the API token too.
    pub metrics_need_token: bool,
    /// Where state (a generated API token) is kept; `None`: the default (see
    /// [`crate::control::token::state_dir`]).
    pub state_dir: Option<std::path::PathBuf>,
    /// Seconds without a request or an open connection after which a viewer session ends.
    pub session_timeout_s: f64,
    /// Where a JSON line is appended for every session that ends; `None`: no access log.
    pub access_log: Option<std::path::PathBuf>,
    /// Triggers.
    pub triggers: Vec<TriggerConfig>,
    /// Bounds of what outsiders can grow.
    pub limits: ServerLimits,
}

/// The server's bounds on what viewers and sources can make it hold (README: "Limits and
/// protection").
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct ServerLimits {
    /// Connections one address may have open at once (trusted proxies exempt; 0: no cap).
    pub max_connections_per_address: u32,
    /// Bytes of responses a connection may have queued before its further requests wait.
    pub max_queued: usize,
    /// Responses a connection may have queued before its further requests wait.
    pub max_pipelined: usize,
    /// Bytes per second a connection with something queued must take (0: no minimum).
    pub min_send_rate: u64,
    /// Viewer sessions a shard (and the control plane) tracks at once.
    pub max_sessions: usize,
    /// Of one stream.
    pub max_sessions_per_stream: usize,
    /// Access decisions (token backend calls, blocking triggers) in progress at once.
    pub max_access_checks: usize,
    /// Of one viewer address.
    pub max_access_checks_per_address: usize,
    /// Wildcard instances one address may start per minute.
    pub wildcard_starts_per_minute: u32,
    /// The access log is rotated when it would grow past this many bytes.
    pub access_log_max_bytes: u64,
    /// Rotated access logs kept.
    pub access_log_files: usize,
}

impl Default for ServerLimits {
    fn default() -> Self {
        Self {
            max_connections_per_address: 4096,
            max_queued: 1 << 20,
            max_pipelined: 16,
            min_send_rate: 4096,
            max_sessions: 100_000,
            max_sessions_per_stream: 50_000,
            max_access_checks: 64,
            max_access_checks_per_address: 8,
            wildcard_starts_per_minute: 10,
            access_log_max_bytes: 100 << 20,
            access_log_files: 5,
        }
    }
}

/// Wildcard instances running at once, at most, of all templates together (beyond, new ones
/// are refused); each template has its own cap too (`wildcard.instances`).
pub const MAX_WILDCARD_INSTANCES: usize = 10_000;

/// What a wildcard template allows: how many instances, and what a viewer's name may fill
/// into the source.
#[derive(Clone, Debug)]
pub struct WildcardRule {
    /// Instances of the template running at once, at most.
    pub instances: usize,
    /// The wildcard must be a number in this range (for a port).
    pub ports: Option<(u16, u16)>,
    /// The wildcard must match this pattern, whole.
    pub pattern: Option<WildcardPattern>,
}

impl Default for WildcardRule {
    fn default() -> Self {
        Self {
            instances: 16,
            ports: None,
            pattern: None,
        }
    }
}

impl PartialEq for WildcardRule {
    fn eq(&self, other: &Self) -> bool {
        self.instances == other.instances
            && self.ports == other.ports
            && self.pattern.as_ref().map(WildcardPattern::as_str)
                == other.pattern.as_ref().map(WildcardPattern::as_str)
    }
}

/// A compiled wildcard pattern (anchored at both ends).
#[derive(Clone, Debug)]
pub struct WildcardPattern {
    text: String,
    regex: regex::Regex,
}

impl WildcardPattern {
    /// Compile `text`, which must match a whole wildcard.
    pub fn new(text: &str) -> Result<Self, String> {
        let regex = regex::RegexBuilder::new(&format!("^(?:{text})$"))
            .size_limit(1 << 16)
            .build()
            .map_err(|e| format!("wildcard pattern {text:?}: {e}"))?;
        Ok(Self {
            text: text.to_owned(),
            regex,
        })
    }

    /// The pattern as configured.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Whether `wildcard` matches.
    pub fn matches(&self, wildcard: &str) -> bool {
        self.regex.is_match(wildcard)
    }
}

/// Which I/O backend the shards run on.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum IoBackend {
    /// io_uring when the kernel allows it, epoll otherwise (saying why in one log line).
    #[default]
    Auto,
    /// io_uring or refuse to start.
    IoUring,
    /// epoll.
    Epoll,
}

impl std::str::FromStr for IoBackend {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(Self::Auto),
            "io_uring" => Ok(Self::IoUring),
            "epoll" => Ok(Self::Epoll),
            _ => Err(format!(
                "{s:?} is not an io backend (auto, io_uring, epoll)"
            )),
        }
    }
}

/// One configured stream.
#[derive(Clone, Debug, PartialEq)]
pub struct StreamConfig {
    /// The name in URLs (`/{name}.ts`).
    pub name: String,
    /// Where it comes from.
    pub source: SourceSpec,
    /// The source as configured (a URL).
    pub source_url: String,
    /// Seconds kept for joining viewers.
    pub window_s: f64,
    /// HLS segmenting and playlist settings.
    pub hls: HlsSettings,
    /// Token access control: who may watch is asked of this backend.
    pub access: Option<AccessConfig>,
    /// Bounds of its buffers.
    pub limits: StreamLimits,
    /// What its wildcard instances may be, when it is a template with a `wildcard` table.
    pub wildcard: Option<WildcardRule>,
}

/// A stream's viewer access control (as Flashphoner WCS does it): the viewer's token and
/// session facts are POSTed as JSON to `url`; 200 allows (the headers it returns are added to
/// the viewer's responses), 403 denies (the viewer gets 401).
#[derive(Clone, Debug, PartialEq, serde::Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccessConfig {
    /// The backend, http:// or https://.
    pub url: String,
    /// Seconds a decision is kept for the session.
    #[serde(default = "default_access_ttl")]
    pub ttl: f64,
    /// Seconds to wait for the backend.
    #[serde(default = "default_access_timeout")]
    pub timeout: f64,
    /// When the backend cannot be asked (down, slow, an unexpected answer): `deny` (the
    /// viewer gets 503) or `allow`.
    #[serde(default)]
    pub on_error: OnError,
}

/// What an unanswered access check or blocking trigger decides.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, serde::Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnError {
    /// Refuse (fail closed).
    #[default]
    Deny,
    /// Let the viewer in (fail open).
    Allow,
}

fn default_access_ttl() -> f64 {
    60.0
}
fn default_access_timeout() -> f64 {
    2.0
}

/// One trigger: MistServer's name, a handler (a URL POSTed to, or an executable run with the
/// trigger name as its argument and the payload on stdin), the streams it applies to.
#[derive(Clone, Debug, PartialEq)]
pub struct TriggerConfig {
    /// The trigger's name (`USER_NEW`, `STREAM_BUFFER`, …).
    pub on: String,
    /// `http(s)://…` or an absolute path.
    pub handler: String,
    /// Only these streams (empty: all).
    pub streams: Vec<String>,
    /// Seconds a blocking trigger waits for its answer.
    pub timeout_s: f64,
    /// The answer a blocking trigger takes when its handler fails or is too slow.
    pub default: String,
}

/// Triggers shardcast fires, with MistServer's names: the blocking ones wait for an answer.
pub const TRIGGERS: [(&str, bool); 21] = [
    ("USER_NEW", true),
    ("CONN_PLAY", true),
    ("STREAM_SOURCE", true),
    ("PUSH_REWRITE", true),
    ("DEFAULT_STREAM", true),
    ("PLAY_REWRITE", true),
    ("STREAM_ADD", true),
    ("STREAM_CONFIG", true),
    ("STREAM_REMOVE", true),
    ("STREAM_BUFFER", false),
    ("STREAM_READY", false),
    ("STREAM_END", false),
    ("CONN_OPEN", false),
    ("CONN_CLOSE", false),
    ("USER_END", false),
    ("INPUT_ABORT", false),
    ("LIVE_TRACK_LIST", false),
    ("SYSTEM_START", false),
    ("SYSTEM_STOP", false),
    ("STREAM_UNLOAD", false),
    ("OUTPUT_END", false),
];

/// In a source URL, replaced by the part after `+` of a wildcard instance's name.
pub const WILDCARD: &str = "$wildcard";

impl StreamConfig {
    /// Whether it is a template (`$wildcard` in the source, or a `wildcard` table): only its
    /// instances receive.
    pub fn is_template(&self) -> bool {
        self.source_url.contains(WILDCARD) || self.wildcard.is_some()
    }

    /// What its wildcard instances may be (the defaults when it has no `wildcard` table).
    pub fn wildcard_rule(&self) -> WildcardRule {
        self.wildcard.clone().unwrap_or_default()
    }

    /// The configuration of wildcard instance `base+wildcard` of this template: the same
    /// settings, `$wildcard` in the source replaced. Refused when this is not a template or
    /// the wildcard is not one it allows.
    pub fn instance(&self, wildcard: &str) -> Result<StreamConfig, String> {
        if !self.is_template() {
            return Err(format!(
                "{} is not a wildcard template (no $wildcard in its source, no wildcard table)",
                self.name
            ));
        }
        if wildcard.is_empty()
            || wildcard.len() > 64
            || !wildcard
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        {
            return Err(format!(
                "{wildcard:?} is not a wildcard (letters, digits, - _ .)"
            ));
        }
        let rule = self.wildcard_rule();
        if let Some((low, high)) = rule.ports {
            let port = wildcard
                .parse::<u16>()
                .ok()
                .filter(|p| (low..=high).contains(p) && wildcard.len() <= 5);
            if port.is_none() {
                return Err(format!("{wildcard:?} is not a port from {low} to {high}"));
            }
        }
        if let Some(pattern) = &rule.pattern {
            if !pattern.matches(wildcard) {
                return Err(format!(
                    "{wildcard:?} does not match the pattern {:?}",
                    pattern.as_str()
                ));
            }
        }
        let source_url = self.source_url.replace(WILDCARD, wildcard);
        let source = SourceSpec::parse(&source_url).map_err(|e| e.to_string())?;
        Ok(StreamConfig {
            name: format!("{}+{wildcard}", self.name),
            source,
            source_url,
            wildcard: None,
            ..self.clone()
        })
    }
}

/// An API token is 16 to 256 visible ASCII characters.
pub fn valid_api_token(token: &str) -> bool {
    (16..=256).contains(&token.len()) && token.bytes().all(|b| b.is_ascii_graphic())
}

/// The embedded default configuration's text: every setting at its default, one demo stream.
pub const EMBEDDED: &str = "[[stream]]\nname = \"demo\"\nsource = \"demo:\"\n";

/// Where the running configuration comes from: a file (or the embedded default) with the
/// command line's overrides on top. SIGHUP loads it again the same way.
#[derive(Clone, Debug, Default)]
pub struct ConfigSource {
    /// The file; `None` runs the embedded default.
    pub path: Option<std::path::PathBuf>,
    /// `--listen`.
    pub listen: Option<SocketAddr>,
    /// `--io`.
    pub io: Option<IoBackend>,
    /// `--api-listen` (`Some(None)`: `off`).
    pub api_listen: Option<Option<SocketAddr>>,
    /// `--state-dir`.
    pub state_dir: Option<std::path::PathBuf>,
}

impl ConfigSource {
    /// Load (or load again) the configuration.
    pub fn load(&self) -> Result<Config, String> {
        let mut config = match &self.path {
            Some(path) => Config::load(path)
                .map_err(|e| format!("configuration {} refused ({e})", path.display()))?,
            None => Config::embedded(),
        };
        self.override_settings(&mut config);
        Ok(config)
    }

    /// Put the command line's settings over `config`'s.
    pub fn override_settings(&self, config: &mut Config) {
        if let Some(listen) = self.listen {
            config.listen = listen;
        }
        if let Some(io) = self.io {
            config.io = io;
        }
        if let Some(api) = self.api_listen {
            config.api_listen = api;
        }
        if let Some(dir) = &self.state_dir {
            config.state_dir = Some(dir.clone());
        }
    }
}

/// A refused configuration.
#[derive(Debug, thiserror::Error)]
#[error("{}{message}", line.map(|l| format!("line {l}: ")).unwrap_or_default())]
pub struct ConfigError {
    /// The line of the file the error is on, when known.
    pub line: Option<usize>,
    /// The reason.
    pub message: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    server: ServerSection,
    #[serde(default, rename = "stream")]
    streams: Vec<toml::Spanned<StreamSection>>,
    #[serde(default)]
    api: ApiSection,
    #[serde(default, rename = "trigger")]
    triggers: Vec<toml::Spanned<TriggerSection>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TriggerSection {
    on: toml::Spanned<String>,
    handler: toml::Spanned<String>,
    #[serde(default)]
    streams: Vec<String>,
    #[serde(default = "default_trigger_timeout")]
    timeout: f64,
    #[serde(default = "default_trigger_default")]
    default: String,
}

fn default_trigger_timeout() -> f64 {
    5.0
}
fn default_trigger_default() -> String {
    "true".into()
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct ApiSection {
    listen: Option<toml::Spanned<String>>,
    token: Option<toml::Spanned<String>>,
    #[serde(default)]
    metrics_need_token: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ServerSection {
    #[serde(default = "default_listen")]
    listen: toml::Spanned<String>,
    cpus: Option<toml::Spanned<Vec<usize>>>,
    #[serde(default)]
    io: IoBackend,
    #[serde(default = "default_max_connections")]
    max_connections_per_shard: usize,
    #[serde(default = "default_header_timeout")]
    header_timeout: f64,
    #[serde(default = "default_idle_timeout")]
    idle_timeout: f64,
    #[serde(default = "default_max_lag")]
    max_lag: usize,
    #[serde(default = "default_flush_interval")]
    flush_interval: f64,
    #[serde(default)]
    send_buffer: usize,
    #[serde(default)]
    segment_send: SegmentSend,
    state_dir: Option<String>,
    #[serde(default = "default_session_timeout")]
    session_timeout: f64,
    access_log: Option<String>,
    public_base_url: Option<toml::Spanned<String>>,
    #[serde(default)]
    trusted_proxies: Vec<toml::Spanned<String>>,
    max_connections_per_address: Option<toml::Spanned<u32>>,
    max_queued: Option<toml::Spanned<usize>>,
    max_pipelined: Option<toml::Spanned<usize>>,
    min_send_rate: Option<toml::Spanned<u64>>,
    max_sessions: Option<toml::Spanned<usize>>,
    max_sessions_per_stream: Option<toml::Spanned<usize>>,
    max_access_checks: Option<toml::Spanned<usize>>,
    max_access_checks_per_address: Option<toml::Spanned<usize>>,
    wildcard_starts_per_minute: Option<toml::Spanned<u32>>,
    access_log_max_bytes: Option<toml::Spanned<u64>>,
    access_log_files: Option<toml::Spanned<usize>>,
}

impl Default for ServerSection {
    fn default() -> Self {
        Self {
            listen: default_listen(),
            cpus: None,
            io: IoBackend::Auto,
            max_connections_per_shard: default_max_connections(),
            header_timeout: default_header_timeout(),
            idle_timeout: default_idle_timeout(),
            max_lag: default_max_lag(),
            flush_interval: default_flush_interval(),
            send_buffer: 0,
            segment_send: SegmentSend::Auto,
            state_dir: None,
            session_timeout: default_session_timeout(),
            access_log: None,
            public_base_url: None,
            trusted_proxies: Vec::new(),
            max_connections_per_address: None,
            max_queued: None,
            max_pipelined: None,
            min_send_rate: None,
            max_sessions: None,
            max_sessions_per_stream: None,
            max_access_checks: None,
            max_access_checks_per_address: None,
            wildcard_starts_per_minute: None,
            access_log_max_bytes: None,
            access_log_files: None,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StreamSection {
    name: toml::Spanned<String>,
    source: toml::Spanned<String>,
    #[serde(default = "default_window")]
    window: f64,
    segment_duration: Option<toml::Spanned<f64>>,
    playlist_segments: Option<toml::Spanned<usize>>,
    segment_grace: Option<toml::Spanned<f64>>,
    access: Option<toml::Spanned<AccessConfig>>,
    public_cache: Option<bool>,
    max_buffer: Option<toml::Spanned<usize>>,
    max_segment: Option<toml::Spanned<usize>>,
    max_hls_bytes: Option<toml::Spanned<usize>>,
    source_timeout: Option<toml::Spanned<f64>>,
    wildcard: Option<toml::Spanned<WildcardSection>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WildcardSection {
    instances: Option<usize>,
    ports: Option<[u16; 2]>,
    pattern: Option<String>,
}

/// An optional setting's value, `default` when absent; out of `range`, the span and reason.
fn within<T: PartialOrd + Copy + std::fmt::Display>(
    value: Option<toml::Spanned<T>>,
    range: std::ops::RangeInclusive<T>,
    default: T,
    what: &str,
) -> Result<T, (std::ops::Range<usize>, String)> {
    match value {
        None => Ok(default),
        Some(v) if range.contains(v.get_ref()) => Ok(v.into_inner()),
        Some(v) => Err((
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

fn default_listen() -> toml::Spanned<String> {
    toml::Spanned::new(0..0, "0.0.0.0:8080".to_owned())
}
fn default_max_connections() -> usize {
    20_000
}
fn default_header_timeout() -> f64 {
    10.0
}
fn default_idle_timeout() -> f64 {
    30.0
}
fn default_max_lag() -> usize {
    4 << 20
}
fn default_flush_interval() -> f64 {
    20.0
}
fn default_session_timeout() -> f64 {
    20.0
}
fn default_window() -> f64 {
    10.0
}

impl Config {
    /// What differs between this configuration and `other`: the server settings by name,
    /// and the streams added, removed or changed.
    pub fn differences(&self, other: &Config) -> Vec<String> {
        let mut out = Vec::new();
        let mut server = |name: &str, same: bool| {
            if !same {
                out.push(format!("server.{name}"));
            }
        };
        server("listen", self.listen == other.listen);
        server("cpus", self.cpus == other.cpus);
        server("io", self.io == other.io);
        server(
            "max_connections_per_shard",
            self.max_connections_per_shard == other.max_connections_per_shard,
        );
        server(
            "header_timeout",
            self.header_timeout_s == other.header_timeout_s,
        );
        server("idle_timeout", self.idle_timeout_s == other.idle_timeout_s);
        server("max_lag", self.max_lag_bytes == other.max_lag_bytes);
        server(
            "flush_interval",
            self.flush_interval_ms == other.flush_interval_ms,
        );
        server("send_buffer", self.send_buffer == other.send_buffer);
        server("segment_send", self.segment_send == other.segment_send);
        server("state_dir", self.state_dir == other.state_dir);
        server(
            "session_timeout",
            self.session_timeout_s == other.session_timeout_s,
        );
        server("access_log", self.access_log == other.access_log);
        server(
            "public_base_url",
            self.public_base_url == other.public_base_url,
        );
        server(
            "trusted_proxies",
            self.trusted_proxies == other.trusted_proxies,
        );
        // Every bound by its name, read from the settings themselves: a new one cannot be
        // left out.
        if let (Ok(serde_json::Value::Object(a)), Ok(serde_json::Value::Object(b))) = (
            serde_json::to_value(&self.limits),
            serde_json::to_value(&other.limits),
        ) {
            for (name, value) in &a {
                server(name, b.get(name) == Some(value));
            }
        }
        if self.api_listen != other.api_listen {
            out.push("api.listen".into());
        }
        if self.api_token != other.api_token {
            out.push("api.token".into());
        }
        if self.triggers != other.triggers {
            out.push("triggers".into());
        }
        if self.metrics_need_token != other.metrics_need_token {
            out.push("api.metrics_need_token".into());
        }
        for s in &self.streams {
            match other.streams.iter().find(|o| o.name == s.name) {
                None => out.push(format!("stream {} removed", s.name)),
                Some(o) if o != s => out.push(format!("stream {} changed", s.name)),
                Some(_) => {}
            }
        }
        for o in &other.streams {
            if !self.streams.iter().any(|s| s.name == o.name) {
                out.push(format!("stream {} added", o.name));
            }
        }
        out
    }

    /// The embedded default: HTTP on 0.0.0.0:8080, every CPU, one `demo` stream.
    pub fn embedded() -> Config {
        Self::parse(EMBEDDED)
            .unwrap_or_else(|e| unreachable!("the embedded configuration is valid: {e}"))
    }

    /// Read and validate a file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            line: None,
            message: format!("cannot read {}: {e}", path.display()),
        })?;
        Self::parse(&text)
    }

    /// Validate the text of a config file.
    pub fn parse(text: &str) -> Result<Config, ConfigError> {
        let line_of =
            |offset: usize| Some(text[..offset.min(text.len())].matches('\n').count() + 1);
        let file: File = toml::from_str(text).map_err(|e| ConfigError {
            line: e.span().map(|s| s.start).and_then(line_of),
            message: e.message().to_owned(),
        })?;
        let s = file.server;
        let bad = |span: std::ops::Range<usize>, message: String| ConfigError {
            line: line_of(span.start),
            message,
        };
        let limits = server_limits(&s).map_err(|(span, m)| bad(span, m))?;
        let listen = s.listen.get_ref().parse().map_err(|_| {
            bad(
                s.listen.span(),
                format!("listen {:?} is not an address:port", s.listen.get_ref()),
            )
        })?;
        let available = crate::sys::available_cpus();
        let cpus = match s.cpus {
            None => available.clone(),
            Some(c) => {
                if c.get_ref().is_empty() {
                    return Err(bad(c.span(), "cpus is empty".into()));
                }
                if let Some(cpu) = c.get_ref().iter().find(|cpu| !available.contains(cpu)) {
                    return Err(bad(
                        c.span(),
                        format!(
                            "cpu {cpu} is not available to this process (available: {available:?})"
                        ),
                    ));
                }
                c.into_inner()
            }
        };
        if s.max_connections_per_shard == 0 {
            return Err(ConfigError {
                line: None,
                message: "max_connections_per_shard must be at least 1".into(),
            });
        }
        for (name, v) in [
            ("header_timeout", s.header_timeout),
            ("idle_timeout", s.idle_timeout),
        ] {
            if !(v > 0.0 && v <= 3600.0) {
                return Err(ConfigError {
                    line: None,
                    message: format!("{name} must be between 0 and 3600 seconds"),
                });
            }
        }
        if !(1.0..=3600.0).contains(&s.session_timeout) {
            return Err(ConfigError {
                line: None,
                message: format!(
                    "session_timeout is {}: it must be 1 to 3600 seconds",
                    s.session_timeout
                ),
            });
        }
        if !(0.0..=1000.0).contains(&s.flush_interval) {
            return Err(ConfigError {
                line: None,
                message: "flush_interval must be 0 to 1000 ms".into(),
            });
        }
        let api_listen = match &file.api.listen {
            None => Some(SocketAddr::from(([127, 0, 0, 1], 4242))),
            Some(l) if l.get_ref() == "off" => None,
            Some(l) => Some(l.get_ref().parse().map_err(|_| {
                bad(
                    l.span(),
                    format!(
                        "api listen {:?} is not an address:port or \"off\"",
                        l.get_ref()
                    ),
                )
            })?),
        };
        let api_token = match file.api.token {
            None => None,
            Some(t) if valid_api_token(t.get_ref()) => Some(t.into_inner()),
            Some(t) => {
                return Err(bad(
                    t.span(),
                    "api token must be 16 to 256 printable characters without spaces".into(),
                ))
            }
        };
        let public_base_url = match &s.public_base_url {
            None => None,
            Some(u) => {
                Some(crate::site::parse_public_base(u.get_ref()).map_err(|e| bad(u.span(), e))?)
            }
        };
        let trusted_proxies = s
            .trusted_proxies
            .iter()
            .map(|t| {
                crate::site::Cidr::parse(t.get_ref())
                    .map_err(|e| bad(t.span(), format!("trusted_proxies: {e}")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let mut streams: Vec<StreamConfig> = Vec::new();
        for spanned in file.streams {
            let span = spanned.span();
            let st = spanned.into_inner();
            let name = st.name.get_ref();
            if name.is_empty()
                || !name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_+".contains(c))
            {
                return Err(bad(
                    st.name.span(),
                    format!("stream name {name:?} must be letters, digits, - _ or +"),
                ));
            }
            if streams.iter().any(|s| &s.name == name) {
                return Err(bad(
                    st.name.span(),
                    format!("stream {name:?} is defined twice"),
                ));
            }
            // A template (`$wildcard` in the source) is checked with a stand-in value; its
            // instances are checked again with theirs.
            let source = SourceSpec::parse(&st.source.get_ref().replace(WILDCARD, "1"))
                .map_err(|e| bad(st.source.span(), e.to_string()))?;
            if name.contains('+') {
                return Err(bad(
                    st.name.span(),
                    format!("stream name {name:?}: + separates a wildcard instance from its stream, configure {:?}", name.split('+').next().unwrap_or("")),
                ));
            }
            if !(st.window >= 1.0 && st.window <= 3600.0) {
                return Err(bad(
                    span,
                    format!("window {} must be 1 to 3600 seconds", st.window),
                ));
            }
            let stream_limits = stream_limits(&st).map_err(|(span, m)| bad(span, m))?;
            let defaults = HlsSettings::default();
            let hls = HlsSettings {
                segment_duration_s: within(
                    st.segment_duration,
                    0.5..=60.0,
                    defaults.segment_duration_s,
                    "segment_duration (seconds)",
                )
                .map_err(|(span, m)| bad(span, m))?,
                playlist_segments: within(
                    st.playlist_segments,
                    2..=1000,
                    defaults.playlist_segments,
                    "playlist_segments",
                )
                .map_err(|(span, m)| bad(span, m))?,
                segment_grace_s: within(
                    st.segment_grace,
                    0.0..=3600.0,
                    defaults.segment_grace_s,
                    "segment_grace (seconds)",
                )
                .map_err(|(span, m)| bad(span, m))?,
            };
            let access = match st.access {
                None => None,
                Some(a) => {
                    let span = a.span();
                    let a = a.into_inner();
                    if !(a.url.starts_with("http://") || a.url.starts_with("https://"))
                        || reqwest::Url::parse(&a.url).is_err()
                    {
                        return Err(bad(
                            span,
                            format!("access url {:?} is not an http(s):// URL", a.url),
                        ));
                    }
                    if !(0.0..=86_400.0).contains(&a.ttl) || !(0.1..=60.0).contains(&a.timeout) {
                        return Err(bad(
                            span,
                            "access ttl must be 0 to 86400 seconds and timeout 0.1 to 60".into(),
                        ));
                    }
                    Some(a)
                }
            };
            let wildcard = match st.wildcard {
                None => None,
                Some(w) => {
                    let span = w.span();
                    let rule = wildcard_rule(w.into_inner()).map_err(|m| bad(span.clone(), m))?;
                    if matches!(source, SourceSpec::Udp(_))
                        && !st.source.get_ref().contains(WILDCARD)
                    {
                        return Err(bad(span, format!("stream {name:?}: a wildcard template with a UDP source needs $wildcard in the source (its instances would share one socket's datagrams)")));
                    }
                    Some(rule)
                }
            };
            streams.push(StreamConfig {
                name: name.clone(),
                source,
                source_url: st.source.get_ref().clone(),
                window_s: st.window,
                hls,
                access,
                limits: stream_limits,
                wildcard,
            });
        }
        let mut triggers = Vec::new();
        for t in file.triggers {
            let t = t.into_inner();
            let name = t.on.get_ref();
            if !TRIGGERS.iter().any(|(n, _)| n == name) {
                return Err(bad(
                    t.on.span(),
                    format!("{name:?} is not a trigger shardcast fires (see README: Triggers)"),
                ));
            }
            let handler = t.handler.get_ref();
            let url = handler.contains("://");
            if (url
                && reqwest::Url::parse(handler)
                    .map_or(true, |u| !matches!(u.scheme(), "http" | "https")))
                || (!url && !handler.starts_with('/'))
            {
                return Err(bad(
                    t.handler.span(),
                    format!("trigger handler {handler:?} must be an http(s):// URL or an absolute path to an executable"),
                ));
            }
            if !(0.1..=300.0).contains(&t.timeout) {
                return Err(bad(
                    t.on.span(),
                    format!("trigger timeout {} must be 0.1 to 300 seconds", t.timeout),
                ));
            }
            triggers.push(TriggerConfig {
                on: name.clone(),
                handler: handler.clone(),
                streams: t.streams,
                timeout_s: t.timeout,
                default: t.default,
            });
        }
        Ok(Config {
            triggers,
            listen,
            cpus,
            io: s.io,
            max_connections_per_shard: s.max_connections_per_shard,
            header_timeout_s: s.header_timeout,
            idle_timeout_s: s.idle_timeout,
            max_lag_bytes: s.max_lag,
            flush_interval_ms: s.flush_interval,
            send_buffer: s.send_buffer,
            segment_send: s.segment_send,
            streams,
            api_listen,
            api_token,
            metrics_need_token: file.api.metrics_need_token,
            state_dir: s.state_dir.map(std::path::PathBuf::from),
            session_timeout_s: s.session_timeout,
            access_log: s.access_log.map(std::path::PathBuf::from).or_else(|| {
                std::env::var_os("LOGS_DIRECTORY")
                    .map(|d| std::path::PathBuf::from(d).join("access.log"))
            }),
            public_base_url,
            trusted_proxies,
            limits,
        })
    }
}

type Refusal = (std::ops::Range<usize>, String);

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

fn wildcard_rule(w: WildcardSection) -> Result<WildcardRule, String> {
    let d = WildcardRule::default();
    let instances = w.instances.unwrap_or(d.instances);
    if !(1..=MAX_WILDCARD_INSTANCES).contains(&instances) {
        return Err(format!(
            "wildcard instances is {instances}: it must be 1 to {}",
            MAX_WILDCARD_INSTANCES
        ));
    }
    let ports = match w.ports {
        Some([low, high]) if low == 0 || low > high => {
            return Err(format!(
                "wildcard ports [{low}, {high}] is not a range of ports"
            ))
        }
        Some([low, high]) => Some((low, high)),
        None => None,
    };
    let pattern = w.pattern.as_deref().map(WildcardPattern::new).transpose()?;
    Ok(WildcardRule {
        instances,
        ports,
        pattern,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_embedded_default_serves_the_demo() {
        let c = Config::embedded();
        assert_eq!(c.listen, "0.0.0.0:8080".parse().unwrap());
        assert_eq!(c.streams.len(), 1);
        assert_eq!(c.streams[0].source, SourceSpec::Demo);
        assert!(!c.cpus.is_empty());
    }

    #[test]
    fn errors_name_the_line_and_the_reason() {
        let e = Config::parse("[server]\nlisten = \"0.0.0.0:8080\"\n\n[[stream]]\nname = \"a\"\nsource = \"rtmp://x\"\n").unwrap_err();
        assert_eq!(e.line, Some(6), "{e}");
        assert!(e.to_string().contains("unsupported source scheme"), "{e}");
        let e = Config::parse("[server]\nlisten = 8080\n").unwrap_err();
        assert_eq!(e.line, Some(2), "{e}");
        let e = Config::parse("[server]\nlisten = \"nowhere\"\n").unwrap_err();
        assert_eq!(e.line, Some(2), "{e}");
        let e = Config::parse("[sever]\n").unwrap_err();
        assert_eq!(e.line, Some(1), "{e}");
        let e = Config::parse("[[stream]]\nname = \"a\"\nsource = \"demo:\"\n[[stream]]\nname = \"a\"\nsource = \"demo:\"\n").unwrap_err();
        assert_eq!(e.line, Some(5), "{e}");
        let e =
            Config::parse("[[stream]]\nname = \"a\"\nsource = \"demo:\"\nsegment_duration = 0.1\n")
                .unwrap_err();
        assert_eq!(e.line, Some(4), "{e}");
        let e = Config::parse("[server]\nsegment_send = \"mmap\"\n").unwrap_err();
        assert_eq!(e.line, Some(2), "{e}");
        let e = Config::parse("[server]\ncpus = [999]\n").unwrap_err();
        assert!(e.to_string().contains("not available"), "{e}");
    }
}
