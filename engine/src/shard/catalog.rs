//! The stream table: which streams exist, which shard is home to each, and the queues their
//! chunks travel through. The control side publishes a new [`Catalog`] (one `ArcSwap` store)
//! and wakes every shard; each shard follows it at its next loop turn
//! ([`super::core::ShardCore::follow_catalog`]): it starts the ingest of new streams it is home
//! to, keeps a view of every stream, and ends the viewers of streams that went away.
//!
//! ```text
//!  config / API / SIGHUP ─► Streams::apply ─► Catalog (slots of Arc<StreamInfo>) ─► wake shards
//! ```
//!
//! A stream whose configuration is unchanged keeps its `Arc<StreamInfo>` (its buffers, counters
//! and viewers carry on); a changed one gets a new `StreamInfo` in the same slot, which every
//! shard sees as the old stream ending and a new one beginning. Slots of removed streams are
//! reused; a shard tells streams apart by the `Arc`, never by the slot alone.
//!
//! What it does not do: decide whether a change is allowed (validation is the config's, vetoes
//! are the triggers'), or persist anything.

use crate::config::{StreamConfig, MAX_WILDCARD_INSTANCES};
use crate::stream::{Chunk, StreamCounters};
use crate::wake::Wake;
use arc_swap::ArcSwap;
use crossbeam_queue::ArrayQueue;
use std::sync::{Arc, Mutex};

/// What every shard knows of a stream.
#[derive(Debug)]
pub struct StreamInfo {
    /// Its name.
    pub name: String,
    /// The same, shared: what its session keys hold (no allocation per request).
    pub key_name: Arc<str>,
    /// Its configuration.
    pub config: StreamConfig,
    /// Where it comes from: the configured source, or what a `STREAM_SOURCE` trigger made of
    /// it when the stream started.
    pub source: crate::source::SourceSpec,
    /// The same, as a URL.
    pub source_url: String,
    /// The shard that receives its source and publishes its chunks.
    pub home: usize,
    /// Its counters.
    pub counters: Arc<StreamCounters>,
    /// Nanoseconds of stream kept for joining viewers.
    pub window_ns: u64,
    /// HLS settings.
    pub hls: crate::hls::HlsSettings,
    /// The newest HLS window, published by the home shard.
    pub hls_window: crate::hls::HlsSlot,
    /// Per shard, the queue its chunks reach that shard through (`None` for the home shard).
    pub queues: Vec<Option<Arc<ArrayQueue<Chunk>>>>,
    /// What sends it on (re-emission, pushes out) reads its chunks through these
    /// ([`crate::output::push_out`]); its home shard offers them every chunk.
    pub taps: Arc<crate::stream::tap::TapSet>,
    /// Whether viewers need an access decision (token access control, or a `USER_NEW` or
    /// `CONN_PLAY` trigger applies); the control plane keeps it current.
    pub gated: std::sync::atomic::AtomicBool,
}

impl StreamInfo {
    /// A stream of `shards` shards, at home on `home`.
    pub fn new(config: StreamConfig, home: usize, shards: usize) -> Self {
        Self {
            source: config.source.clone(),
            source_url: config.source_url.clone(),
            name: config.name.clone(),
            key_name: Arc::from(config.name.as_str()),
            counters: Arc::new(StreamCounters::default()),
            window_ns: (config.window_s * 1e9) as u64,
            hls: config.hls,
            hls_window: Default::default(),
            queues: (0..shards)
                .map(|s| (s != home).then(|| Arc::new(ArrayQueue::new(super::QUEUE_CHUNKS))))
                .collect(),
            home,
            taps: Default::default(),
            gated: std::sync::atomic::AtomicBool::new(config.access.is_some()),
            config,
        }
    }
}

