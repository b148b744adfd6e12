//! What the multivariant playlist says about a stream's tracks.

/// Codecs, resolution and frame rate of a stream, as far as they are known.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MediaInfo {
    /// RFC 6381 string of the video track (e.g. `avc1.64001f`).
    pub video: Option<String>,
    /// RFC 6381 string of the audio track (e.g. `mp4a.40.2`).
    pub audio: Option<String>,
    /// Width and height of the video.
    pub resolution: Option<(u32, u32)>,
    /// Frames per second, thousandths.
    pub frame_rate_millis: Option<u32>,
}

/// Bytes at the start of a segment probed for its tracks (PAT, PMT and the keyframe with its
/// parameter sets come first).
const PROBE_BYTES: usize = 512 * 1024;

impl MediaInfo {
    /// What the start of a segment says about its tracks.
    pub fn probe(segment: &[u8]) -> MediaInfo {
        let end = segment.len().min(PROBE_BYTES) / 188 * 188;
        let tracks = shardcast_protocols::ts::probe::probe_tracks(&segment[..end]);
        MediaInfo {
            resolution: tracks.video.as_ref().map(|v| (v.width, v.height)),
            video: tracks.video.map(|v| v.codec),
            audio: tracks.audio,
            frame_rate_millis: None,
        }
    }

    /// The CODECS attribute: every known codec, comma-separated; `None` when none is known.
    pub fn codecs(&self) -> Option<String> {
        let known: Vec<&str> = [&self.video, &self.audio]
            .into_iter()
            .flatten()
            .map(String::as_str)
            .collect();
        (!known.is_empty()).then(|| known.join(","))
    }
}
