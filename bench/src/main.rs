//! `shardcast-bench`: the load generator and benchmark driver of shardcast.
//!
//! Today it writes the protocols crate's synthetic test stream (`generate`); the ingest sender,
//! the HTTP-TS and HLS viewers and the side-by-side runs arrive with the bench issue.
#![forbid(unsafe_code)]

use clap::{Parser, Subcommand};
use shardcast_protocols::generator::{Generator, GeneratorConfig};
use shardcast_protocols::ts::PACKET_SIZE;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser, Debug)]
#[command(
    name = "shardcast-bench",
    version,
    about = "Load generator and benchmarks for shardcast"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Write the synthetic test stream (H.264 + AAC, constant mux rate) to a file or stdout.
    Generate(GenerateArgs),
}

#[derive(clap::Args, Debug)]
struct GenerateArgs {
    /// Seconds of stream to write.
    #[arg(long, default_value_t = 10.0)]
    seconds: f64,
    /// Mux rate in bit/s, null packets included.
    #[arg(long, default_value_t = 2_000_000)]
    bitrate: u32,
    /// Picture width.
    #[arg(long, default_value_t = 256)]
    width: u16,
    /// Picture height.
    #[arg(long, default_value_t = 144)]
    height: u16,
    /// Frames per second.
    #[arg(long, default_value_t = 25)]
    fps: u32,
    /// Frames between keyframes.
    #[arg(long, default_value_t = 25)]
    keyframe_interval: u32,
    /// Leave out the audio stream.
    #[arg(long)]
    no_audio: bool,
    /// Output file; `-` writes to stdout.
    #[arg(short, long, default_value = "-")]
    output: PathBuf,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Generate(args) => generate(&args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("shardcast-bench: {e}");
            ExitCode::FAILURE
        }
    }
}

fn generate(args: &GenerateArgs) -> Result<(), String> {
    let config = GeneratorConfig {
        bitrate: args.bitrate,
        width: args.width,
        height: args.height,
        fps: args.fps,
        keyframe_interval: args.keyframe_interval,
        audio: !args.no_audio,
        ..GeneratorConfig::default()
    };
    let mut generator = Generator::new(config).map_err(|e| e.to_string())?;
    let packets = (args.seconds.max(0.0) * f64::from(args.bitrate) / (PACKET_SIZE as f64 * 8.0))
        .ceil() as u64;
    let mut out: Box<dyn Write> = if args.output.as_os_str() == "-" {
        Box::new(std::io::stdout().lock())
    } else {
        let file = std::fs::File::create(&args.output)
            .map_err(|e| format!("cannot create {}: {e}", args.output.display()))?;
        Box::new(std::io::BufWriter::new(file))
    };
    let mut packet = [0u8; PACKET_SIZE];
    for _ in 0..packets {
        generator.next_packet(&mut packet);
        out.write_all(&packet)
            .map_err(|e| format!("when writing the stream: {e}"))?;
    }
    out.flush()
        .map_err(|e| format!("when writing the stream: {e}"))
}
