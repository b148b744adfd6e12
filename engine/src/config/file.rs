//! The configuration file's schema: what the TOML may say, and where each value is in the text
//! (for the line of a refusal). Unknown keys are refused here; whether a value is allowed, and
//! what an absent one means, is decided in [`super::validate`].

use super::{AccessConfig, IoBackend};
use crate::hls::SegmentSend;
use serde::Deserialize;
use toml::Spanned;

/// An optional setting and its place in the text.
pub(super) type Setting<T> = Option<Spanned<T>>;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct File {
    #[serde(default)]
    pub server: ServerSection,
    #[serde(default, rename = "stream")]
    pub streams: Vec<Spanned<StreamSection>>,
    #[serde(default)]
    pub api: ApiSection,
    #[serde(default, rename = "trigger")]
    pub triggers: Vec<Spanned<TriggerSection>>,
    #[serde(default, rename = "proxy")]
    pub proxies: Vec<Spanned<ProxySection>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct ServerSection {
    pub listen: Setting<String>,
    pub cpus: Setting<Vec<usize>>,
    pub io: Option<IoBackend>,
    pub max_connections_per_shard: Setting<usize>,
    pub header_timeout: Setting<f64>,
    pub idle_timeout: Setting<f64>,
    pub max_lag: Setting<usize>,
    pub flush_interval: Setting<f64>,
    pub gather: Setting<f64>,
    pub ingest_interval: Setting<f64>,
    pub send_buffer: Setting<usize>,
    pub segment_send: Option<SegmentSend>,
    pub state_dir: Option<String>,
    pub session_timeout: Setting<f64>,
    pub access_log: Option<String>,
    pub public_base_url: Setting<String>,
    #[serde(default)]
    pub trusted_proxies: Vec<Spanned<String>>,
    pub max_connections_per_address: Setting<u32>,
    pub max_queued: Setting<usize>,
    pub max_pipelined: Setting<usize>,
    pub min_send_rate: Setting<u64>,
    pub max_sessions: Setting<usize>,
    pub max_sessions_per_stream: Setting<usize>,
    pub max_access_checks: Setting<usize>,
    pub max_access_checks_per_address: Setting<usize>,
    pub wildcard_starts_per_minute: Setting<u32>,
    pub max_pushes: Setting<usize>,
    pub max_push_outs: Setting<usize>,
    pub tls: Setting<TlsSection>,
    pub access_log_max_bytes: Setting<u64>,
    pub access_log_files: Setting<usize>,
    pub proxy_any_url: Option<bool>,
    #[serde(default)]
    pub proxy_hosts: Vec<Spanned<String>>,
    #[serde(default)]
    pub proxy_allow_addresses: Vec<Spanned<String>>,
    pub proxy_cache_bytes: Setting<usize>,
    pub proxy_max_object: Setting<usize>,
    pub proxy_timeout: Setting<f64>,
    pub proxy_max_fetches: Setting<usize>,
    pub proxy_prefetch: Setting<usize>,
    pub proxy_access: Setting<AccessConfig>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct ApiSection {
    pub listen: Setting<String>,
    pub token: Setting<String>,
    #[serde(default)]
    pub metrics_need_token: bool,
    pub tls: Setting<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct StreamSection {
    pub name: Spanned<String>,
    pub source: Spanned<super::SourceUrls>,
    pub failover: Setting<FailoverSection>,
    pub window: Setting<f64>,
    pub segment_duration: Setting<f64>,
    pub playlist_segments: Setting<usize>,
    pub segment_grace: Setting<f64>,
    pub dvr: Setting<f64>,
    pub part_duration: Setting<f64>,
    pub cmaf: Option<bool>,
    pub access: Setting<AccessConfig>,
    pub public_cache: Option<bool>,
    pub max_buffer: Setting<usize>,
    pub max_segment: Setting<usize>,
    pub max_hls_bytes: Setting<usize>,
    pub source_timeout: Setting<f64>,
    pub wildcard: Setting<WildcardSection>,
    pub required: Option<bool>,
    #[serde(default)]
    pub push: Vec<Spanned<String>>,
    pub record: Setting<super::RecordConfig>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct TlsSection {
    pub listen: Setting<String>,
    pub cert: Setting<String>,
    pub key: Setting<String>,
    #[serde(default)]
    pub certificates: Vec<Spanned<CertSection>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct CertSection {
    pub cert: Spanned<String>,
    pub key: Spanned<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FailoverSection {
    pub dry: Option<f64>,
    pub back_after: Option<f64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct WildcardSection {
    pub instances: Option<usize>,
    pub ports: Option<[u16; 2]>,
    pub pattern: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct TriggerSection {
    pub on: Spanned<String>,
    pub handler: Spanned<String>,
    #[serde(default)]
    pub streams: Vec<String>,
    pub timeout: Setting<f64>,
    pub default: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ProxySection {
    pub name: Spanned<String>,
    pub url: Spanned<String>,
    pub headers: Setting<std::collections::BTreeMap<String, String>>,
    pub access: Setting<AccessConfig>,
}
