//! Which changes of a configuration apply live and which wait for a restart.
//!
//! Streams and triggers apply live (the control plane's store starts, restarts and stops
//! streams and reconfigures triggers); every other setting is read once at start. The list of
//! the latter is not written by hand: it is every field of [`Config`]'s serialization (streams
//! and triggers are skipped there), under the names the file gives them, so a setting added
//! to `Config` is reported without anyone remembering to.

use super::Config;
use serde_json::{Map, Value};

impl Config {
    /// The settings that differ between this configuration and `new` and take effect only at
    /// the next restart, by their names in the file (`server.listen`, `api.token`).
    pub fn settings_needing_restart(&self, new: &Config) -> Vec<String> {
        let (old, new) = (settings(self), settings(new));
        old.iter()
            .filter(|(name, value)| new.get(name.as_str()) != Some(value))
            .map(|(name, _)| qualified(name))
            .collect()
    }
}

/// Every restart-time setting by its name.
fn settings(config: &Config) -> Map<String, Value> {
    match serde_json::to_value(config) {
        Ok(Value::Object(map)) => map,
        // A struct of plain values serializes to an object; were it ever not to, every setting
        // counts as changed rather than none.
        _ => Map::from_iter([("settings".to_owned(), Value::Null)]),
    }
}

/// `api.token` stays as it is; a server setting gets its table's name.
fn qualified(name: &str) -> String {
    if name.contains('.') {
        name.to_owned()
    } else {
        format!("server.{name}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(text: &str) -> Config {
        Config::parse(text).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn changed_settings_are_named_as_the_file_names_them() {
        let old = config("[[stream]]\nname = \"a\"\nsource = \"demo:\"\n");
        let new = config(
            "[server]\nheader_timeout = 5\nmax_queued = 65536\ntrusted_proxies = [\"10.0.0.0/8\"]\n\
             [api]\nlisten = \"off\"\n\
             [[stream]]\nname = \"b\"\nsource = \"demo:\"\n\
             [[trigger]]\non = \"STREAM_END\"\nhandler = \"/bin/true\"\n",
        );
        let mut changed = old.settings_needing_restart(&new);
        changed.sort();
        // Streams and triggers apply live: not listed.
        assert_eq!(
            changed,
            [
                "api.listen",
                "server.header_timeout",
                "server.max_queued",
                "server.trusted_proxies"
            ]
        );
        assert!(old.settings_needing_restart(&old.clone()).is_empty());
    }

    #[test]
    fn every_setting_reported_is_one_the_file_accepts() {
        // Each name and value the report is made of, written back into a file: the schema
        // must take it (so the names agree with what operators write).
        let c = Config::embedded();
        for (name, value) in settings(&c) {
            if value.is_null() {
                continue;
            }
            let (table, key) = name.split_once('.').unwrap_or(("server", &name));
            let value = match value {
                Value::String(s) => format!("{s:?}"),
                other => other.to_string(),
            };
            let text = format!("[{table}]\n{key} = {value}\n");
            if let Err(e) = Config::parse(&text) {
                panic!("{name} = {value} is refused: {e}");
            }
        }
    }
}