/// The streams at one moment, by slot.
#[derive(Debug, Default)]
pub struct Catalog {
    /// Increases with every change.
    pub generation: u64,
    /// The streams; `None` where one was removed (the slot may be reused).
    pub slots: Vec<Option<Arc<StreamInfo>>>,
    /// Whether a `DEFAULT_STREAM` trigger may name a stream to play when one requested does
    /// not exist (shards then ask instead of answering 404).
    pub fallback: bool,
}

impl Catalog {
    /// The stream named `name`, with its slot.
    pub fn find(&self, name: &str) -> Option<(usize, &Arc<StreamInfo>)> {
        self.streams().find(|(_, s)| s.name == name)
    }

    /// Every stream, with its slot, in slot order.
    pub fn streams(&self) -> impl Iterator<Item = (usize, &Arc<StreamInfo>)> {
        self.slots
            .iter()
            .enumerate()
            .filter_map(|(i, s)| s.as_ref().map(|s| (i, s)))
    }

    /// How many streams there are.
    pub fn len(&self) -> usize {
        self.slots.iter().flatten().count()
    }

    /// Whether there is no stream.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// What [`Streams::apply`] changed, by stream name.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Changes {
    /// Streams that did not exist.
    pub added: Vec<String>,
    /// Streams whose configuration changed (restarted with the new one).
    pub changed: Vec<String>,
    /// Streams that no longer exist.
    pub removed: Vec<String>,
}

impl Changes {
    /// Whether nothing changed.
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.changed.is_empty() && self.removed.is_empty()
    }
}

/// What a `STREAM_SOURCE` trigger makes of a stream's source: a URL, or `None` to keep it.
pub type SourceRewrite<'a> = dyn Fn(&StreamConfig) -> Option<String> + 'a;

/// How streams start: whether viewers need an access decision, and where the source really
/// is (a `STREAM_SOURCE` trigger may say). By default: gated when `access` is set, the
/// configured source.
#[derive(Default)]
#[allow(missing_debug_implementations)] // closures
pub struct StartRules<'a> {
    /// Whether the stream's viewers need an access decision.
    pub gated: Option<&'a (dyn Fn(&StreamConfig) -> bool + 'a)>,
    /// The source to use instead of the configured one (a URL), if any.
    pub source: Option<&'a SourceRewrite<'a>>,
}

impl StartRules<'_> {
    fn start(&self, config: &StreamConfig, home: usize, shards: usize) -> Arc<StreamInfo> {
        let mut info = StreamInfo::new(config.clone(), home, shards);
        if let Some(gated) = self.gated {
            info.gated = std::sync::atomic::AtomicBool::new(gated(config));
        }
        if let Some(url) = self.source.and_then(|rewrite| rewrite(config)) {
            match crate::source::SourceSpec::parse(&url) {
                Ok(spec) => {
                    tracing::info!(stream = %config.name, source = %url, "STREAM_SOURCE: the source is {url}");
                    info.source = spec;
                    info.source_url = url;
                }
                Err(e) => {
                    tracing::warn!(stream = %config.name, "STREAM_SOURCE answered {url:?}, which is not a source ({e}): keeping {}", config.source_url)
                }
            }
        }
        Arc::new(info)
    }
}

/// The publishing side of the stream table.
#[derive(Debug)]
pub struct Streams {
    catalog: Arc<ArcSwap<Catalog>>,
    wakers: Vec<Arc<dyn Wake>>,
    /// Changes are made one at a time; this is what was last applied (the configured streams
    /// and the wildcard instances running, by their base and wildcard). It may be held while
    /// a trigger is asked (`STREAM_SOURCE`): readers use `instance_names`.
    writer: Mutex<Applied>,
    /// The names of the wildcard instances running.
    instance_names: ArcSwap<Vec<String>>,
    /// What was last applied, for readers that must not wait for the writer.
    applied: ArcSwap<Applied>,
    /// Told of every change (the control plane's stream watcher).
    news: Arc<tokio::sync::Notify>,
}

#[derive(Clone, Debug, Default)]
struct Applied {
    configured: Vec<StreamConfig>,
    instances: Vec<(String, String)>,
}

