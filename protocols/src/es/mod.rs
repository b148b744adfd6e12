//! Elementary stream scanning: where pictures and audio frames start, and which pictures are
//! keyframes, read from the bitstream itself.
//!
//! What it does: finds Annex B NAL units and the first bits of each slice header (H.264,
//! ITU-T H.264 §7.3; H.265, ITU-T H.265 §7.3) to count pictures and spot IDR / IRAP pictures,
//! and walks audio frame headers (ADTS, MPEG audio, AC-3, E-AC-3) to count frames.
//!
//! What it does not do: decode, remove emulation prevention bytes beyond the few header bits it
//! reads, or parse parameter sets in full.

mod audio;
mod nal;
pub mod params;

pub use audio::AudioCodec;
pub use audio::{AudioFrame, AudioScanner};
pub use nal::{NalScanner, Picture, VideoCodec, VideoScanner};
