//! `shardcast-bench`: the load generator and benchmark driver of shardcast (see the library
//! docs): `generate` writes the synthetic stream, `ingest` sends it over UDP, `ts` runs
//! HTTP-TS viewers and reports throughput, gaps, latency and server CPU.
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
    /// Send the synthetic stream over UDP, paced, with wall-clock stamps written at send.
    Ingest(IngestArgs),
    /// Run N progressive HTTP-TS viewers and report what they saw.
    Ts(TsArgs),
    /// Run N HLS viewers that behave like players and report what they saw.
    Hls(TsArgs),
    /// Receive UDP channels and drop every datagram: the floor of UDP ingest.
    Sink(SinkArgs),
}

#[derive(clap::Args, Debug)]
struct SinkArgs {
    /// The first channel (e.g. 239.1.1.1:5000).
    #[arg(long)]
    first: std::net::SocketAddrV4,
    /// Channels, as `ingest --streams` sends them.
    #[arg(long, default_value_t = 1)]
    channels: u16,
    /// One multicast group per channel, as `ingest --groups` sends them.
    #[arg(long)]
    groups: bool,
    /// The interface address to join the groups on.
    #[arg(long, default_value = "127.0.0.1")]
    interface: std::net::Ipv4Addr,
    /// Seconds to receive.
    #[arg(long, default_value_t = 60.0)]
    seconds: f64,
    /// Milliseconds a wake-up waits before reading, so more arrive with it (shardcast's
    /// `gather`); 0 reads at once.
    #[arg(long, default_value_t = 0.0)]
    gather_ms: f64,
}

#[derive(clap::Args, Debug)]
struct IngestArgs {
    /// Destination, unicast or multicast (e.g. 239.1.1.1:5000).
    #[arg(long)]
    to: std::net::SocketAddr,
    /// Streams to send at once, to consecutive ports from --to's.
    #[arg(long, default_value_t = 1)]
    streams: u16,
    /// One multicast group per stream instead, the last octet counting up from --to's, all on
    /// its port (as IPTV channels are laid out).
    #[arg(long)]
    groups: bool,
    /// Send this transport stream file, looped, instead of the generator's stream (at
    /// --bitrate; frames carry no latency stamps).
    #[arg(long)]
    file: Option<PathBuf>,
    /// Local address to send from.
    #[arg(long, default_value = "0.0.0.0:0")]
    from: std::net::SocketAddr,
    /// Seconds to send.
    #[arg(long, default_value_t = 60.0)]
    seconds: f64,
    /// Send over TCP instead (to a `tcp://` source listening for an encoder).
    #[arg(long)]
    tcp: bool,
    /// Push over HTTP instead: a chunked `PUT` to this path (e.g. /push/live) on --to.
    #[arg(long, conflicts_with = "tcp")]
    push: Option<String>,
    #[command(flatten)]
    stream: StreamShape,
}

/// The synthetic stream's rate and picture size (`ingest` and `generate`).
#[derive(clap::Args, Debug)]
struct StreamShape {
    /// Mux rate in bit/s, null packets included.
    #[arg(long, default_value_t = 2_000_000)]
    bitrate: u32,
    /// Picture width (larger pictures carry more content per second).
    #[arg(long, default_value_t = 256)]
    width: u16,
    /// Picture height.
    #[arg(long, default_value_t = 144)]
    height: u16,
    /// Frames between keyframes (a large value makes a source with one keyframe only).
    #[arg(long, default_value_t = 25)]
    keyframe_interval: u32,
    /// Macroblock columns each P frame refreshes whole (periodic intra refresh; 0: none).
    #[arg(long, default_value_t = 0)]
    refresh_columns: u16,
}

impl StreamShape {
    /// The generator's settings for this shape, the rest default.
    fn generator(&self) -> GeneratorConfig {
        GeneratorConfig {
            bitrate: self.bitrate,
            width: self.width,
            height: self.height,
            keyframe_interval: self.keyframe_interval.max(1),
            refresh_columns: self.refresh_columns,
            ..GeneratorConfig::default()
        }
    }
}

