//! A recorded TS file's index: where in the file a player may start (an access point), at which
//! media time and at which wall-clock time. The recorder builds it as it writes and leaves it
//! beside the file (`NAME.idx`, text, written atomically before the file gets its name); a
//! file without one (recorded by something else, or its index lost) is read once to make it
//! ([`scan`]).
//!
//! ```text
//!  shardcast-index 1
//!  end BYTES MEDIA_MS
//!  ap OFFSET MEDIA_MS WALL_MS|- 0|1     one per access point, the last field a discontinuity
//! ```
//!
//! Media time is counted from the file's PCRs (on the first PID that carries one); a PCR that
//! goes back or leaps more than a second is a new source: no time is counted across it and
//! the next access point is marked as a discontinuity. Access points closer than
//! [`MIN_GAP_MS`] to the previous one are not listed (a segment is never shorter), and a file
//! lists at most [`MAX_POINTS`] (past it, segments grow: the index of a file recorded without
//! rotation for weeks stays bounded).

use super::Packet;
use std::io::Read;

/// The first line of an index file.
pub const MAGIC: &str = "shardcast-index 1";
/// Access points closer than this to the previous one are not listed.
pub const MIN_GAP_MS: u64 = 500;
/// At most this many access points per file.
pub const MAX_POINTS: usize = 200_000;
/// A PCR step larger than this (or backwards) is a new source, not media time.
pub const PCR_JUMP_MS: u64 = 1_000;
const PACKET: usize = 188;

/// A place in the file where a player may start.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AccessPoint {
    /// Its byte offset (a PAT, the PMT and a keyframe begin there).
    pub offset: u64,
    /// Media time from the start of the file, ms.
    pub media_ms: u64,
    /// When ingest received it (UNIX ms), if known: PROGRAM-DATE-TIME.
    pub wall_ms: Option<i64>,
    /// It follows a new source (the media time before it is not continuous with it).
    pub discontinuity: bool,
}

/// A file's access points, its length and its media duration.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Index {
    /// Access points, in file order.
    pub points: Vec<AccessPoint>,
    /// The file's length.
    pub bytes: u64,
    /// Media time of the whole file, ms.
    pub media_ms: u64,
}

/// Why an index file could not be read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("index line {line}: {why}")]
pub struct IndexError {
    /// Which line (1-based).
    pub line: usize,
    /// What is wrong with it.
    pub why: &'static str,
}

impl Index {
    /// The index as its file holds it.
    pub fn to_text(&self) -> String {
        let mut out = format!("{MAGIC}\nend {} {}\n", self.bytes, self.media_ms);
        for p in &self.points {
            let wall = p.wall_ms.map_or("-".to_owned(), |w| w.to_string());
            out.push_str(&format!(
                "ap {} {} {} {}\n",
                p.offset,
                p.media_ms,
                wall,
                u8::from(p.discontinuity)
            ));
        }
        out
    }

    /// Read an index file's text. Points must be in order, within the file and within its
    /// media time; at most [`MAX_POINTS`].
    pub fn parse(text: &str) -> Result<Index, IndexError> {
        let mut lines = text.lines().enumerate().map(|(i, l)| (i + 1, l));
        let err = |line, why| IndexError { line, why };
        match lines.next() {
            Some((_, MAGIC)) => {}
            _ => return Err(err(1, "not a shardcast index (version 1)")),
        }
        let (n, end) = lines.next().ok_or(err(2, "no end line"))?;
        let mut fields = end.split(' ');
        let (Some("end"), Some(bytes), Some(media), None) =
            (fields.next(), fields.next(), fields.next(), fields.next())
        else {
            return Err(err(n, "expected: end BYTES MEDIA_MS"));
        };
        let mut index = Index {
            points: Vec::new(),
            bytes: bytes.parse().map_err(|_| err(n, "bytes is not a number"))?,
            media_ms: media
                .parse()
                .map_err(|_| err(n, "media time is not a number"))?,
        };
        for (n, line) in lines {
            if index.points.len() >= MAX_POINTS {
                return Err(err(n, "too many access points"));
            }
            let mut f = line.split(' ');
            let (Some("ap"), Some(offset), Some(media), Some(wall), Some(disc), None) =
                (f.next(), f.next(), f.next(), f.next(), f.next(), f.next())
            else {
                return Err(err(n, "expected: ap OFFSET MEDIA_MS WALL_MS DISCONTINUITY"));
            };
            let point = AccessPoint {
                offset: offset.parse().map_err(|_| err(n, "bad offset"))?,
                media_ms: media.parse().map_err(|_| err(n, "bad media time"))?,
                wall_ms: match wall {
                    "-" => None,
                    w => Some(w.parse().map_err(|_| err(n, "bad wall-clock time"))?),
                },
                discontinuity: match disc {
                    "0" => false,
                    "1" => true,
                    _ => return Err(err(n, "discontinuity is 0 or 1")),
                },
            };
            let in_order = index
                .points
                .last()
                .is_none_or(|p| p.offset < point.offset && p.media_ms <= point.media_ms);
            if !in_order || point.offset >= index.bytes || point.media_ms > index.media_ms {
                return Err(err(n, "access point out of order or past the end"));
            }
            index.points.push(point);
        }
        Ok(index)
    }

