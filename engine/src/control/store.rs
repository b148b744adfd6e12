//! The configuration the server runs, and every change to it: API stream edits and SIGHUP.
//!
//! The file is the truth. An API edit reads the file as it is on disk, changes only the one
//! `[[stream]]` table (with `toml_edit`, so the operator's comments and layout stay), validates
//! the whole new text exactly as a start would, writes it atomically (temporary file, fsync,
//! rename, fsync of the directory) and only then applies it to the running server and answers.
//! A crash at any moment leaves the old file or the new one, each valid. SIGHUP applies the
//! file as it is. Either way, streams change live ([`Streams::apply`]); other settings are
//! logged as taking effect at the next restart.
//!
//! Without a file (the embedded default) edits apply live and are kept in memory only; the
//! server info says so (`config_file: null`).
//!
//! What it does not do: ask triggers whether a change is allowed (`STREAM_ADD`/`CONFIG`/
//! `REMOVE` vetoes come with the triggers), or merge concurrent edits of the file by hand
//! (an edit made while one is in flight waits for it).

use crate::config::{Config, ConfigError, ConfigSource, StreamConfig, EMBEDDED};
use crate::shard::catalog::{Changes, InstanceRefusal, StartRules, Streams};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

/// A stream's settings as the API takes and gives them (the `[[stream]]` keys but `name`).
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct StreamFields {
    /// Source URL, or a failover list of them.
    pub source: crate::config::SourceUrls,
    /// A failover list's timing: `dry` and `back_after`, seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failover: Option<FailoverFields>,
    /// Seconds kept for joining viewers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window: Option<f64>,
    /// HLS segment duration, seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub segment_duration: Option<f64>,
    /// HLS segments listed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub playlist_segments: Option<u64>,
    /// Seconds an unlisted segment stays fetchable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub segment_grace: Option<f64>,
    /// DVR: seconds kept for time-shifted playlists (0 or absent: none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dvr: Option<f64>,
    /// Low-latency HLS part duration, seconds (0: off).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub part_duration: Option<f64>,
    /// The CMAF (fMP4) rendition.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cmaf: Option<bool>,
    /// Token access control.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access: Option<crate::config::AccessConfig>,
    /// Whether a gated stream's media may be kept by shared caches.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_cache: Option<bool>,
    /// Bytes held for progressive viewers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_buffer: Option<u64>,
    /// Bytes of one HLS segment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_segment: Option<u64>,
    /// Bytes of HLS segments held.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_hls_bytes: Option<u64>,
    /// Seconds without data before progressive viewers are closed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_timeout: Option<f64>,
    /// What a template's wildcard instances may be.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wildcard: Option<WildcardFields>,
    /// Whether `/readyz` waits for this stream to be live.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub required: Option<bool>,
    /// Where it is sent on while it runs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub push: Vec<String>,
    /// How it is recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub record: Option<crate::config::RecordConfig>,
}

/// A template's `wildcard` table as the API takes and gives it.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct WildcardFields {
    /// Instances at once, at most.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instances: Option<u64>,
    /// The wildcard must be a port in this range.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ports: Option<[u16; 2]>,
    /// The wildcard must match this pattern, whole.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pattern: Option<String>,
}

/// A failover list's timing as the API takes and gives it.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FailoverFields {
    /// Seconds without data before another source takes over.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dry: Option<f64>,
    /// Seconds an earlier source must be live again before it takes over back (0: never).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub back_after: Option<f64>,
}

