//! Sans-IO protocol codecs for shardcast.
//!
//! This crate turns bytes into events and events into bytes. It never opens a socket, starts a
//! thread, reads a clock or logs: time comes in as an argument (90 kHz stream time or UNIX
//! nanoseconds given by the caller) and the caller owns every buffer it hands in.
//!
//! ```text
//!  datagrams / file chunks
//!    └─ rtp::unwrap           TS in RTP (RFC 2250) told from raw TS; rtp::Sequence counts gaps
//!    └─ ts::PacketSync        resync on 0x47, confirmed on following packets
//!         └─ ts::Demuxer      continuity per PID, PAT/PMT (CRC-32), PES headers (PTS/DTS),
//!              │              es::VideoScanner (H.264 IDR / H.265 IRAP), es::AudioScanner (frames)
//!              └─ ts::Segmenter  cuts at keyframes past a target duration (and into parts of
//!                   │            a part target, between access units), PAT+PMT first,
//!                   │            continuous counters, exact durations from PTS
//!                   └─ mp4::Remuxer  the same packets to fMP4, cut where the segmenter cuts
//!  ts::PesAssembler          whole PES packets of one PID, for remuxing
//!  mp4                       fragmented MP4 (CMAF): init segments and moof+mdat fragments of
//!                            H.264, H.265 and AAC; Annex B and ADTS converted (mp4::annexb)
//!  hls::MediaPlaylist / hls::MultivariantPlaylist  write and parse RFC 8216 playlists
//!                            (and draft-pantos-hls-rfc8216bis: parts, hints, skips)
//!  dash::Mpd                 write a live DASH manifest
//!  generator::Generator      a valid synthetic TS (H.264 + AAC) carrying wall-clock stamps
//! ```
//!
//! What it does not do: decode pictures or sound, or decide anything about delivery (windows,
//! caching, who gets which bytes): that is the engine's job.
//!
//! Every stream parser is incremental (input split at any byte gives the same result; RTP is
//! read a whole datagram at a time, as it comes), has explicit
//! limits, allocates nothing per packet on its steady-state path and never panics on any input;
//! fuzz targets under `fuzz/` check the last point.
#![forbid(unsafe_code)]

pub mod dash;
pub mod es;
pub mod flv;
pub mod generator;
pub mod hls;
pub mod mp4;
pub mod rtp;
pub mod ts;
