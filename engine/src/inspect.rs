//! `shardcast inspect`: a transport stream file through the ingest codecs, reported.
//!
//! It runs the same demuxer and segmenter as ingest, so what it prints is what the server would
//! see: programs and their streams, frames and keyframes per stream, continuity gaps, bad
//! packets and sections, and the segments (with exact durations) that HLS would serve.

use shardcast_protocols::ts::pes::CLOCK_90KHZ;
use shardcast_protocols::ts::{
    DemuxConfig, Demuxer, PacketSync, SegmentInfo, Segmenter, SegmenterConfig, SegmenterEvent,
};
use std::io::Read;
use std::path::PathBuf;

#[derive(clap::Args, Debug)]
pub struct InspectArgs {
    /// Transport stream file; `-` reads stdin.
    file: PathBuf,
    /// Follow only this program_number (an MPTS carries several).
    #[arg(long)]
    program: Option<u16>,
    /// Target segment duration in seconds for the segment listing.
    #[arg(long, default_value_t = 2.0)]
    segment: f64,
}

/// Why a file was not inspected.
#[derive(Debug, thiserror::Error)]
pub enum InspectError {
    /// `--segment` out of range.
    #[error("--segment {0} is out of range (0 to 3600 seconds)")]
    Segment(f64),
    /// The file cannot be opened.
    #[error("cannot open {}: {source}", path.display())]
    Open {
        /// The file.
        path: std::path::PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Reading failed part way.
    #[error("when reading {}: {source}", path.display())]
    Read {
        /// The file.
        path: std::path::PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

pub fn run(args: &InspectArgs) -> Result<(), InspectError> {
    if !(args.segment > 0.0 && args.segment <= 3600.0) {
        return Err(InspectError::Segment(args.segment));
    }
    let mut input: Box<dyn Read> = if args.file.as_os_str() == "-" {
        Box::new(std::io::stdin().lock())
    } else {
        let f = std::fs::File::open(&args.file).map_err(|source| InspectError::Open {
            path: args.file.clone(),
            source,
        })?;
        Box::new(f)
    };
    let mut demux = Demuxer::new(DemuxConfig {
        program: args.program,
    });
    let mut segmenter = Segmenter::new(SegmenterConfig {
        target_duration: (args.segment * CLOCK_90KHZ as f64) as u64,
        program: args.program,
        ..SegmenterConfig::default()
    });
    let mut sync = PacketSync::new();
    let mut segments: Vec<SegmentInfo> = Vec::new();
    let mut on_segment = |e: SegmenterEvent<'_>| {
        if let SegmenterEvent::SegmentEnd(info) = e {
            segments.push(info);
        }
    };
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = match input.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(source) => {
                return Err(InspectError::Read {
                    path: args.file.clone(),
                    source,
                })
            }
        };
        sync.push(&buf[..n], |p| {
            demux.push_packet(p, &mut |_| {});
            segmenter.push_packet(p, &mut on_segment);
        });
    }
    segmenter.finish(&mut on_segment);
    print_report(&demux, sync.stats().skipped_bytes, &segments, args.program);
    Ok(())
}

fn print_report(demux: &Demuxer, skipped: u64, segments: &[SegmentInfo], program: Option<u16>) {
    let stats = demux.stats();
    println!("packets {}  malformed {}  transport-errors {}  continuity-gaps {}  duplicates {}  bad-sections {}  bad-pes {}  bytes-skipped-for-sync {}",
        stats.packets, stats.malformed, stats.transport_errors, stats.continuity_gaps, stats.duplicates, stats.psi_errors, stats.pes_errors, skipped);
    match demux.pat() {
        Some(pat) => {
            let numbers: Vec<String> = pat
                .programs
                .iter()
                .map(|p| p.program_number.to_string())
                .collect();
            println!("programs in PAT: {}", numbers.join(", "));
            if let Some(n) =
                program.filter(|n| !pat.programs.iter().any(|p| p.program_number == *n))
            {
                println!("program {n} is not in the PAT");
            }
        }
        None => println!("no PAT found"),
    }
    for pmt in demux.pmts() {
        println!(
            "program {} (PMT version {}, PCR on {})",
            pmt.program_number, pmt.version, pmt.pcr_pid
        );
        for s in demux
            .streams()
            .filter(|s| s.program_number == pmt.program_number)
        {
            println!(
                "  pid {}  type {:#04x}  {:<14} frames {:>7}  keyframes {:>5}  pes {:>7}  continuity-gaps {}",
                s.pid,
                s.stream_type.0,
                format!("{:?}", s.codec),
                s.frames,
                s.keyframes,
                s.pes_packets,
                s.continuity_gaps
            );
        }
    }
    println!("segments: {}", segments.len());
    for s in segments {
        println!(
            "  #{:<5} {:>9.3} s  {:>7} packets{}",
            s.sequence,
            s.duration as f64 / CLOCK_90KHZ as f64,
            s.packets,
            if s.discontinuity {
                "  discontinuity"
            } else {
                ""
            }
        );
    }
}