    /// The file cut into segments of about `target_ms` each (at least that long, except the
    /// last and those before a discontinuity), at access points. The first begins at the
    /// start of the file, whatever is before its first access point.
    pub fn segments(&self, target_ms: u64) -> Vec<VodSegment> {
        let mut cuts: Vec<&AccessPoint> = Vec::new();
        for p in &self.points {
            let Some(last) = cuts.last() else {
                cuts.push(p);
                continue;
            };
            if p.discontinuity || p.media_ms.saturating_sub(last.media_ms) >= target_ms {
                cuts.push(p);
            }
        }
        let mut segments = Vec::with_capacity(cuts.len().max(1));
        let mut start = (0, 0, cuts.first().and_then(|p| p.wall_ms), false);
        // The first segment takes what comes before the first access point (tables, or the
        // end of a picture the file began inside).
        for p in cuts.iter().skip(1) {
            segments.push(VodSegment {
                range: start.0..p.offset,
                duration_ms: p.media_ms.saturating_sub(start.1),
                wall_ms: start.2,
                discontinuity: start.3,
            });
            start = (p.offset, p.media_ms, p.wall_ms, p.discontinuity);
        }
        if self.bytes > start.0 {
            segments.push(VodSegment {
                range: start.0..self.bytes,
                duration_ms: self.media_ms.saturating_sub(start.1),
                wall_ms: start.2,
                discontinuity: start.3,
            });
        }
        segments
    }
}

/// One segment of a recording's VOD playlist: a byte range of the file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VodSegment {
    /// Its bytes in the file.
    pub range: std::ops::Range<u64>,
    /// Its media duration, ms.
    pub duration_ms: u64,
    /// When its first access point was received (UNIX ms), if known.
    pub wall_ms: Option<i64>,
    /// It follows a new source.
    pub discontinuity: bool,
}

/// A packet's PID and PCR (ms), if it has one.
fn pcr_of(p: &[u8]) -> Option<(u16, u64)> {
    let packet = Packet::new(p.try_into().ok()?).ok()?;
    Some((packet.pid().value(), packet.pcr()?.base / 90))
}

/// Builds an [`Index`] from what is written, chunk by chunk (sans I/O).
#[derive(Debug, Default)]
pub struct IndexBuilder {
    index: Index,
    pcr_pid: Option<u16>,
    first_pcr_ms: Option<u64>,
    last_pcr_ms: Option<u64>,
    /// A PCR leapt since the last access point listed.
    jumped: bool,
}

impl IndexBuilder {
    /// `data` (whole packets) follows what came before; it begins at an access point when
    /// `access_point` (received at `wall_ms`).
    pub fn chunk(&mut self, data: &[u8], access_point: bool, wall_ms: Option<i64>) {
        if access_point {
            // Timed by its own first PCR (a keyframe's comes with it).
            let first = self.first_pcr(data);
            self.advance(first);
            self.point(wall_ms);
        }
        for (pid, ms) in data.chunks_exact(PACKET).filter_map(pcr_of) {
            if *self.pcr_pid.get_or_insert(pid) == pid {
                self.advance(Some(ms));
            }
        }
        self.index.bytes += data.len() as u64;
    }

    /// The media time counted up to the first PCR of `data` (what follows what was built).
    pub fn media_ms_at(&self, data: &[u8]) -> u64 {
        self.index.media_ms + self.step(self.first_pcr(data)).unwrap_or(0)
    }

    /// Media time so far, ms.
    pub fn media_ms(&self) -> u64 {
        self.index.media_ms
    }

    /// The first and the last PCR seen, ms.
    pub fn pcr_range_ms(&self) -> (Option<u64>, Option<u64>) {
        (self.first_pcr_ms, self.last_pcr_ms)
    }

    /// The index of what was built, for a file that ended up `bytes` long (a write that
    /// failed may have left less than was given).
    pub fn finish(mut self, bytes: u64) -> Index {
        self.index.bytes = bytes;
        self.index.points.retain(|p| p.offset < bytes);
        self.index
    }

