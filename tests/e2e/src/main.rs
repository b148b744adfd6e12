//! The server as the end-to-end tests run it: the same command line as `shardcast`
//! (`shardcast::cli`), built by this crate so that a test never runs a stale binary.
#![deny(unsafe_code)]

use std::process::ExitCode;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    shardcast::cli::run()
}