impl StreamFields {
    /// The settings of a running stream, every one spelled out.
    pub fn of(config: &StreamConfig) -> Self {
        Self {
            source: config.source_urls.clone(),
            failover: match &config.source {
                crate::source::SourceSpec::Failover(list) => Some(FailoverFields {
                    dry: Some(list.dry.as_secs_f64()),
                    back_after: Some(list.back_after.map_or(0.0, |d| d.as_secs_f64())),
                }),
                _ => None,
            },
            window: Some(config.window_s),
            segment_duration: Some(config.hls.segment_duration_s),
            playlist_segments: Some(config.hls.playlist_segments as u64),
            segment_grace: Some(config.hls.segment_grace_s),
            dvr: (config.hls.dvr_s > 0.0).then_some(config.hls.dvr_s),
            part_duration: config.hls.part_duration_s,
            cmaf: config.hls.cmaf.then_some(true),
            access: config.access.clone(),
            public_cache: Some(config.limits.public_cache),
            max_buffer: Some(config.limits.max_buffer as u64),
            max_segment: Some(config.limits.max_segment as u64),
            max_hls_bytes: Some(config.limits.max_hls_bytes as u64),
            source_timeout: Some(config.limits.source_timeout_s),
            wildcard: config.wildcard.as_ref().map(|w| WildcardFields {
                instances: Some(w.instances as u64),
                ports: w.ports.map(|(low, high)| [low, high]),
                pattern: w.pattern.as_ref().map(|p| p.as_str().to_owned()),
            }),
            required: Some(config.required),
            push: config.push.clone(),
            record: config.record.clone(),
        }
    }

    fn table(&self, name: &str) -> toml_edit::Table {
        let mut t = toml_edit::Table::new();
        t["name"] = toml_edit::value(name);
        t["source"] = match &self.source {
            crate::config::SourceUrls::One(url) => toml_edit::value(url.as_str()),
            crate::config::SourceUrls::Many(urls) => toml_edit::value(
                urls.iter()
                    .map(String::as_str)
                    .collect::<toml_edit::Array>(),
            ),
        };
        if let Some(f) = &self.failover {
            let mut table = toml_edit::InlineTable::new();
            if let Some(v) = f.dry {
                table.insert("dry", v.into());
            }
            if let Some(v) = f.back_after {
                table.insert("back_after", v.into());
            }
            t["failover"] = toml_edit::value(table);
        }
        if let Some(v) = self.window {
            t["window"] = toml_edit::value(v);
        }
        if let Some(v) = self.segment_duration {
            t["segment_duration"] = toml_edit::value(v);
        }
        if let Some(v) = self.playlist_segments {
            t["playlist_segments"] = toml_edit::value(i64::try_from(v).unwrap_or(i64::MAX));
        }
        if let Some(v) = self.segment_grace {
            t["segment_grace"] = toml_edit::value(v);
        }
        if let Some(v) = self.dvr {
            t["dvr"] = toml_edit::value(v);
        }
        if let Some(v) = self.part_duration {
            t["part_duration"] = toml_edit::value(v);
        }
        if let Some(v) = self.cmaf {
            t["cmaf"] = toml_edit::value(v);
        }
        if let Some(a) = &self.access {
            let mut access = toml_edit::InlineTable::new();
            access.insert("url", a.url.as_str().into());
            access.insert("ttl", a.ttl.into());
            access.insert("timeout", a.timeout.into());
            let on_error = match a.on_error {
                crate::config::OnError::Deny => "deny",
                crate::config::OnError::Allow => "allow",
            };
            access.insert("on_error", on_error.into());
            t["access"] = toml_edit::value(access);
        }
        let int = |v: u64| toml_edit::value(i64::try_from(v).unwrap_or(i64::MAX));
        if let Some(v) = self.public_cache {
            t["public_cache"] = toml_edit::value(v);
        }
        if let Some(v) = self.required {
            t["required"] = toml_edit::value(v);
        }
        if let Some(r) = &self.record {
            let mut record = toml_edit::InlineTable::new();
            record.insert("path", r.path.as_str().into());
            record.insert("rotate", r.rotate.into());
            if let Some(v) = r.max_age {
                record.insert("max_age", v.into());
            }
            if let Some(v) = r.max_bytes {
                record.insert("max_bytes", i64::try_from(v).unwrap_or(i64::MAX).into());
            }
            record.insert("enabled", r.enabled.into());
            t["record"] = toml_edit::value(record);
        }
        if !self.push.is_empty() {
            t["push"] = toml_edit::value(
                self.push
                    .iter()
                    .map(String::as_str)
                    .collect::<toml_edit::Array>(),
            );
        }
        if let Some(v) = self.max_buffer {
            t["max_buffer"] = int(v);
        }
        if let Some(v) = self.max_segment {
            t["max_segment"] = int(v);
        }
        if let Some(v) = self.max_hls_bytes {
            t["max_hls_bytes"] = int(v);
        }
        if let Some(v) = self.source_timeout {
            t["source_timeout"] = toml_edit::value(v);
        }
        if let Some(w) = &self.wildcard {
            let mut wildcard = toml_edit::InlineTable::new();
            if let Some(n) = w.instances {
                wildcard.insert("instances", i64::try_from(n).unwrap_or(i64::MAX).into());
            }
            if let Some([low, high]) = w.ports {
                let mut ports = toml_edit::Array::new();
                ports.push(i64::from(low));
                ports.push(i64::from(high));
                wildcard.insert("ports", ports.into());
            }
            if let Some(p) = &w.pattern {
                wildcard.insert("pattern", p.as_str().into());
            }
            t["wildcard"] = toml_edit::value(wildcard);
        }
        t
    }
}

