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

fn demux(c: &mut Criterion) {
    let mut group = c.benchmark_group("demux");
    group.sample_size(20);
    for (name, data) in [
        ("x264_720p_fixture", fixture()),
        ("generator_640x360_8mbit", stream()),
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
                assert!(pictures > 0);
                pictures
            })
        });
    }
    group.finish();
}

criterion_group!(benches, demux);
criterion_main!(benches);
