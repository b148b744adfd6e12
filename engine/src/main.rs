//! `shardcast`: the live-media server daemon and its command line.
//!
//! Today the binary carries the tools that stand on the protocols crate alone: `inspect`
//! reads a transport stream file (or stdin) the way ingest will, and reports its programs,
//! streams, frame and keyframe counts, continuity errors and the HLS segments it would cut.
//! `serve` (the io_uring data plane), `tune`, `capacity` and `check-config` arrive with the
//! engine, appliance and control-plane issues.
#![deny(unsafe_code)]

mod inspect;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser, Debug)]
#[command(
    name = "shardcast",
    version,
    about = "Live MPEG-TS to HLS and HTTP-TS media server"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Read a transport stream and report programs, streams, frames, errors and segments.
    Inspect(inspect::InspectArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Inspect(args) => inspect::run(&args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("shardcast: {e}");
            ExitCode::FAILURE
        }
    }
}