#[derive(clap::Args, Debug)]
struct TsArgs {
    /// Stream URL, http://IP:PORT/PATH or https://IP:PORT/PATH.
    #[arg(long)]
    url: String,
    /// For https:// URLs: the PEM file of the CA to trust.
    #[arg(long)]
    ca: Option<PathBuf>,
    /// For https:// URLs: the server name to ask for (SNI) and check the certificate against
    /// (default: the URL's IP address).
    #[arg(long)]
    tls_name: Option<String>,
    /// Viewers.
    #[arg(long, default_value_t = 100)]
    viewers: usize,
    /// Seconds over which viewers connect.
    #[arg(long, default_value_t = 2.0)]
    ramp: f64,
    /// Seconds after the ramp before measuring.
    #[arg(long, default_value_t = 2.0)]
    settle: f64,
    /// Seconds measured.
    #[arg(long, default_value_t = 20.0)]
    seconds: f64,
    /// The server's pid, to account its CPU and memory.
    #[arg(long)]
    server_pid: Option<u32>,
    /// Print one JSON line at the end instead of the summary.
    #[arg(long)]
    json: bool,
    /// `ts` only: read at most this many bit/s per viewer (for a static file standing in for a
    /// live stream); 0 reads as fast as the server sends.
    #[arg(long, default_value_t = 0)]
    pace: u64,
    /// `hls` only: viewers are low-latency HLS players (every part, blocking reloads).
    #[arg(long)]
    low_latency: bool,
    /// `hls` only: each request on a new connection (`Connection: close`) instead of one
    /// keep-alive connection per viewer.
    #[arg(long)]
    connection_per_request: bool,
}

#[derive(clap::Args, Debug)]
struct GenerateArgs {
    /// Seconds of stream to write.
    #[arg(long, default_value_t = 10.0)]
    seconds: f64,
    #[command(flatten)]
    stream: StreamShape,
    /// Frames per second.
    #[arg(long, default_value_t = 25)]
    fps: u32,
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
        Command::Ingest(args) => ingest(&args),
        Command::Ts(args) => ts(&args),
        Command::Hls(args) => hls(&args),
        Command::Sink(args) => sink(&args),
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
        fps: args.fps,
        audio: !args.no_audio,
        ..args.stream.generator()
    };
    let mut generator = Generator::new(config).map_err(|e| e.to_string())?;
    let packets = (args.seconds.max(0.0) * f64::from(args.stream.bitrate)
        / (PACKET_SIZE as f64 * 8.0))
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

