//! The command line: `serve`, `upgrade`, `inspect`, `tune`, `capacity`, `check-config` (what each does is
//! in the binary's documentation, `src/main.rs`). In the library so that the end-to-end tests'
//! own build of the server (`tests/e2e`) runs exactly this.

use crate::{capacity, config, inspect, server, tune};
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

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
    /// Replace the running server with the binary on disk without dropping viewers: it hands
    /// its sockets and HLS windows to a new process and drains (the same as SIGUSR2).
    Upgrade {
        /// The running server's configuration (its state_dir setting).
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Its state directory (the pid file), overriding the configuration's.
        #[arg(long)]
        state_dir: Option<PathBuf>,
        /// Seconds to wait for the outcome.
        #[arg(long, default_value_t = 60)]
        timeout: u64,
    },
    /// Read a transport stream and report programs, streams, frames, errors and segments.
    Inspect(inspect::InspectArgs),
    /// Compare the kernel's settings with a tuning profile, or install the profile.
    Tune {
        #[command(subcommand)]
        action: TuneAction,
    },
    /// CPU, memory, bandwidth and storage for a number of viewers and streams.
    Capacity(capacity::Inputs),
    /// Validate a configuration file: prints what it configures, or the line and reason of
    /// the error (exit status 1).
    CheckConfig {
        /// The file.
        file: PathBuf,
    },
}

#[derive(Subcommand, Debug)]
enum TuneAction {
    /// Print each setting of the profile against the running kernel, and the NIC facts.
    Check {
        /// Profile: general or many-viewers.
        #[arg(long, default_value = "general")]
        profile: String,
        /// Configuration whose shard CPUs the NIC interrupts are checked against (default:
        /// every CPU, as the embedded configuration runs).
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Write the profile to /etc/sysctl.d/60-shardcast.conf (its /sys settings to
    /// /etc/tmpfiles.d/60-shardcast.conf) and apply it (needs root).
    Apply {
        /// Profile: general or many-viewers.
        #[arg(long, default_value = "general")]
        profile: String,
        /// Install under this root instead of / (then nothing is applied to the kernel).
        #[arg(long, default_value = "/")]
        root: PathBuf,
    },
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
    /// The API's listen address, or `off`, overriding the configuration's.
    #[arg(long, value_parser = parse_api_listen)]
    api_listen: Option<ApiListen>,
    /// State directory (a generated API token is kept there), overriding the configuration's.
    #[arg(long)]
    state_dir: Option<PathBuf>,
}

/// `--api-listen`: an address, or `off`.
#[derive(Clone, Copy, Debug)]
struct ApiListen(Option<std::net::SocketAddr>);

/// `--api-listen` given something else.
#[derive(Debug, thiserror::Error)]
#[error("{0:?} is not an address:port or \"off\"")]
struct NotAnApiListen(String);

fn parse_api_listen(text: &str) -> Result<ApiListen, NotAnApiListen> {
    if text == "off" {
        return Ok(ApiListen(None));
    }
    text.parse()
        .map(|a| ApiListen(Some(a)))
        .map_err(|_| NotAnApiListen(text.to_owned()))
}

/// What a command can fail with: each layer's own error, printed as the reason.
type Failure = Box<dyn std::error::Error>;

/// Parse the command line and run the command; what the process exits with.
pub fn run() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve(args) => serve(&args),
        Command::Upgrade {
            config,
            state_dir,
            timeout,
        } => upgrade(config.as_deref(), state_dir.as_deref(), timeout),
        Command::Inspect(args) => inspect::run(&args).map_err(Failure::from),
        Command::Tune { action } => run_tune(action),
        Command::Capacity(inputs) => {
            print!("{}", capacity::render(&inputs));
            Ok(())
        }
        Command::CheckConfig { file } => check_config(&file),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("shardcast: {e}");
            ExitCode::FAILURE
        }
    }
}

