//! Recording: a stream written to MPEG-TS files, cut at access points, with retention.
//!
//! A stream's `record = { path = "…/{stream}/{start}.ts", rotate = 3600, max_age = …,
//! max_bytes = … }` (or `POST /api/v1/streams/{name}/recording`). Each recording is a thread
//! of its own (a slow or full disk blocks only it) that reads the stream's tap:
//!
//! - a file starts at an access point (PAT, PMT, keyframe) and is written as `NAME.part`; once
//!   it ends (rotation, stop, the stream's end, a write error) it is flushed, synced, its
//!   index is written beside it (`NAME.idx`: its access points, media and wall-clock times,
//!   for playing it back as VOD HLS, see [`crate::vod`]), it is renamed to `NAME`, and
//!   `RECORDING_END` fires for it;
//! - rotation: at the first access point once the file holds `rotate` seconds of media
//!   (measured by its PCRs; 0: never);
//! - a source that restarts goes on in the same file (a discontinuity inside it);
//! - a write that fails (a full disk) ends the file with what it holds, logs, counts and fires
//!   `RECORDING_END`; nothing is queued meanwhile, and a new file is tried every
//!   [`RETRY`] at the next access point, so the recording resumes when space returns;
//! - retention, after each file and at the start: in the directory of the path, the files
//!   the template names (the same text before and after `{start…}`) older than `max_age`, then
//!   the oldest while they hold more than `max_bytes`, are removed (with their indexes).
//!
//! Path templates: `{stream}`, `{start}` (UTC, `20261130-224010`), `{start:%Y-%m-%d_%H%M%S}`
//! (`%Y %m %d %H %M %S %s %%`).

use super::{PushOut, RecordSpec};
use crate::control::triggers::TriggerSet;
use crate::output::push_target::render;
use crate::stream::tap::{Accept, Follow};
use shardcast_protocols::ts::index::IndexBuilder;
use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

/// How long after a failed write a new file is tried.
pub const RETRY: Duration = Duration::from_secs(5);
/// Bytes buffered before a write.
const BUFFER: usize = 256 * 1024;

/// The files of a recording's directory its template names: the same text before and after
/// `{start…}` in the file name.
fn ours(template_file: &str, stream: &str, name: &str) -> bool {
    let Some(open) = template_file.find("{start") else {
        return false;
    };
    let close = template_file[open..]
        .find('}')
        .map_or(template_file.len(), |c| open + c + 1);
    let prefix = template_file[..open].replace("{stream}", stream);
    let suffix = template_file[close..].replace("{stream}", stream);
    name.len() > prefix.len() + suffix.len()
        && name.starts_with(&prefix)
        && name.ends_with(&suffix)
        && !name.ends_with(".part")
        && !name.ends_with(".idx")
}

/// Where file `name` of `stream`'s recording with path `template` is, when it is one the
/// template names (and so one of its finished files, if it exists).
pub fn file_path(template: &str, stream: &str, name: &str) -> Option<PathBuf> {
    let template_file = template.rsplit('/').next().unwrap_or("");
    if name.contains('/') || !ours(template_file, stream, name) {
        return None;
    }
    Some(render_dir(template, stream).parent()?.join(name))
}

/// Where the index of recording `path` is.
pub fn index_path(path: &std::path::Path) -> PathBuf {
    let mut idx = path.as_os_str().to_owned();
    idx.push(".idx");
    PathBuf::from(idx)
}

/// One recorded file: what `RECORDING_END` and the API say of it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FileRecord {
    /// Where it is.
    pub path: PathBuf,
    /// Bytes written.
    pub bytes: u64,
    /// When writing started and ended, UNIX ms.
    pub started_ms: i64,
    /// When it ended, UNIX ms.
    pub ended_ms: i64,
    /// Media time written (by the PCRs), ms.
    pub media_ms: u64,
    /// The first and last PCR written, ms.
    pub first_pcr_ms: Option<u64>,
    /// The last.
    pub last_pcr_ms: Option<u64>,
}

/// The file being written.
struct Current {
    record: FileRecord,
    part: PathBuf,
    writer: std::io::BufWriter<std::fs::File>,
    /// Its access points and media time, as written.
    index: IndexBuilder,
}

