//! `file:///path/stream.ts[?program=N&bitrate=BITS]`: a transport stream file played in a
//! loop in real time, for tests and demos that want a real encoder's stream without one.
//!
//! The pace is the file's own: its average rate between the first and last PCR of one PID
//! in its first 4 MiB, or `bitrate=` (bits per second) when it has none. The home shard reads the file
//! as it plays, a tick's worth at a time (`pread`, from the page cache after the first loop),
//! so a file costs no more memory than the stream it carries. Each loop starts the file's
//! timestamps and continuity counters again: viewers see a discontinuity there, as with an
//! encoder that restarts. What it does not do: rewrite timestamps across loops, or follow a
//! file that grows.

use super::{SourceDriver, SourceError, SourceSpec};
use shardcast_protocols::ts::{Packet, PACKET_SIZE};
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::time::Duration;

/// A file source.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileSpec {
    /// The file (an absolute path).
    pub path: PathBuf,
    /// The program to take from an MPTS.
    pub program: Option<u16>,
    /// Bits per second, when the file's PCRs should not set the pace.
    pub bitrate: Option<u64>,
}

/// `file://` then an absolute path, after the scheme.
pub(super) fn parse(rest: &str) -> Result<SourceSpec, SourceError> {
    let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
    if !path.starts_with('/') {
        return Err(SourceError::Address(format!("file://{path}")));
    }
    let mut spec = FileSpec {
        path: PathBuf::from(path),
        program: None,
        bitrate: None,
    };
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let bad = || SourceError::Parameter(pair.to_owned());
        match key {
            "program" => spec.program = Some(value.parse().map_err(|_| bad())?),
            "bitrate" => {
                spec.bitrate = Some(value.parse().ok().filter(|b| *b > 0).ok_or_else(bad)?)
            }
            _ => return Err(bad()),
        }
    }
    Ok(SourceSpec::File(spec))
}

/// How much of the file's start is searched for PCRs.
const PACE_SCAN: u64 = 4 << 20;

/// Most bytes one call hands over (a turn that comes late catches up over several).
const MOST_AT_ONCE: u64 = 1 << 20;

/// A file being played.
#[derive(Debug)]
pub(super) struct FileSource {
    spec: FileSpec,
    /// The file, its length in whole packets and its bytes per second; or why it cannot play.
    playing: Result<(std::fs::File, u64, f64), String>,
    /// Bytes handed over since the start, loops included.
    sent: u64,
    logged: bool,
}

impl FileSource {
    /// Open `spec`'s file and find its pace. A file that cannot be played is said once in the
    /// log; the stream then stays offline.
    pub(super) fn open(spec: &FileSpec) -> Self {
        let playing = Self::prepare(spec);
        Self {
            spec: spec.clone(),
            playing,
            sent: 0,
            logged: false,
        }
    }

    fn prepare(spec: &FileSpec) -> Result<(std::fs::File, u64, f64), String> {
        let file = std::fs::File::open(&spec.path)
            .map_err(|e| format!("cannot open {}: {e}", spec.path.display()))?;
        let length = file
            .metadata()
            .map_err(|e| format!("cannot read {}: {e}", spec.path.display()))?
            .len();
        let length = length - length % PACKET_SIZE as u64;
        if length == 0 {
            return Err(format!("{} holds no transport packet", spec.path.display()));
        }
        let rate = match spec.bitrate {
            Some(bits) => bits as f64 / 8.0,
            None => {
                let mut start = vec![0u8; length.min(PACE_SCAN) as usize];
                file.read_exact_at(&mut start, 0)
                    .map_err(|e| format!("cannot read {}: {e}", spec.path.display()))?;
                pace(&start).ok_or_else(|| {
                    format!(
                        "{} has no two PCRs of one PID in its first 4 MiB: give its bitrate (file://…?bitrate=BITS)",
                        spec.path.display()
                    )
                })?
            }
        };
        Ok((file, length, rate))
    }
}

/// Bytes per second between the first and the last PCR of the first PID that carries one
/// in `data` (whole packets from the file's start): the file's average rate, which the rate
/// between two neighbouring PCRs is not (a muxer bursts).
fn pace(data: &[u8]) -> Option<f64> {
    let mut first: Option<(u16, u64, usize)> = None;
    let mut last: Option<(u64, usize)> = None;
    for (i, bytes) in data.chunks_exact(PACKET_SIZE).enumerate() {
        let Ok(bytes) = <&[u8; PACKET_SIZE]>::try_from(bytes) else {
            continue;
        };
        let Ok(packet) = Packet::new(bytes) else {
            continue;
        };
        let Some(pcr) = packet.pcr() else { continue };
        let (pid, ticks) = (packet.pid().value(), pcr.ticks_27mhz());
        match first {
            None => first = Some((pid, ticks, i)),
            // Past a wrap of the clock, what came before is enough.
            Some((p, t, _)) if p == pid && ticks > t => last = Some((ticks, i)),
            Some((p, _, _)) if p == pid => break,
            Some(_) => {}
        }
    }
    let ((_, t0, i0), (t1, i1)) = (first?, last?);
    let seconds = (t1 - t0) as f64 / 27_000_000.0;
    Some(((i1 - i0) * PACKET_SIZE) as f64 / seconds)
}