/// Why a wildcard instance does not start.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum InstanceRefusal {
    /// The name is not one its base allows (not a template, a wildcard it refuses, a source
    /// that is another stream's): 404, and nothing starts.
    NotAllowed(String),
    /// The template (or the server) runs as many instances as it may: 503 for now.
    Full(String),
}

impl std::fmt::Display for InstanceRefusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            InstanceRefusal::NotAllowed(why) | InstanceRefusal::Full(why) => f.write_str(why),
        }
    }
}

impl Streams {
    /// A table of `configs`, for the shards woken by `wakers` (one per shard).
    pub fn new(configs: &[StreamConfig], wakers: Vec<Arc<dyn Wake>>) -> Self {
        let streams = Self {
            catalog: Arc::new(ArcSwap::from_pointee(Catalog::default())),
            wakers,
            writer: Mutex::new(Applied::default()),
            instance_names: ArcSwap::from_pointee(Vec::new()),
            applied: ArcSwap::from_pointee(Applied::default()),
            news: Arc::new(tokio::sync::Notify::new()),
        };
        streams.apply(configs);
        streams
    }

    /// What is told of every change to the table (shards tell it of their streams' news
    /// too: [`crate::session::ShardLink::news`]).
    pub fn news(&self) -> Arc<tokio::sync::Notify> {
        self.news.clone()
    }

    /// Where shards follow the table.
    pub fn shared(&self) -> Arc<ArcSwap<Catalog>> {
        self.catalog.clone()
    }

    /// The table now.
    pub fn load(&self) -> Arc<Catalog> {
        self.catalog.load_full()
    }

    /// Make the table hold exactly `configs`: keep unchanged streams as they are, restart the
    /// changed ones, start the new ones on the shard with the fewest streams at home, and end
    /// the others. Wakes every shard when anything changed.
    pub fn apply(&self, configs: &[StreamConfig]) -> Changes {
        self.apply_with(configs, &StartRules::default())
    }

    /// [`Streams::apply`], with `rules` for the streams that start.
    pub fn apply_with(&self, configs: &[StreamConfig], rules: &StartRules<'_>) -> Changes {
        let mut applied = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        applied.configured = configs.to_vec();
        self.publish(&mut applied, rules)
    }

    /// Whether wildcard instance `name` (`base+wildcard`) could start now, without starting
    /// it: its base is a template that allows the wildcard, the template has room for one
    /// more instance, and its source is no other stream's. `Ok(true)` when it runs already.
    pub fn check_instance(&self, name: &str) -> Result<bool, InstanceRefusal> {
        // From the last published state: the writer's lock may be held while a trigger is
        // asked, and [`Streams::start_instance`] checks again under it.
        Self::admit_instance(&self.applied.load(), name).map(|(_, running)| running)
    }

    fn admit_instance(
        applied: &Applied,
        name: &str,
    ) -> Result<(StreamConfig, bool), InstanceRefusal> {
        let (base, wildcard) = name
            .split_once('+')
            .ok_or_else(|| InstanceRefusal::NotAllowed(format!("{name:?} is not base+wildcard")))?;
        let config = applied
            .configured
            .iter()
            .find(|c| c.name == base)
            .ok_or_else(|| {
                InstanceRefusal::NotAllowed(format!("no stream {base:?} to make {name:?} of"))
            })?;
        let instance = config
            .instance(wildcard)
            .map_err(|e| InstanceRefusal::NotAllowed(e.to_string()))?;
        if applied
            .instances
            .iter()
            .any(|(b, w)| b == base && w == wildcard)
        {
            return Ok((instance, true));
        }
        let of_base = applied.instances.iter().filter(|(b, _)| b == base).count();
        let cap = config.wildcard_rule().instances;
        if of_base >= cap {
            return Err(InstanceRefusal::Full(format!(
                "{base} runs {of_base} wildcard instances, its most"
            )));
        }
        if applied.instances.len() >= MAX_WILDCARD_INSTANCES {
            return Err(InstanceRefusal::Full(format!(
                "{MAX_WILDCARD_INSTANCES} wildcard instances run already"
            )));
        }
        // A UDP address or TCP port of another stream (configured, or another instance) would
        // share its input.
        let taken = applied
            .configured
            .iter()
            .filter(|c| !c.is_template())
            .map(|c| c.source.clone())
            .chain(applied.instances.iter().filter_map(|(b, w)| {
                let c = applied.configured.iter().find(|c| &c.name == b)?;
                Some(c.instance(w).ok()?.source)
            }))
            .any(|s| s.shares_input(&instance.source));
        if taken {
            return Err(InstanceRefusal::NotAllowed(format!(
                "{} is another stream's source",
                instance.source_url
            )));
        }
        Ok((instance, false))
    }