/// Run the recording `push` until it stops (on its own thread).
pub(super) fn run(push: Arc<PushOut>, spec: RecordSpec, triggers: Option<Arc<TriggerSet>>) {
    let mut follow = Follow::default();
    let mut current: Option<Current> = None;
    let mut failed_until: Option<std::time::Instant> = None;
    retain(&spec, &push.stream);
    loop {
        if push.stopped() {
            break;
        }
        while let Some(chunk) = push.tap.take() {
            if follow.accept(&chunk) == Accept::Skip {
                continue;
            }
            if failed_until.is_some_and(|t| std::time::Instant::now() < t) {
                continue;
            }
            // The media time at this chunk's start: a keyframe's PCR comes with it.
            let rotate = current.as_ref().is_some_and(|c| {
                !spec.rotate.is_zero()
                    && c.index.media_ms_at(&chunk.data) >= spec.rotate.as_millis() as u64
            });
            if current.is_none() || rotate {
                if !chunk.access_point {
                    if current.is_none() {
                        continue;
                    }
                } else {
                    if let Some(mut c) = current.take() {
                        // It covers the media up to this keyframe.
                        c.record.media_ms = c.index.media_ms_at(&chunk.data);
                        finish(c, &push, &spec, triggers.as_deref());
                    }
                    match open(&spec, &push.stream) {
                        Ok(c) => {
                            failed_until = None;
                            push.counters.connected.store(true, Ordering::Relaxed);
                            current = Some(c);
                        }
                        Err(e) => {
                            fail(&push, &format!("cannot open a recording file: {e}"));
                            failed_until = Some(std::time::Instant::now() + RETRY);
                            continue;
                        }
                    }
                }
            }
            let Some(c) = current.as_mut() else { continue };
            if let Err(e) = c.writer.write_all(&chunk.data) {
                fail(&push, &format!("writing {} failed: {e}", c.part.display()));
                if let Some(c) = current.take() {
                    finish(c, &push, &spec, triggers.as_deref());
                }
                failed_until = Some(std::time::Instant::now() + RETRY);
                continue;
            }
            c.record.bytes += chunk.data.len() as u64;
            push.counters
                .bytes
                .fetch_add(chunk.data.len() as u64, Ordering::Relaxed);
            let wall_ms = (chunk.received_ns / 1_000_000) as i64;
            c.index
                .chunk(&chunk.data, chunk.access_point, Some(wall_ms));
            c.record.media_ms = c.index.media_ms();
            (c.record.first_pcr_ms, c.record.last_pcr_ms) = c.index.pcr_range_ms();
        }
        std::thread::park_timeout(Duration::from_millis(500));
    }
    if let Some(c) = current.take() {
        finish(c, &push, &spec, triggers.as_deref());
    }
    push.counters.connected.store(false, Ordering::Relaxed);
}

fn fail(push: &PushOut, why: &str) {
    push.counters.failures.fetch_add(1, Ordering::Relaxed);
    push.counters.connected.store(false, Ordering::Relaxed);
    tracing::warn!(stream = %push.stream, id = push.id, "recording: {why}; trying again in {} s", RETRY.as_secs());
    push.note(why.to_owned());
}

fn open(spec: &RecordSpec, stream: &str) -> std::io::Result<Current> {
    let now_ms = (crate::sys::unix_ns() / 1_000_000) as i64;
    let path = PathBuf::from(render(&spec.path, stream, now_ms));
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut part = path.clone().into_os_string();
    part.push(".part");
    let part = PathBuf::from(part);
    let file = std::fs::File::create(&part)?;
    Ok(Current {
        record: FileRecord {
            path,
            started_ms: now_ms,
            ..FileRecord::default()
        },
        part,
        writer: std::io::BufWriter::with_capacity(BUFFER, file),
        index: IndexBuilder::default(),
    })
}

