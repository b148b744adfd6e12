//! Demux throughput: transport stream parsed, continuity-checked and keyframe-scanned per second.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure report

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use shardcast_protocols::generator::{Generator, GeneratorConfig};
use shardcast_protocols::ts::{DemuxConfig, DemuxEvent, Demuxer, PACKET_SIZE};

fn stream() -> Vec<u8> {
    let mut g = Generator::new(GeneratorConfig {
        bitrate: 8_000_000,
        width: 640,
        height: 360,
        ..GeneratorConfig::default()
    })
    .expect("valid generator settings");
    let mut out = Vec::new();
    let mut p = [0u8; PACKET_SIZE];
    while out.len() < 32 << 20 {
        g.next_packet(&mut p);
        out.extend_from_slice(&p);
    }
    out
}

/// The x264 720p fixture (dense CABAC video, B-frames, AAC) repeated to 32 MiB.
fn fixture() -> Vec<u8> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/testdata/h264_aac_720p25.ts");
    let one = std::fs::read(path).expect("fixture present");
    let mut out = Vec::with_capacity(33 << 20);
    while out.len() < 32 << 20 {
        out.extend_from_slice(&one);
    }
    out
}

/// A hostile source: a PMT of 30 streams that changes with every packet (two versions on
/// other PIDs, alternating), 32 MiB of it. What each packet costs must stay bounded.
fn flapping_pmt() -> Vec<u8> {
    use shardcast_protocols::ts::psi::{packetize_section, Pmt, PmtStream};
    use shardcast_protocols::ts::{Codec, ContinuityCounter, Pid, StreamType};
    let mut g = Generator::new(GeneratorConfig::default()).expect("valid generator settings");
    let mut out = Vec::new();
    let mut p = [0u8; PACKET_SIZE];
    // The generator's PAT (program 1 on PID 0x1000) first.
    for _ in 0..64 {
        g.next_packet(&mut p);
        out.extend_from_slice(&p);
    }
    let pmts: Vec<Vec<[u8; PACKET_SIZE]>> = [(0u8, 0x200u16), (1, 0x300)]
        .iter()
        .map(|&(version, base)| {
            let pmt = Pmt {
                program_number: 1,
                version,
                pcr_pid: Pid::from_bits(base),
                descriptors: vec![],
                streams: (0..30)
                    .map(|i| PmtStream {
                        stream_type: StreamType::H264,
                        pid: Pid::from_bits(base + i),
                        descriptors: vec![],
                        codec: Codec::H264,
                    })
                    .collect(),
            };
            let mut packets = Vec::new();
            packetize_section(
                &pmt.to_section(),
                Pid::from_bits(0x1000),
                ContinuityCounter::from_bits(0),
                &mut packets,
            );
            packets
        })
        .collect();
    let mut i = 0usize;
    while out.len() < 32 << 20 {
        let mut packet = pmts[i % 2][0];
        packet[3] = (packet[3] & 0xF0) | (i % 16) as u8;
        out.extend_from_slice(&packet);
        i += 1;
    }
    out
}

fn demux(c: &mut Criterion) {
    let mut group = c.benchmark_group("demux");
    group.sample_size(20);
    for (name, data) in [
        ("x264_720p_fixture", fixture()),
        ("generator_640x360_8mbit", stream()),
        ("pmt_changing_every_packet", flapping_pmt()),
    ] {
        group.throughput(Throughput::Bytes(data.len() as u64));
        group.bench_function(name, |b| {
            b.iter(|| {
                let mut d = Demuxer::new(DemuxConfig::default());
                let mut pictures = 0u64;
                d.push(&data, |e| {
                    if let DemuxEvent::Picture { .. } = e {
                        pictures += 1;
                    }
                });
                pictures
            })
        });
    }
    group.finish();
}

criterion_group!(benches, demux);
criterion_main!(benches);