fn serve(args: &ServeArgs) -> Result<(), Failure> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        // Colours for a terminal only: journald and log files get plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let source = config::ConfigSource {
        path: args.config.clone(),
        listen: args.listen,
        io: args.io,
        api_listen: args.api_listen.map(|a| a.0),
        state_dir: args.state_dir.clone(),
    };
    let config = source.load()?;
    Ok(server::serve(config, source)?)
}

/// Signal the running server (its pid file) and wait for the outcome it writes.
fn upgrade(
    config: Option<&std::path::Path>,
    state_dir: Option<&std::path::Path>,
    timeout: u64,
) -> Result<(), Failure> {
    use crate::upgrade::{pid_file, status_file, UpgradeStatus};
    let configured = match config {
        Some(path) => config::Config::load(path)?.state_dir,
        None => None,
    };
    let dir = crate::control::token::state_dir(state_dir, configured.as_deref());
    let pid_path = pid_file(&dir);
    let pid: i32 = std::fs::read_to_string(&pid_path)
        .map_err(|e| {
            format!(
                "cannot read {} (is the server running?): {e}",
                pid_path.display()
            )
        })?
        .trim()
        .parse()
        .map_err(|_| format!("{} does not hold a process id", pid_path.display()))?;
    let status_path = status_file(&dir);
    let before = std::fs::metadata(&status_path)
        .and_then(|m| m.modified())
        .ok();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGUSR2,
    )
    .map_err(|e| format!("cannot signal process {pid}: {e}"))?;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(timeout);
    while std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(100));
        let modified = std::fs::metadata(&status_path)
            .and_then(|m| m.modified())
            .ok();
        if modified.is_none() || modified == before {
            continue;
        }
        let Ok(text) = std::fs::read(&status_path) else {
            continue;
        };
        let Ok(status) = serde_json::from_slice::<UpgradeStatus>(&text) else {
            continue;
        };
        if status.old != pid as u32 {
            continue;
        }
        return match (status.ok, status.reason) {
            (true, _) => {
                println!(
                    "upgraded: process {} serves; process {pid} drains and exits",
                    status.serving
                );
                Ok(())
            }
            (false, reason) => Err(format!(
                "the upgrade failed ({}); process {pid} carries on serving",
                reason.unwrap_or_default()
            )
            .into()),
        };
    }
    Err(format!("no outcome from process {pid} within {timeout} s (see its log)").into())
}

fn check_config(file: &std::path::Path) -> Result<(), Failure> {
    let c = match config::Config::load(file) {
        Ok(c) => c,
        // The file and the line, as an editor's jump list would take it.
        Err(config::LoadError::Refused { source, .. }) => {
            return Err(format!("{}: {source}", file.display()).into())
        }
        Err(e) => return Err(e.into()),
    };
    let api = c
        .api_listen
        .map_or("off".to_string(), |a| format!("API on {a}"));
    println!(
        "{}: ok: listen {}, {} shard(s) on CPUs {:?}, io {:?}, {api}, {} stream(s)",
        file.display(),
        c.listen,
        c.cpus.len(),
        c.cpus,
        c.io,
        c.streams.len()
    );
    for s in &c.streams {
        println!("  {} <- {}", s.name, s.source_url);
    }
    Ok(())
}

fn run_tune(action: TuneAction) -> Result<(), Failure> {
    match action {
        TuneAction::Check { profile, config } => {
            let cpus = match config {
                Some(path) => config::Config::load(&path)?.cpus,
                None => config::Config::embedded().cpus,
            };
            let root = std::path::Path::new("/");
            let (report, all_ok) = tune::check(root, &profile, &cpus)?;
            print!("{report}");
            if all_ok {
                println!("\nevery setting of profile {profile} is in place");
            } else {
                println!("\nto install the profile: sudo shardcast tune apply --profile {profile}");
            }
            Ok(())
        }
        TuneAction::Apply { profile, root } => {
            print!("{}", tune::apply(&root, &profile)?);
            Ok(())
        }
    }
}
