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

impl MediaInfo {
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