fn ingest(args: &IngestArgs) -> Result<(), String> {
    use shardcast_bench::ingest::{load_file, run_many_over, Content, Over};
    if args.streams == 0 {
        return Err("--streams must be at least 1".into());
    }
    let content = match &args.file {
        Some(path) => Content::File {
            packets: std::sync::Arc::new(
                load_file(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?,
            ),
            bitrate: args.stream.bitrate,
        },
        None => Content::Generator(args.stream.generator()),
    };
    let destinations: Vec<std::net::SocketAddr> = match args.to {
        std::net::SocketAddr::V4(first) => {
            shardcast_bench::sink::channels(first, args.streams, args.groups)?
                .into_iter()
                .map(std::net::SocketAddr::V4)
                .collect()
        }
        std::net::SocketAddr::V6(_) if args.groups => {
            return Err("--groups counts IPv4 groups only".into())
        }
        std::net::SocketAddr::V6(first) => (0..args.streams)
            .map(|i| {
                let port = first.port().checked_add(i).ok_or_else(|| {
                    format!(
                        "--streams {} from {first} runs past port 65535",
                        args.streams
                    )
                })?;
                Ok(std::net::SocketAddr::new(args.to.ip(), port))
            })
            .collect::<Result<_, String>>()?,
    };
    let duration = std::time::Duration::from_secs_f64(args.seconds.max(0.0));
    let over = match (&args.push, args.tcp) {
        (Some(path), _) => Over::Push(path.clone()),
        (None, true) => Over::Tcp,
        (None, false) => Over::Udp,
    };
    let sent = run_many_over(&content, args.from, &destinations, duration, over)
        .map_err(|e| format!("when sending to {}: {e}", args.to))?;
    eprintln!(
        "sent {} datagrams to {} destination(s) from {}",
        sent.iter().sum::<u64>(),
        destinations.len(),
        args.to
    );
    Ok(())
}

fn sink(args: &SinkArgs) -> Result<(), String> {
    let channels = shardcast_bench::sink::channels(args.first, args.channels, args.groups)?;
    let got = shardcast_bench::sink::run(
        &channels,
        args.interface,
        std::time::Duration::from_secs_f64(args.seconds.max(0.0)),
        std::time::Duration::from_secs_f64(args.gather_ms.clamp(0.0, 1000.0) / 1000.0),
    )
    .map_err(|e| format!("when receiving on {}: {e}", args.first))?;
    println!(
        "{{\"datagrams\":{},\"bytes\":{},\"wakeups\":{}}}",
        got.datagrams, got.bytes, got.wakeups
    );
    Ok(())
}

/// The address and path of an `http://IP:PORT/PATH` or `https://…` URL, and whether it is
/// https.
fn split_url(url: &str) -> Result<(std::net::SocketAddr, String, bool), String> {
    let (rest, tls) = match url.strip_prefix("https://") {
        Some(rest) => (rest, true),
        None => (
            url.strip_prefix("http://")
                .ok_or("--url must start with http:// or https://")?,
            false,
        ),
    };
    let (host, path) = rest.split_once('/').unwrap_or((rest, ""));
    let addr = host
        .parse()
        .map_err(|_| format!("--url host {host:?} must be IP:PORT"))?;
    Ok((addr, format!("/{path}"), tls))
}

/// Before the load: raise the descriptor limit for `viewers` connections (or say why it cannot
/// be), warn when they need more ephemeral ports than the kernel hands out, and make one
/// request so that an unreachable server or a wrong path is a clear error, not a run of
/// failed viewers.
fn preflight(
    addr: std::net::SocketAddr,
    path: &str,
    viewers: usize,
    tls: Option<&shardcast_bench::net::TlsClient>,
) -> Result<(), String> {
    let needed = viewers as u64 + 64;
    let (_, hard) = rlimit::Resource::NOFILE
        .get()
        .map_err(|e| format!("cannot read the descriptor limit: {e}"))?;
    if hard < needed {
        return Err(format!(
            "{viewers} viewers need {needed} file descriptors but the hard limit is {hard}: raise it (ulimit -Hn, or LimitNOFILE)"
        ));
    }
    rlimit::increase_nofile_limit(needed)
        .map_err(|e| format!("cannot raise the descriptor limit to {needed}: {e}"))?;
    if let Ok(range) = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range") {
        let ports: Vec<u64> = range
            .split_whitespace()
            .filter_map(|p| p.parse().ok())
            .collect();
        if let [low, high] = ports[..] {
            if (high.saturating_sub(low) + 1) < viewers as u64 {
                eprintln!(
                    "warning: {viewers} viewers from one address need more ephemeral ports than net.ipv4.ip_local_port_range gives ({low}-{high})"
                );
            }
        }
    }
    use std::io::{Read, Write as _};
    let tcp = std::net::TcpStream::connect_timeout(&addr, std::time::Duration::from_secs(3))
        .map_err(|e| format!("cannot reach the server at {addr}: {e}"))?;
    tcp.set_read_timeout(Some(std::time::Duration::from_secs(5)))
        .map_err(|e| e.to_string())?;
    let mut s: Box<dyn shardcast_bench::net::ReadWrite> = match tls {
        Some(t) => Box::new(t.blocking(tcp).map_err(|e| e.to_string())?),
        None => Box::new(tcp),
    };
    s.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: shardcast-bench\r\n\r\n")
            .as_bytes(),
    )
    .map_err(|e| format!("cannot send a request to {addr}: {e}"))?;
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    while memchr::memmem::find(&head, b"\r\n\r\n").is_none() && head.len() < 16384 {
        let n = s
            .read(&mut buf)
            .map_err(|e| format!("no answer from {addr}: {e}"))?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&buf[..n]);
    }
    let status = String::from_utf8_lossy(&head)
        .lines()
        .next()
        .unwrap_or_default()
        .to_owned();
    if !status.starts_with("HTTP/1.1 200") && !status.starts_with("HTTP/1.0 200") {
        return Err(format!(
            "http://{addr}{path} answered {:?}, not 200",
            if status.is_empty() {
                "nothing"
            } else {
                status.as_str()
            }
        ));
    }
    Ok(())
}

