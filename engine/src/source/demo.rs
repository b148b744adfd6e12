//! The built-in `demo` source: the protocols generator, paced by the shard's clock, each frame
//! stamped with the wall-clock time it was produced (so latency can be read at the viewer).

use shardcast_protocols::generator::{write_stamp, Generator, GeneratorConfig};
use shardcast_protocols::ts::PACKET_SIZE;
use std::time::Duration;

/// A paced generator.
#[derive(Debug)]
pub struct DemoSource {
    generator: Generator,
}

impl DemoSource {
    /// The demo stream: 256x144 H.264 + AAC at 2 Mbit/s, a keyframe every second.
    pub fn new() -> Self {
        Self::with_config(GeneratorConfig::default()).unwrap_or_else(|e| {
            // The defaults are checked by the protocols tests; this cannot happen.
            unreachable!("default generator settings refused: {e}")
        })
    }

    /// A demo source with other generator settings.
    pub fn with_config(
        config: GeneratorConfig,
    ) -> Result<Self, shardcast_protocols::generator::GeneratorError> {
        Ok(Self {
            generator: Generator::new(config)?,
        })
    }

    /// Append to `out` every packet due `elapsed_ns` after the start; stamps carry `unix_ns`.
    pub fn due(&mut self, elapsed_ns: u64, unix_ns: u64, out: &mut Vec<u8>) {
        let mut packet = [0u8; PACKET_SIZE];
        while self.generator.packet_time_ns(self.generator.packets()) <= elapsed_ns {
            if let Some(at) = self.generator.next_packet(&mut packet) {
                write_stamp(&mut packet, at, unix_ns);
            }
            out.extend_from_slice(&packet);
        }
    }

    /// Nanoseconds after the start at which the next packet is due.
    pub fn next_due_ns(&self) -> u64 {
        self.generator.packet_time_ns(self.generator.packets())
    }
}

impl Default for DemoSource {
    fn default() -> Self {
        Self::new()
    }
}

impl super::SourceDriver for DemoSource {
    fn next_due(&self) -> Option<Duration> {
        Some(Duration::from_nanos(self.next_due_ns()))
    }

    fn due(&mut self, elapsed: Duration, unix_ns: u64, out: &mut Vec<u8>) {
        DemoSource::due(self, elapsed.as_nanos() as u64, unix_ns, out);
    }
}
