//! The CMAF (fragmented MP4) rendition of a stream's segments and parts: made by the
//! packager's remuxer beside the MPEG-TS bytes, cut at the same places, shared the same way.
//!
//! ```text
//!  /{stream}/cmaf/index.m3u8         media playlist (EXT-X-MAP; parts when low-latency)
//!  /{stream}/cmaf/master.m3u8        multivariant playlist
//!  /{stream}/cmaf/init-{n}.mp4       init segment n (a new one when the tracks change)
//!  /{stream}/cmaf/{sequence}.m4s     segment: its fragments back to back
//!  /{stream}/cmaf/{seq}.{part}.m4s   part: one fragment
//! ```
//!
//! Carried: H.264, H.265 and AAC (ADTS); other codecs stay in the MPEG-TS rendition only.

use bytes::Bytes;
use shardcast_protocols::mp4::{Codec, Track};
use std::sync::Arc;

/// An init segment (`ftyp` + `moov`), by the generation the remuxer made it in.
#[derive(Debug)]
pub struct InitSegment {
    /// Which of the stream's init segments it is (its URL: `init-{generation}.mp4`).
    pub generation: u64,
    /// The bytes.
    pub bytes: Bytes,
    /// The tracks' codecs, RFC 6381 (`avc1.64001f`, `mp4a.40.2`), video first.
    pub codecs: Vec<String>,
    /// Picture size, when there is video.
    pub resolution: Option<(u16, u16)>,
    /// Audio sampling rate, when there is audio.
    pub sample_rate: Option<u32>,
    /// Entity tag, quoted.
    pub etag: String,
}

impl InitSegment {
    /// Init segment `generation` of `tracks`.
    pub fn new(generation: u64, bytes: Bytes, tracks: &[Track]) -> Self {
        let codecs = tracks.iter().filter_map(codec_string).collect();
        let resolution = tracks
            .iter()
            .find(|t| !matches!(t.codec, Codec::Aac { .. }))
            .map(|t| (t.width, t.height));
        let sample_rate = tracks.iter().find_map(|t| match t.codec {
            Codec::Aac { sample_rate, .. } => Some(sample_rate),
            _ => None,
        });
        let etag = format!("\"init-{generation:x}-{:x}\"", bytes.len());
        Self {
            generation,
            bytes,
            codecs,
            resolution,
            sample_rate,
            etag,
        }
    }

    /// Its name in playlists and manifests.
    pub fn uri(&self) -> String {
        format!("init-{}.mp4", self.generation)
    }
}

/// A segment's CMAF rendition.
#[derive(Debug)]
pub struct CmafSegment {
    /// The init segment its fragments need.
    pub init: Arc<InitSegment>,
    /// Its fragments, back to back.
    pub bytes: Bytes,
}

/// What a window publishes of the CMAF rendition.
#[derive(Debug, Clone)]
pub struct CmafRendition {
    /// `/{stream}/cmaf/index.m3u8`.
    pub playlist: Bytes,
    /// `/{stream}/cmaf/master.m3u8`.
    pub master: Bytes,
    /// The media playlist's delta update, when it skips anything.
    pub delta: Option<Bytes>,
    /// The init segments the fetchable segments need, oldest first (the last is current).
    pub inits: Vec<Arc<InitSegment>>,
}

impl CmafRendition {
    /// Init segment `generation`, if a fetchable segment needs it.
    pub fn init(&self, generation: u64) -> Option<&Arc<InitSegment>> {
        self.inits.iter().find(|i| i.generation == generation)
    }
}

/// The RFC 6381 codec string of a track, from its configuration.
fn codec_string(track: &Track) -> Option<String> {
    match &track.codec {
        Codec::H264 { sps, .. } => {
            let sps = sps.first()?;
            // profile_idc, constraint flags, level_idc follow the NAL header.
            let (p, c, l) = (sps.get(1)?, sps.get(2)?, sps.get(3)?);
            Some(format!("avc1.{p:02x}{c:02x}{l:02x}"))
        }
        Codec::H265 { sps, .. } => {
            shardcast_protocols::es::params::h265_sps(sps.first()?).map(|p| p.codec)
        }
        Codec::Aac { config, .. } => {
            let object_type = config.first()? >> 3;
            Some(format!("mp4a.40.{object_type}"))
        }
    }
}
