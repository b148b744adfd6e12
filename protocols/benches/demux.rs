//! Demux throughput: transport stream parsed, continuity-checked and keyframe-scanned per second.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use shardcast_protocols::generator::{Generator, GeneratorConfig};
use shardcast_protocols::ts::{DemuxConfig, Demuxer, PACKET_SIZE};

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

fn demux(c: &mut Criterion) {
    let data = stream();
    let mut group = c.benchmark_group("demux");
    group.throughput(Throughput::Bytes(data.len() as u64));
    group.sample_size(20);
    group.bench_function("generator_640x360_8mbit", |b| {
        b.iter(|| {
            let mut d = Demuxer::new(DemuxConfig::default());
            let mut pictures = 0u64;
            d.push(&data, |e| {
                if let shardcast_protocols::ts::DemuxEvent::Picture { .. } = e {
                    pictures += 1;
                }
            });
            pictures
        })
    });
    group.finish();
}

criterion_group!(benches, demux);
criterion_main!(benches);
