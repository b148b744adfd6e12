//! MPEG transport stream (ISO/IEC 13818-1), sans-IO.
//!
//! What it does: finds packets in arbitrary byte chunks ([`PacketSync`]), reads their headers and
//! adaptation fields ([`Packet`]), checks continuity per PID ([`ContinuityTracker`]), assembles
//! and checks PSI sections ([`psi`]), reads PES headers with 33-bit timestamps ([`pes`]), ties it
//! together with keyframe detection ([`Demuxer`]) and cuts HLS segments ([`Segmenter`]). It
//! also writes: one program's access units as packets ([`mux::Muxer`]).
//!
//! What it does not do: descramble, interpret SI tables beyond PAT/PMT, or rewrite elementary
//! streams. Private and data PIDs (SCTE-35, DVB subtitles, teletext) are recognised and carried
//! through byte for byte.

mod assemble;
mod continuity;
mod demux;
pub mod index;
pub mod mux;
pub mod pacer;
mod packet;
pub mod pes;
pub mod probe;
pub mod psi;
mod segmenter;
mod sync;
mod types;

pub use assemble::{AssembleError, Pes, PesAssembler};
pub use continuity::{Continuity, ContinuityTracker};
pub use demux::{DemuxConfig, DemuxError, DemuxEvent, DemuxStats, Demuxer, StreamStats};
pub use packet::{
    set_continuity_counter, AdaptationField, Packet, PacketError, Pcr, PACKET_SIZE, SYNC_BYTE,
};
pub use segmenter::{
    PartInfo, SegmentInfo, Segmenter, SegmenterConfig, SegmenterEvent, SegmenterStats,
};
pub use sync::{PacketSync, SyncStats};
pub use types::{Codec, ContinuityCounter, Pid, StreamKind, StreamType};