    /// Start wildcard instance `name` (`base+wildcard`) of a configured template, unless it
    /// runs already ([`Streams::check_instance`] says what may be refused).
    pub fn start_instance(
        &self,
        name: &str,
        rules: &StartRules<'_>,
    ) -> Result<(), InstanceRefusal> {
        let mut applied = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        let (instance, running) = Self::admit_instance(&applied, name)?;
        if running {
            return Ok(());
        }
        let (base, wildcard) = instance.name.split_once('+').unwrap_or((name, ""));
        applied
            .instances
            .push((base.to_owned(), wildcard.to_owned()));
        self.publish(&mut applied, rules);
        tracing::info!(stream = %name, "wildcard instance started");
        Ok(())
    }

    /// End wildcard instance `name`.
    pub fn end_instance(&self, name: &str, rules: &StartRules<'_>) {
        let mut applied = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        let before = applied.instances.len();
        applied
            .instances
            .retain(|(b, w)| format!("{b}+{w}") != name);
        if applied.instances.len() != before {
            self.publish(&mut applied, rules);
            tracing::info!(stream = %name, "wildcard instance ended");
        }
    }

    /// Say whether requests of streams that do not exist are to be asked about
    /// (`DEFAULT_STREAM`); a change is published to the shards.
    pub fn set_fallback(&self, fallback: bool) {
        let _one = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        let old = self.catalog.load_full();
        if old.fallback == fallback {
            return;
        }
        self.catalog.store(Arc::new(Catalog {
            generation: old.generation + 1,
            slots: old.slots.clone(),
            fallback,
        }));
        for w in &self.wakers {
            w.wake();
        }
    }

    /// The configured stream `name` (not an instance), as last applied.
    pub fn configured(&self, name: &str) -> Option<StreamConfig> {
        let applied = self.applied.load();
        applied.configured.iter().find(|c| c.name == name).cloned()
    }

    /// Whether `name` is a wildcard instance now running.
    pub fn is_instance(&self, name: &str) -> bool {
        self.instance_names.load().iter().any(|n| n == name)
    }