    fn first_pcr(&self, data: &[u8]) -> Option<u64> {
        data.chunks_exact(PACKET)
            .filter_map(pcr_of)
            .find(|(pid, _)| self.pcr_pid.is_none_or(|want| want == *pid))
            .map(|(_, ms)| ms)
    }

    /// The media time from the last PCR to `pcr`: `None` across a leap.
    fn step(&self, pcr: Option<u64>) -> Option<u64> {
        match (self.last_pcr_ms, pcr) {
            (Some(last), Some(ms)) if ms >= last && ms - last <= PCR_JUMP_MS => Some(ms - last),
            (None, _) | (_, None) => Some(0),
            _ => None,
        }
    }

    fn advance(&mut self, pcr: Option<u64>) {
        let Some(ms) = pcr else { return };
        match self.step(Some(ms)) {
            Some(step) => self.index.media_ms += step,
            None => self.jumped = true,
        }
        self.first_pcr_ms.get_or_insert(ms);
        self.last_pcr_ms = Some(ms);
    }

    fn point(&mut self, wall_ms: Option<i64>) {
        if self.index.points.len() >= MAX_POINTS {
            return;
        }
        let discontinuity = self.jumped && !self.index.points.is_empty();
        if let Some(last) = self.index.points.last() {
            if !discontinuity && self.index.media_ms - last.media_ms < MIN_GAP_MS {
                return;
            }
        }
        self.jumped = false;
        self.index.points.push(AccessPoint {
            offset: self.index.bytes,
            media_ms: self.index.media_ms,
            wall_ms,
            discontinuity,
        });
    }
}