/// Why an edit was refused.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The edit would make the configuration invalid (the reason, as a start would give it).
    #[error("{}", .0.message)]
    Invalid(ConfigError),
    /// The file on disk does not validate as it is (edited by hand and not fixed): nothing is
    /// changed until it does.
    #[error("the configuration file is invalid as it is on disk ({0}): fix it first")]
    FileRefused(ConfigError),
    /// The file on disk cannot be edited as TOML.
    #[error("the configuration file {0}")]
    FileInvalid(#[from] EditError),
    /// No stream has that name.
    #[error("no stream named {0:?}")]
    NotFound(String),
    /// A `STREAM_ADD`, `STREAM_CONFIG` or `STREAM_REMOVE` trigger refused the change.
    #[error("{0} refused the change")]
    Vetoed(&'static str),
    /// The file cannot be read.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// The configuration file.
        path: std::path::PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file cannot be written.
    #[error("cannot write {}: {source}", path.display())]
    Write {
        /// The configuration file.
        path: std::path::PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

/// Why a configuration text cannot be edited.
#[derive(Debug, thiserror::Error)]
pub enum EditError {
    /// It is not TOML.
    #[error("does not parse: {0}")]
    Toml(#[from] toml_edit::TomlError),
    /// It has a `stream` key that is not `[[stream]]` tables.
    #[error("has `stream` as something else than [[stream]] tables")]
    NotStreamTables,
}

/// The `[[stream]]` tables of a configuration text, to edit.
fn stream_tables(
    doc: &mut toml_edit::DocumentMut,
) -> Result<&mut toml_edit::ArrayOfTables, EditError> {
    if !doc.contains_key("stream") {
        doc.insert(
            "stream",
            toml_edit::Item::ArrayOfTables(toml_edit::ArrayOfTables::new()),
        );
    }
    doc["stream"]
        .as_array_of_tables_mut()
        .ok_or(EditError::NotStreamTables)
}

fn position(tables: &toml_edit::ArrayOfTables, name: &str) -> Option<usize> {
    tables
        .iter()
        .position(|t| t.get("name").and_then(|n| n.as_str()) == Some(name))
}

/// `text` with stream `name` set to `fields` (replaced where it is, or added at the end);
/// and whether it is new.
pub fn set_stream(
    text: &str,
    name: &str,
    fields: &StreamFields,
) -> Result<(String, bool), EditError> {
    let mut doc: toml_edit::DocumentMut = text.parse()?;
    let tables = stream_tables(&mut doc)?;
    let mut table = fields.table(name);
    let created = match position(tables, name) {
        Some(i) => {
            let old = tables.get_mut(i).ok_or(EditError::NotStreamTables)?;
            // Comments above the table stay with it.
            *table.decor_mut() = old.decor().clone();
            *old = table;
            false
        }
        None => {
            tables.push(table);
            true
        }
    };
    if created {
        // Comments at the end of the file stay above the table appended after them.
        let trailing = doc.trailing().as_str().unwrap_or("").to_owned();
        if !trailing.trim().is_empty() {
            doc.set_trailing("");
            if let Some(new) = stream_tables(&mut doc)?.iter_mut().last() {
                let own = comments_above(new);
                new.decor_mut().set_prefix(format!("{trailing}{own}"));
            }
        }
    }
    Ok((doc.to_string(), created))
}

/// What stands above a table's header (comments, blank lines).
fn comments_above(table: &toml_edit::Table) -> String {
    table
        .decor()
        .prefix()
        .and_then(|p| p.as_str())
        .unwrap_or("")
        .to_owned()
}

/// `text` without stream `name`; `None` when it has no such stream.
pub fn remove_stream(text: &str, name: &str) -> Result<Option<String>, EditError> {
    let mut doc: toml_edit::DocumentMut = text.parse()?;
    let tables = stream_tables(&mut doc)?;
    let Some(i) = position(tables, name) else {
        return Ok(None);
    };
    // Comments right above the table go with it; those before a blank line above it are not
    // its own (a file's header, say) and stay where they were.
    let prefix = tables.get(i).map(comments_above).unwrap_or_default();
    let keep = prefix.rfind("\n\n").map_or("", |at| &prefix[..at + 2]);
    tables.remove(i);
    if !keep.is_empty() {
        match tables.get_mut(i) {
            Some(next) => {
                let own = comments_above(next);
                let own = own.trim_start_matches('\n');
                next.decor_mut().set_prefix(format!("{keep}{own}"));
            }
            None => {
                let trailing = doc.trailing().as_str().unwrap_or("").to_owned();
                doc.set_trailing(format!("{trailing}{keep}"));
            }
        }
    }
    let tables = stream_tables(&mut doc)?;
    if tables.is_empty() {
        doc.remove("stream");
    }
    Ok(Some(doc.to_string()))
}

/// Whether a stream's viewers need an access decision.
fn gated(triggers: &super::triggers::TriggerSet, c: &StreamConfig) -> bool {
    c.access.is_some()
        || triggers.wants("USER_NEW", Some(&c.name))
        || triggers.wants("CONN_PLAY", Some(&c.name))
        || triggers.wants("PLAY_REWRITE", Some(&c.name))
}

/// Whether a proxied stream's viewers need an access decision (its viewers are sessions of
/// `proxy/{name}`: the name triggers are configured for).
fn proxy_gated(
    triggers: &super::triggers::TriggerSet,
    stream: &str,
    access: Option<&crate::config::AccessConfig>,
) -> bool {
    access.is_some()
        || triggers.wants("USER_NEW", Some(stream))
        || triggers.wants("CONN_PLAY", Some(stream))
}

/// The running configuration and the one way to change it.
#[derive(Debug)]
pub struct ConfigStore {
    source: ConfigSource,
    streams: Arc<Streams>,
    triggers: Arc<super::triggers::Triggers>,
    running: Mutex<Config>,
    /// Without a file: the configuration text, edited in memory.
    memory: Mutex<String>,
    /// One change at a time (API edits and SIGHUP).
    writer: Mutex<()>,
    /// The TLS certificates, read again with the configuration.
    certificates: std::sync::OnceLock<Arc<crate::tls::Certificates>>,
    /// The HLS proxy, whose configured proxies follow the configuration.
    proxies: std::sync::OnceLock<Arc<crate::proxy::Proxies>>,
}

impl ConfigStore {
    /// The store of a server started with `running`, loaded from `source`.
    pub fn new(
        source: ConfigSource,
        running: Config,
        streams: Arc<Streams>,
        triggers: Arc<super::triggers::Triggers>,
    ) -> Self {
        if let Some(path) = &source.path {
            crate::files::remove_stale_temporaries(path);
        }
        Self {
            source,
            streams,
            triggers,
            running: Mutex::new(running),
            memory: Mutex::new(EMBEDDED.to_owned()),
            writer: Mutex::new(()),
            certificates: std::sync::OnceLock::new(),
            proxies: std::sync::OnceLock::new(),
        }
    }

    /// The HLS proxy: `[[proxy]]` changes apply to it live.
    pub fn set_proxies(&self, proxies: Arc<crate::proxy::Proxies>) {
        let triggers = self.triggers.shared();
        proxies.set_gates(|stream, access| proxy_gated(&triggers, stream, access));
        let _ = self.proxies.set(proxies);
    }

    /// The HLS proxy, once set.
    pub fn proxies(&self) -> Option<&Arc<crate::proxy::Proxies>> {
        self.proxies.get()
    }

    /// The TLS certificates the server runs with: SIGHUP reads them again.
    pub fn set_certificates(&self, certificates: Arc<crate::tls::Certificates>) {
        let _ = self.certificates.set(certificates);
    }

    /// The TLS certificates, when the server has TLS.
    pub fn certificates(&self) -> Option<&Arc<crate::tls::Certificates>> {
        self.certificates.get()
    }

    /// Read the running configuration's certificate files again and serve them to new
    /// handshakes; certificates that do not load are refused and the running ones stay.
    pub fn reload_certificates(&self) -> Result<(), crate::tls::CertError> {
        let Some(certs) = self.certificates.get() else {
            return Err(crate::tls::CertError::None);
        };
        let _one = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        let files = self
            .running
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .tls_certificates
            .clone();
        certs.reload(&files, (crate::sys::unix_ns() / 1_000_000_000) as i64)
    }

    /// The stream table.
    pub fn streams(&self) -> &Arc<Streams> {
        &self.streams
    }

    /// The configuration file, when there is one.
    pub fn file(&self) -> Option<&PathBuf> {
        self.source.path.as_ref()
    }

    /// Start the streams of the configuration the server started with.
    pub fn start(&self) {
        let _one = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        let config = self
            .running
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        self.apply(config);
    }

    /// SIGHUP: apply the file as it is now. A file that does not validate changes nothing.
    pub fn reload(&self) -> Result<(Changes, Vec<String>), crate::config::LoadError> {
        let _one = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        let new = self.source.load()?;
        // The certificate files are read again (renewed in place, or others named): any that
        // does not load refuses the whole reload.
        if let Some(certs) = self.certificates.get() {
            if new.tls_listen.is_some() {
                certs.reload(
                    &new.tls_certificates,
                    (crate::sys::unix_ns() / 1_000_000_000) as i64,
                )?;
            }
        }
        Ok(self.apply(new))
    }

    /// Set stream `name` (create or replace); returns whether it was created.
    pub fn put_stream(&self, name: &str, fields: &StreamFields) -> Result<bool, StoreError> {
        let mut created = false;
        self.edit(|text| {
            let (new, c) = set_stream(text, name, fields)?;
            created = c;
            let trigger = if c { "STREAM_ADD" } else { "STREAM_CONFIG" };
            let settings = serde_json::to_string(fields).unwrap_or_default();
            self.veto(trigger, name, &[name, &settings])?;
            Ok(new)
        })?;
        Ok(created)
    }

    /// Remove stream `name`.
    pub fn delete_stream(&self, name: &str) -> Result<(), StoreError> {
        self.edit(|text| {
            let new =
                remove_stream(text, name)?.ok_or_else(|| StoreError::NotFound(name.to_owned()))?;
            self.veto("STREAM_REMOVE", name, &[name])?;
            Ok(new)
        })
    }

    /// Ask a blocking stream trigger whether a change may be made.
    fn veto(&self, trigger: &'static str, stream: &str, lines: &[&str]) -> Result<(), StoreError> {
        match self.triggers.ask_blocking(trigger, Some(stream), lines) {
            Some(answers) if answers.iter().any(|a| super::triggers::refuses(a)) => {
                tracing::warn!(stream, "{trigger} refused the change");
                Err(StoreError::Vetoed(trigger))
            }
            _ => Ok(()),
        }
    }

    /// Read the configuration text, change it, validate, persist, apply.
    fn edit(
        &self,
        change: impl FnOnce(&str) -> Result<String, StoreError>,
    ) -> Result<(), StoreError> {
        let _one = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        let text = match self.file() {
            Some(path) => std::fs::read_to_string(path).map_err(|source| StoreError::Read {
                path: path.to_owned(),
                source,
            })?,
            None => self
                .memory
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
        };
        if let Err(e) = Config::parse(&text) {
            return Err(StoreError::FileRefused(e));
        }
        let new_text = change(&text)?;
        let mut new = Config::parse(&new_text).map_err(StoreError::Invalid)?;
        match self.file() {
            Some(path) => {
                crate::files::write_atomically(path, new_text.as_bytes()).map_err(|source| {
                    StoreError::Write {
                        path: path.to_owned(),
                        source,
                    }
                })?
            }
            None => *self.memory.lock().unwrap_or_else(|e| e.into_inner()) = new_text,
        }
        self.source.override_settings(&mut new);
        self.apply(new);
        Ok(())
    }

    /// Start wildcard instance `name` (`base+wildcard`) of a configured template.
    pub fn start_instance(&self, name: &str) -> Result<(), InstanceRefusal> {
        self.with_rules(|rules| self.streams.start_instance(name, rules))
    }

    /// End wildcard instance `name` (nobody watches it).
    pub fn end_instance(&self, name: &str) {
        self.with_rules(|rules| self.streams.end_instance(name, rules));
    }

    /// Run `f` with the rules streams start by: gated when access control or a viewer
    /// trigger applies, the source as `STREAM_SOURCE` makes it.
    fn with_rules<R>(&self, f: impl FnOnce(&StartRules<'_>) -> R) -> R {
        let triggers = self.triggers.shared();
        let gated = |c: &StreamConfig| gated(&triggers, c);
        let source = |c: &StreamConfig| self.source_rewrite(c);
        f(&StartRules {
            gated: Some(&gated),
            source: Some(&source),
        })
    }

    /// What a `STREAM_SOURCE` trigger makes of a stream's source.
    fn source_rewrite(&self, c: &StreamConfig) -> Option<String> {
        let answers = self.triggers.ask_blocking(
            "STREAM_SOURCE",
            Some(&c.name),
            &[&c.name, &c.source_url],
        )?;
        answers.into_iter().find(|a| !a.trim().is_empty())
    }

    /// Make `new` the running configuration: streams live, the rest at the next restart
    /// (returned by name).
    fn apply(&self, new: Config) -> (Changes, Vec<String>) {
        let mut running = self.running.lock().unwrap_or_else(|e| e.into_inner());
        self.triggers.reconfigure(new.triggers.clone());
        if let Some(proxies) = self.proxies.get() {
            proxies.reconfigure(&new.proxies);
            let triggers = self.triggers.shared();
            proxies.set_gates(|stream, access| proxy_gated(&triggers, stream, access));
        }
        let changes = self.with_rules(|rules| self.streams.apply_with(&new.streams, rules));
        let triggers = self.triggers.shared();
        self.streams
            .set_fallback(self.triggers.configured("DEFAULT_STREAM"));
        // Triggers may have changed for streams that did not: their gates follow.
        for (_, info) in self.streams.load().streams() {
            info.gated.store(
                gated(&triggers, &info.config),
                std::sync::atomic::Ordering::Relaxed,
            );
        }
        let later = running.settings_needing_restart(&new);
        for name in &changes.added {
            tracing::info!("stream {name} added");
        }
        for name in &changes.changed {
            tracing::info!("stream {name} changed: restarted with its new settings");
        }
        for name in &changes.removed {
            tracing::info!("stream {name} removed: its viewers are closed");
        }
        if !later.is_empty() {
            tracing::warn!(settings = ?later, "configuration changes that take effect only at the next restart");
        }
        // What runs now: the new streams and triggers, the old settings (until a restart).
        running.streams = new.streams;
        running.triggers = new.triggers;
        running.proxies = new.proxies;
        (changes, later)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = "# the operator's notes\n[server]\nlisten = \"127.0.0.1:8080\"\n\n# the camera\n[[stream]]\nname = \"cam\"\nsource = \"udp://239.1.1.1:5000\"\n\n[[stream]]\nname = \"demo\"\nsource = \"demo:\"\n";

    #[test]
    fn a_failover_list_is_written_back_as_a_list_and_reads_the_same() {
        let text = "[[stream]]\nname = \"cam\"\nsource = [\"udp://239.1.1.1:5000\", \"tcp://b:9000?mode=connect\"]\nfailover = { dry = 2.5, back_after = 0 }\n";
        let config = Config::parse(text).unwrap();
        let fields = StreamFields::of(&config.streams[0]);
        let (written, _) = set_stream("", "cam", &fields).unwrap();
        let again = Config::parse(&written).unwrap();
        assert_eq!(
            again.streams[0].source, config.streams[0].source,
            "{written}"
        );
        let crate::source::SourceSpec::Failover(list) = &again.streams[0].source else {
            panic!("{written}")
        };
        assert_eq!(list.sources.len(), 2);
        assert_eq!(list.dry, std::time::Duration::from_millis(2500));
        assert_eq!(list.back_after, None);
        // JSON as the API takes it: a list, or one URL.
        let json: StreamFields = serde_json::from_str(
            r#"{"source": ["demo:", "udp://127.0.0.1:5000"], "failover": {"dry": 1}}"#,
        )
        .unwrap();
        assert_eq!(json.source.urls().len(), 2);
    }

    #[test]
    fn edits_keep_the_rest_of_the_file() {
        let fields = StreamFields {
            source: "demo:".into(),
            window: Some(5.0),
            ..Default::default()
        };
        let (text, created) = set_stream(FILE, "cam", &fields).unwrap();
        assert!(!created);
        assert!(
            text.starts_with("# the operator's notes\n[server]"),
            "{text}"
        );
        assert!(
            text.contains(
                "# the camera\n[[stream]]\nname = \"cam\"\nsource = \"demo:\"\nwindow = 5.0\n"
            ),
            "{text}"
        );
        let c = Config::parse(&text).unwrap();
        assert_eq!(c.streams[0].name, "cam");
        assert_eq!(c.streams[0].window_s, 5.0);
        assert_eq!(c.streams[1].name, "demo");

        let (text, created) = set_stream(&text, "new", &fields).unwrap();
        assert!(created);
        assert_eq!(Config::parse(&text).unwrap().streams[2].name, "new");

        let text = remove_stream(&text, "demo").unwrap().unwrap();
        let names: Vec<String> = Config::parse(&text)
            .unwrap()
            .streams
            .into_iter()
            .map(|s| s.name)
            .collect();
        assert_eq!(names, ["cam", "new"]);
        assert_eq!(remove_stream(&text, "demo").unwrap(), None);
        let text = remove_stream(&text, "cam").unwrap().unwrap();
        let text = remove_stream(&text, "new").unwrap().unwrap();
        assert!(Config::parse(&text).unwrap().streams.is_empty());
        let (text, _) = set_stream("", "x", &fields).unwrap();
        assert_eq!(Config::parse(&text).unwrap().streams[0].name, "x");
    }

    #[test]
    fn a_removed_table_takes_only_its_own_comments() {
        let text = "# the file's header\n\n# the first\n[[stream]]\nname = \"a\"\nsource = \"demo:\"\n\n[[stream]]\nname = \"b\"\nsource = \"demo:\"\n";
        let text = remove_stream(text, "a").unwrap().unwrap();
        assert!(
            text.starts_with("# the file's header\n\n[[stream]]\nname = \"b\""),
            "{text}"
        );
        let text = remove_stream(&text, "b").unwrap().unwrap();
        assert!(text.starts_with("# the file's header\n"), "{text}");
        assert!(Config::parse(&text).unwrap().streams.is_empty());
        let fields = StreamFields {
            source: "demo:".into(),
            ..Default::default()
        };
        let (text, _) = set_stream(&text, "c", &fields).unwrap();
        assert!(
            text.starts_with("# the file's header\n\n[[stream]]\nname = \"c\""),
            "{text}"
        );
    }

    #[test]
    fn access_settings_round_trip() {
        let fields: StreamFields = serde_json::from_str(
            r#"{"source": "demo:", "access": {"url": "http://127.0.0.1:9/check", "ttl": 5}}"#,
        )
        .unwrap();
        let (text, _) = set_stream("", "paid", &fields).unwrap();
        let c = Config::parse(&text).unwrap();
        let access = c.streams[0].access.clone().unwrap();
        assert_eq!(
            (access.url.as_str(), access.ttl),
            ("http://127.0.0.1:9/check", 5.0)
        );
        assert_eq!(StreamFields::of(&c.streams[0]).access, Some(access));
    }

    #[test]
    fn names_are_quoted_and_then_validated() {
        let fields = StreamFields {
            source: "demo:".into(),
            ..Default::default()
        };
        let (text, _) = set_stream(FILE, "a\"b\n[server]", &fields).unwrap();
        let e = Config::parse(&text).unwrap_err();
        assert!(e.message.contains("must be letters, digits"), "{e}");
    }
}