impl SourceDriver for FileSource {
    fn program(&self) -> Option<u16> {
        self.spec.program
    }

    fn next_due(&self) -> Option<Duration> {
        let (_, _, rate) = self.playing.as_ref().ok()?;
        Some(Duration::from_secs_f64(
            (self.sent + PACKET_SIZE as u64) as f64 / rate,
        ))
    }

    fn due(&mut self, elapsed: Duration, _unix_ns: u64, out: &mut Vec<u8>) {
        let (file, length, rate) = match &self.playing {
            Ok(p) => p,
            Err(why) => {
                if !self.logged {
                    tracing::error!("{why}; the stream stays offline");
                    self.logged = true;
                }
                return;
            }
        };
        let target = (elapsed.as_secs_f64() * rate) as u64;
        let mut wanted = target.saturating_sub(self.sent).min(MOST_AT_ONCE);
        wanted -= wanted % PACKET_SIZE as u64;
        while wanted > 0 {
            let at = self.sent % length;
            let take = wanted.min(length - at);
            let start = out.len();
            out.resize(start + take as usize, 0);
            if let Err(e) = file.read_exact_at(&mut out[start..], at) {
                out.truncate(start);
                tracing::error!("cannot read {}: {e}", self.spec.path.display());
                return;
            }
            self.sent += take;
            wanted -= take;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shardcast_protocols::generator::{Generator, GeneratorConfig};

    fn stream(seconds: u64) -> Vec<u8> {
        let mut g = Generator::new(GeneratorConfig::default()).expect("default settings");
        let mut out = Vec::new();
        let mut p = [0u8; PACKET_SIZE];
        while g.packet_time_ns(g.packets()) < seconds * 1_000_000_000 {
            g.next_packet(&mut p);
            out.extend_from_slice(&p);
        }
        out
    }

    #[test]
    fn urls() {
        let SourceSpec::File(f) =
            SourceSpec::parse("file:///srv/a.ts?program=2&bitrate=8000").expect("valid")
        else {
            panic!("not a file source")
        };
        assert_eq!(
            f,
            FileSpec {
                path: "/srv/a.ts".into(),
                program: Some(2),
                bitrate: Some(8000)
            }
        );
        assert!(SourceSpec::parse("file://relative.ts").is_err());
        assert!(SourceSpec::parse("file:///a.ts?bitrate=0").is_err());
        assert!(SourceSpec::parse("file:///a.ts?loop=no").is_err());
    }

    #[test]
    fn plays_in_real_time_at_the_pace_of_its_pcrs_and_loops() {
        let data = stream(3);
        let path = std::env::temp_dir().join(format!("shardcast-file-{}.ts", std::process::id()));
        std::fs::write(&path, &data).expect("temp file");
        let spec = FileSpec {
            path: path.clone(),
            program: None,
            bitrate: None,
        };
        let mut source = FileSource::open(&spec);
        let (_, length, rate) = *source.playing.as_ref().expect("plays");
        assert_eq!(length, data.len() as u64);
        // The generator's mux rate, measured between PCRs.
        let expected = data.len() as f64 / 3.0;
        assert!(
            (rate / expected - 1.0).abs() < 0.1,
            "{rate} B/s against {expected}"
        );
        let mut out = Vec::new();
        // Every 10 ms for 5 s: about 5 s of bytes, whole packets, the file again after 3 s.
        for ms in (10..=5000).step_by(10) {
            source.due(Duration::from_millis(ms), 0, &mut out);
        }
        assert_eq!(out.len() % PACKET_SIZE, 0);
        let seconds = out.len() as f64 / rate;
        assert!((4.9..=5.01).contains(&seconds), "{seconds} s of stream");
        assert_eq!(&out[..data.len()], &data[..], "the file, as it is");
        assert_eq!(
            &out[data.len()..data.len() + 188],
            &data[..188],
            "then again"
        );
        std::fs::remove_file(&path).ok();
        let missing = FileSource::open(&FileSpec {
            path: "/nonexistent/a.ts".into(),
            ..spec
        });
        assert!(missing.next_due().is_none());
    }
}