/// The load the arguments describe, once the server has answered a first request.
fn load_from(args: &TsArgs) -> Result<shardcast_bench::load::Load, String> {
    let (addr, path, https) = split_url(&args.url)?;
    let tls = match (https, &args.ca) {
        (false, _) => None,
        (true, None) => return Err("an https:// URL needs --ca (the CA to trust)".into()),
        (true, Some(ca)) => Some(shardcast_bench::net::TlsClient::new(
            ca,
            &args
                .tls_name
                .clone()
                .unwrap_or_else(|| addr.ip().to_string()),
        )?),
    };
    preflight(addr, &path, args.viewers, tls.as_ref())?;
    let secs = |s: f64| std::time::Duration::from_secs_f64(s.max(0.0));
    Ok(shardcast_bench::load::Load {
        addr,
        path,
        viewers: args.viewers,
        ramp: secs(args.ramp),
        settle: secs(args.settle),
        measure: secs(args.seconds),
        server_pid: args.server_pid,
        progress: !args.json,
        pace_bps: args.pace,
        tls,
        low_latency: args.low_latency,
        connection_per_request: args.connection_per_request,
    })
}

fn hls(args: &TsArgs) -> Result<(), String> {
    let load = load_from(args)?;
    let addr = load.addr;
    let r = shardcast_bench::hls::run(&load)
        .map_err(|e| format!("when running HLS viewers against {addr}: {e}"))?;
    if args.json {
        let q = |p: f64| r.fetch_us.value_at_quantile(p);
        println!(
            "{{\"viewers\":{},\"started\":{},\"reconnects\":{},\"playlists\":{},\"segments\":{},\"missed\":{},\"late\":{},\"listed_404\":{},\"status_4xx\":{},\"status_5xx\":{},\"bad_playlists\":{},\"bytes\":{},\"window_s\":{},\"gbit_per_s\":{:.4},\"fetch_us\":{{\"p50\":{},\"p99\":{},\"p999\":{},\"max\":{},\"samples\":{}}},\"reload_us\":{{\"p50\":{},\"p99\":{},\"max\":{},\"samples\":{}}},{}}}",
            r.viewers, r.started, r.reconnects, r.playlists, r.segments, r.missed, r.late, r.listed_404, r.status_4xx, r.status_5xx, r.bad_playlists, r.bytes, r.cost.window.as_secs_f64(), r.gbit_per_s(),
            q(0.5), q(0.99), q(0.999), r.fetch_us.max(), r.fetch_us.len(),
            r.reload_us.value_at_quantile(0.5), r.reload_us.value_at_quantile(0.99), r.reload_us.max(), r.reload_us.len(),
            r.cost.json_fields(r.started)
        );
    } else {
        print!("{}", r.summary());
    }
    Ok(())
}

fn ts(args: &TsArgs) -> Result<(), String> {
    let load = load_from(args)?;
    let addr = load.addr;
    let r = shardcast_bench::ts::run(&load)
        .map_err(|e| format!("when running viewers against {addr}: {e}"))?;
    if args.json {
        let q = |p: f64| r.latency_us.value_at_quantile(p);
        let distribution: Vec<String> = r
            .latency_percentiles()
            .iter()
            .map(|(p, ms)| format!("[{p},{ms:.3}]"))
            .collect();
        println!(
            "{{\"latency_ms_by_percentile\":[{}],\"viewers\":{},\"connected\":{},\"disconnected\":{},\"gaps\":{},\"viewers_with_gaps\":{},\"bytes\":{},\"window_s\":{},\"gbit_per_s\":{:.4},\"latency_us\":{{\"p50\":{},\"p99\":{},\"p999\":{},\"max\":{},\"samples\":{}}},{}}}",
            distribution.join(","), r.viewers, r.connected, r.disconnected, r.gaps, r.viewers_with_gaps, r.bytes, r.cost.window.as_secs_f64(), r.gbit_per_s(),
            q(0.5), q(0.99), q(0.999), r.latency_us.max(), r.latency_us.len(),
            r.cost.json_fields(r.connected)
        );
    } else {
        print!("{}", r.summary());
    }
    Ok(())
}