/// Make the index of a TS file that has none, reading it once: an access point is a PAT
/// followed, before the next PAT, by the start of a PES marked random access on the PID that
/// carries the PCRs (a keyframe: encoders mark them so, and carry the PCR on the video; audio
/// frames are marked too, and are not access points). No wall-clock times are known.
pub fn scan(file: impl Read, len: u64) -> std::io::Result<Index> {
    let mut reader = std::io::BufReader::with_capacity(1 << 20, file);
    let mut builder = IndexBuilder::default();
    // From one PAT to the next: a candidate access point and whether a keyframe is in it.
    let mut run: Vec<u8> = Vec::with_capacity(64 * 1024);
    let mut keyframe = false;
    let mut at_pat = false;
    let mut packet = [0u8; PACKET];
    loop {
        match reader.read_exact(&mut packet) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => break,
            Err(e) => return Err(e),
        }
        let Ok(parsed) = Packet::new(&packet) else {
            // Not a packet (lost sync): counted as bytes, nothing else.
            run.extend_from_slice(&packet);
            continue;
        };
        if parsed.pid().value() == 0 && parsed.payload_unit_start() {
            builder.chunk(&run, at_pat && keyframe, None);
            run.clear();
            keyframe = false;
            at_pat = true;
        }
        keyframe |= parsed.random_access()
            && parsed.payload_unit_start()
            && (parsed.pcr().is_some() || builder.pcr_pid == Some(parsed.pid().value()));
        run.extend_from_slice(&packet);
        if run.len() >= 4 << 20 {
            // A run without PATs: no access point in it.
            builder.chunk(&run, false, None);
            run.clear();
            keyframe = false;
            at_pat = false;
        }
    }
    builder.chunk(&run, at_pat && keyframe, None);
    Ok(builder.finish(len))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A packet on `pid` with a PCR of `ms`, marked random access when `key`.
    fn pcr_packet(pid: u16, ms: u64, key: bool) -> [u8; PACKET] {
        let mut p = [0xFFu8; PACKET];
        p[0] = 0x47;
        p[1] = 0x40 | (pid >> 8) as u8;
        p[2] = pid as u8;
        p[3] = 0x30; // adaptation field and payload
        p[4] = 7;
        p[5] = 0x10 | if key { 0x40 } else { 0 };
        let base = ms * 90;
        p[6] = (base >> 25) as u8;
        p[7] = (base >> 17) as u8;
        p[8] = (base >> 9) as u8;
        p[9] = (base >> 1) as u8;
        p[10] = ((base & 1) << 7) as u8 | 0x7E;
        p[11] = 0;
        p
    }

    fn fixture(name: &str) -> Vec<u8> {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("testdata")
            .join(name);
        std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }

    #[test]
    fn a_file_is_indexed_at_its_keyframes_and_cut_into_segments_that_cover_it() {
        let data = fixture("h264_aac_720p25.ts");
        let index = scan(&data[..], data.len() as u64).unwrap();
        assert!(index.points.len() >= 2, "{index:?}");
        for p in &index.points {
            let at = p.offset as usize;
            // A PAT, then a keyframe marked random access before the next PAT.
            assert_eq!(&data[at + 1..at + 3], &[0x40, 0x00], "{p:?}");
        }
        assert!(index.media_ms > 1000, "{index:?}");
        for target in [1, 1000, 2000, 60_000] {
            let segments = index.segments(target);
            assert_eq!(segments.first().unwrap().range.start, 0);
            assert_eq!(segments.last().unwrap().range.end, data.len() as u64);
            for pair in segments.windows(2) {
                assert_eq!(pair[0].range.end, pair[1].range.start);
                assert!(
                    pair[0].duration_ms >= target.min(MIN_GAP_MS),
                    "{segments:?}"
                );
            }
            let total: u64 = segments.iter().map(|s| s.duration_ms).sum();
            assert_eq!(total, index.media_ms);
        }
        assert_eq!(Index::parse(&index.to_text()), Ok(index));
    }

    #[test]
    fn a_new_source_is_a_discontinuity_and_no_time_is_counted_across_it() {
        let mut builder = IndexBuilder::default();
        for s in 0..4u64 {
            builder.chunk(
                &pcr_packet(256, 10_000 + s * 1000, true),
                true,
                Some(s as i64),
            );
            builder.chunk(&pcr_packet(256, 10_500 + s * 1000, false), false, None);
        }
        // The source restarts with its clock at 0.
        for s in 0..3u64 {
            builder.chunk(&pcr_packet(256, s * 1000, true), true, None);
            builder.chunk(&pcr_packet(256, s * 1000 + 500, false), false, None);
        }
        let index = builder.finish(14 * PACKET as u64);
        let times: Vec<(u64, bool)> = index
            .points
            .iter()
            .map(|p| (p.media_ms, p.discontinuity))
            .collect();
        assert_eq!(
            times,
            [
                (0, false),
                (1000, false),
                (2000, false),
                (3000, false),
                (3500, true),
                (4500, false),
                (5500, false)
            ]
        );
        assert_eq!(index.media_ms, 6000);
        let segments = index.segments(2000);
        let cuts: Vec<(u64, u64, bool)> = segments
            .iter()
            .map(|s| {
                (
                    s.range.start / PACKET as u64,
                    s.duration_ms,
                    s.discontinuity,
                )
            })
            .collect();
        // Cut at 2 s, then before the new source, then 2 s on, then the rest.
        assert_eq!(
            cuts,
            [
                (0, 2000, false),
                (4, 1500, false),
                (8, 2000, true),
                (12, 500, false)
            ]
        );
    }

    #[test]
    fn access_points_are_thinned_and_bounded() {
        let mut builder = IndexBuilder::default();
        // A keyframe every 100 ms: one point per MIN_GAP_MS.
        for i in 0..50u64 {
            builder.chunk(&pcr_packet(256, i * 100, true), true, None);
        }
        let index = builder.finish(50 * PACKET as u64);
        assert_eq!(index.points.len(), 10);
        assert!(index
            .points
            .windows(2)
            .all(|w| w[1].media_ms - w[0].media_ms == MIN_GAP_MS));
        // Past the bound, nothing more is listed (a point every 0.5 s for ~28 h).
        let mut builder = IndexBuilder::default();
        for i in 0..(MAX_POINTS as u64 + 10) {
            builder.chunk(
                &pcr_packet(256, i * MIN_GAP_MS % 3_600_000, true),
                true,
                None,
            );
        }
        assert_eq!(builder.index.points.len(), MAX_POINTS);
    }

    #[test]
    fn index_files_that_do_not_describe_a_file_are_refused() {
        let good = "shardcast-index 1\nend 1000 5000\nap 0 0 - 0\nap 376 1000 1796089321357 1\n";
        let index = Index::parse(good).unwrap();
        assert_eq!(index.points[1].wall_ms, Some(1796089321357));
        assert!(index.points[1].discontinuity);
        for (bad, line) in [
            ("shardcast-index 2\nend 1 1\n", 1),
            ("shardcast-index 1\n", 2),
            ("shardcast-index 1\nend x 1\n", 2),
            (
                "shardcast-index 1\nend 1000 5000\nap 376 0 - 0\nap 0 0 - 0\n",
                4,
            ),
            ("shardcast-index 1\nend 1000 5000\nap 1000 0 - 0\n", 3),
            ("shardcast-index 1\nend 1000 5000\nap 0 6000 - 0\n", 3),
            ("shardcast-index 1\nend 1000 5000\nap 0 0 - 2\n", 3),
            ("shardcast-index 1\nend 1000 5000\nap 0 0 -\n", 3),
        ] {
            assert_eq!(Index::parse(bad).map_err(|e| e.line), Err(line), "{bad:?}");
        }
    }
}
