//! `shardcast`: the live-media server daemon and its command line.
//!
//! `serve` runs the data plane: pinned shards (one per CPU), UDP/multicast MPEG-TS ingest,
//! progressive HTTP-TS to viewers. With no arguments it serves a built-in `demo` stream on
//! 0.0.0.0:8080. `inspect` reads a transport stream file the way ingest does and reports it.
//! `tune check|apply` compares the kernel with a tuning profile or installs one; `capacity`
//! plans a deployment from measured costs; `check-config` validates a configuration file.
#![deny(unsafe_code)]

use std::process::ExitCode;

// The system allocator instead under `--features system-allocator`: AddressSanitizer sees the
// heap only through malloc (tests/asan.sh).
#[cfg(not(feature = "system-allocator"))]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    shardcast::cli::run()
}