/// End a file: flush, sync, rename, `RECORDING_END`, retention.
fn finish(c: Current, push: &PushOut, spec: &RecordSpec, triggers: Option<&TriggerSet>) {
    let Current {
        mut record,
        part,
        writer,
        index,
    } = c;
    record.ended_ms = (crate::sys::unix_ns() / 1_000_000) as i64;
    // A full disk may refuse the last of the buffer: the file keeps what it took.
    let file = match writer.into_inner() {
        Ok(file) => Some(file),
        Err(e) => {
            tracing::warn!(stream = %push.stream, "recording: the end of {} was not written: {}", part.display(), e.error());
            None
        }
    };
    if let Some(file) = &file {
        let _ = file.sync_all();
    }
    record.bytes = std::fs::metadata(&part).map_or(record.bytes, |m| m.len());
    if record.bytes == 0 {
        let _ = std::fs::remove_file(&part);
        return;
    }
    // The index before the name: a file listed has its index (or none, when this failed:
    // it is then made by reading the file).
    let mut index = index.finish(record.bytes);
    index.media_ms = index.media_ms.max(record.media_ms);
    if let Err(e) =
        crate::files::write_atomically(&index_path(&record.path), index.to_text().as_bytes())
    {
        tracing::warn!(stream = %push.stream, "recording: cannot write the index of {}: {e}", record.path.display());
    }
    if let Err(e) = std::fs::rename(&part, &record.path) {
        tracing::warn!(stream = %push.stream, "recording: cannot rename {}: {e}", part.display());
        return;
    }
    if let Some(dir) = record.path.parent() {
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
    }
    push.counters.files.fetch_add(1, Ordering::Relaxed);
    let line = format!(
        "{} ended: {} bytes, {:.1} s",
        record.path.display(),
        record.bytes,
        record.media_ms as f64 / 1000.0
    );
    tracing::info!(stream = %push.stream, id = push.id, "recording: {line}");
    push.note(line);
    if let Some(t) = triggers {
        // MistServer's payload: stream, path, protocol, bytes, seconds writing, start and
        // end (UNIX s), media duration, first and last media time (ms).
        let lines = [
            push.stream.clone(),
            record.path.display().to_string(),
            "TS".to_owned(),
            record.bytes.to_string(),
            ((record.ended_ms - record.started_ms) / 1000).to_string(),
            (record.started_ms / 1000).to_string(),
            (record.ended_ms / 1000).to_string(),
            record.media_ms.to_string(),
            record.first_pcr_ms.unwrap_or(0).to_string(),
            record.last_pcr_ms.unwrap_or(0).to_string(),
        ];
        let lines: Vec<&str> = lines.iter().map(String::as_str).collect();
        t.fire("RECORDING_END", Some(&push.stream), &lines);
    }
    retain(spec, &push.stream);
}

/// Remove what retention says goes (see the module docs).
fn retain(spec: &RecordSpec, stream: &str) {
    if spec.max_age.is_none() && spec.max_bytes.is_none() {
        return;
    }
    let template = render_dir(&spec.path, stream);
    let Some(dir) = template.parent() else { return };
    let template_file = spec.path.rsplit('/').next().unwrap_or("");
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let mut files: Vec<(std::time::SystemTime, u64, PathBuf)> = entries
        .flatten()
        .filter(|e| ours(template_file, stream, &e.file_name().to_string_lossy()))
        .filter_map(|e| {
            let m = e.metadata().ok()?;
            let modified = m.modified().ok()?;
            m.is_file().then(|| (modified, m.len(), e.path()))
        })
        .collect();
    files.sort();
    let now = std::time::SystemTime::now();
    let mut total: u64 = files.iter().map(|f| f.1).sum();
    for (modified, len, path) in files {
        let old = spec
            .max_age
            .is_some_and(|age| now.duration_since(modified).is_ok_and(|a| a > age));
        let over = spec.max_bytes.is_some_and(|max| total > max);
        if !old && !over {
            continue;
        }
        match std::fs::remove_file(&path) {
            Ok(()) => {
                let _ = std::fs::remove_file(index_path(&path));
                total -= len;
                tracing::info!(stream, "recording: removed {} (retention)", path.display());
            }
            Err(e) => tracing::warn!(stream, "recording: cannot remove {}: {e}", path.display()),
        }
    }
}

/// The template with `{stream}` filled in (and `{start}` as of the epoch: only its directory
/// is used, which must not depend on the time).
fn render_dir(template: &str, stream: &str) -> PathBuf {
    PathBuf::from(render(template, stream, 0))
}

/// The finished files of a recording, newest last (for the API).
pub fn files(template: &str, stream: &str) -> Vec<(String, u64, i64)> {
    let path = render_dir(template, stream);
    let Some(dir) = path.parent() else {
        return Vec::new();
    };
    let template_file = template.rsplit('/').next().unwrap_or("");
    let mut files: Vec<(String, u64, i64)> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| ours(template_file, stream, &e.file_name().to_string_lossy()))
        .filter_map(|e| {
            let m = e.metadata().ok()?;
            let modified = m
                .modified()
                .ok()?
                .duration_since(std::time::UNIX_EPOCH)
                .ok()?
                .as_secs() as i64;
            Some((
                e.file_name().to_string_lossy().into_owned(),
                m.len(),
                modified,
            ))
        })
        .collect();
    files.sort_by(|a, b| (a.2, &a.0).cmp(&(b.2, &b.0)));
    files
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retention_takes_the_files_the_template_names() {
        assert!(ours("{stream}-{start}.ts", "cam", "cam-20261130-224010.ts"));
        assert!(!ours(
            "{stream}-{start}.ts",
            "cam",
            "cam-20261130-224010.ts.part"
        ));
        assert!(!ours(
            "{stream}-{start}.ts",
            "cam",
            "other-20261130-224010.ts"
        ));
        assert!(!ours("{stream}-{start}.ts", "cam", "cam-.ts"));
    }
}