    /// Make the table hold the configured streams and the instances whose base is still
    /// configured (with the base's settings as they are now).
    fn publish(&self, applied: &mut Applied, rules: &StartRules<'_>) -> Changes {
        let Applied {
            configured,
            instances,
        } = applied;
        instances.retain(|(base, wildcard)| {
            configured
                .iter()
                .any(|c| &c.name == base && c.instance(wildcard).is_ok())
        });
        self.instance_names.store(Arc::new(
            instances.iter().map(|(b, w)| format!("{b}+{w}")).collect(),
        ));
        self.applied.store(Arc::new(Applied {
            configured: configured.clone(),
            instances: instances.clone(),
        }));
        let mut configs = configured.clone();
        for (base, wildcard) in instances.iter() {
            if let Some(instance) = configured
                .iter()
                .find(|c| &c.name == base)
                .and_then(|c| c.instance(wildcard).ok())
            {
                configs.push(instance);
            }
        }
        let configs = &configs;
        let old = self.catalog.load_full();
        let shards = self.wakers.len().max(1);
        let mut slots = old.slots.clone();
        let mut changes = Changes::default();
        for slot in slots.iter_mut() {
            let Some(info) = slot.as_ref() else { continue };
            match configs.iter().find(|c| c.name == info.name) {
                None => {
                    changes.removed.push(info.name.clone());
                    *slot = None;
                }
                Some(c) if *c != info.config => {
                    changes.changed.push(info.name.clone());
                    *slot = Some(rules.start(c, info.home, shards));
                }
                Some(_) => {}
            }
        }
        for c in configs {
            if slots.iter().flatten().any(|s| s.name == c.name) {
                continue;
            }
            let mut at_home = vec![0usize; shards];
            for s in slots.iter().flatten() {
                at_home[s.home] += 1;
            }
            let home = (0..shards).min_by_key(|&s| at_home[s]).unwrap_or(0);
            let info = Some(rules.start(c, home, shards));
            match slots.iter_mut().find(|s| s.is_none()) {
                Some(free) => *free = info,
                None => slots.push(info),
            }
            changes.added.push(c.name.clone());
        }
        if changes.is_empty() {
            return changes;
        }
        while slots.last().is_some_and(Option::is_none) {
            slots.pop();
        }
        self.catalog.store(Arc::new(Catalog {
            generation: old.generation + 1,
            slots,
            fallback: old.fallback,
        }));
        for w in &self.wakers {
            w.wake();
        }
        self.news.notify_one();
        changes
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::SourceSpec;

    fn stream(name: &str, window_s: f64) -> StreamConfig {
        StreamConfig {
            name: name.into(),
            source: SourceSpec::Demo,
            source_url: "demo:".into(),
            source_urls: "demo:".into(),
            window_s,
            hls: Default::default(),
            access: None,
            limits: Default::default(),
            wildcard: None,
            required: false,
            push: Vec::new(),
            record: None,
        }
    }

    #[derive(Debug)]
    struct NoWake;
    impl Wake for NoWake {
        fn wake(&self) {}
    }

    #[test]
    fn keeps_unchanged_streams_and_reuses_slots() {
        let wakers: Vec<Arc<dyn Wake>> = vec![Arc::new(NoWake), Arc::new(NoWake)];
        let t = Streams::new(&[stream("a", 10.0), stream("b", 10.0)], wakers);
        let first = t.load();
        assert_eq!(first.len(), 2);
        let (a_slot, a) = first.find("a").map(|(i, s)| (i, s.clone())).unwrap();
        let (_, b) = first.find("b").unwrap();
        assert_ne!(a.home, b.home, "spread over the shards");
        assert!(a.queues[a.home].is_none() && a.queues[1 - a.home].is_some());

        let changes = t.apply(&[stream("a", 10.0), stream("b", 5.0), stream("c", 10.0)]);
        assert_eq!(changes.added, ["c"]);
        assert_eq!(changes.changed, ["b"]);
        assert!(changes.removed.is_empty());
        let second = t.load();
        assert!(Arc::ptr_eq(second.find("a").unwrap().1, &a), "a untouched");
        assert!(!Arc::ptr_eq(second.find("b").unwrap().1, b), "b restarted");
        assert_eq!(second.generation, first.generation + 1);

        let changes = t.apply(&[stream("b", 5.0), stream("c", 10.0)]);
        assert_eq!(changes.removed, ["a"]);
        assert!(t.load().find("a").is_none());
        t.apply(&[stream("b", 5.0), stream("c", 10.0), stream("d", 10.0)]);
        assert_eq!(t.load().find("d").unwrap().0, a_slot, "a's slot reused");

        let unchanged = t.load().generation;
        assert!(t
            .apply(&[stream("b", 5.0), stream("c", 10.0), stream("d", 10.0)])
            .is_empty());
        assert_eq!(t.load().generation, unchanged);
    }
}
