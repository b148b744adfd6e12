//! `shardcast`: the live-media server daemon and its command line.
//!
//! `serve` runs the data plane: pinned shards (one per CPU), MPEG-TS ingest, HLS and
//! progressive HTTP-TS to viewers over HTTP and TLS. With no arguments it serves a built-in
//! `demo` stream on 0.0.0.0:8080. `upgrade` hands a running server over to the binary on disk
//! without dropping viewers. `inspect` reads a transport stream file the way ingest does and reports it.
//! `tune check|apply` compares the kernel with a tuning profile or installs one; `capacity`
//! plans a deployment from measured costs; `check-config` validates a configuration file.
#![deny(unsafe_code)]

use std::process::ExitCode;

// mimalloc, without transparent huge pages (the workspace's Cargo.toml says why). The system
// allocator instead under `--features system-allocator`: AddressSanitizer sees the heap only
// through malloc (tests/asan.sh).
#[cfg(not(feature = "system-allocator"))]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    shardcast::cli::run()
}
