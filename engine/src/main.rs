//! `shardcast`: the live-media server daemon and its command line.
//!
//! `serve` runs the data plane: pinned shards (one per CPU), UDP/multicast MPEG-TS ingest,
//! progressive HTTP-TS to viewers. With no arguments it serves a built-in `demo` stream on
//! 0.0.0.0:8080. `inspect` reads a transport stream file the way ingest does and reports it.
//! `tune`, `capacity` and `check-config` arrive with the appliance and control-plane issues.
#![deny(unsafe_code)]

use clap::{Parser, Subcommand};
use shardcast::{config, inspect, server};
use std::path::PathBuf;
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
    /// Serve streams (no arguments: a built-in demo stream on 0.0.0.0:8080).
    Serve(ServeArgs),
    /// Read a transport stream and report programs, streams, frames, errors and segments.
    Inspect(inspect::InspectArgs),
}

#[derive(clap::Args, Debug)]
struct ServeArgs {
    /// Configuration file (TOML); without it the embedded default runs.
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// Listen address, overriding the configuration's.
    #[arg(long)]
    listen: Option<std::net::SocketAddr>,
    /// I/O backend (auto, io_uring, epoll), overriding the configuration's.
    #[arg(long)]
    io: Option<config::IoBackend>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve(args) => serve(&args),
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

fn serve(args: &ServeArgs) -> Result<(), String> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let mut config = match &args.config {
        Some(path) => config::Config::load(path)
            .map_err(|e| format!("configuration {} refused: {e}", path.display()))?,
        None => config::Config::embedded(),
    };
    if let Some(listen) = args.listen {
        config.listen = listen;
    }
    if let Some(io) = args.io {
        config.io = io;
    }
    server::serve(config)
}
