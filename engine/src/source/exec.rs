//! An encoder process as a source: `exec:COMMAND ARGUMENTS…` runs the command with no shell
//! and reads MPEG-TS from its standard output.
//!
//! The command line is split into arguments as a POSIX shell would split it (quotes and
//! backslashes; no variables, globs, pipes or redirections: nothing is run through a shell),
//! e.g. `exec:ffmpeg -re -i "/srv/my clip.mp4" -c copy -f mpegts -`. The program is looked up
//! in `PATH`. Its standard error goes to the log line by line (at most
//! [`STDERR_LINES_PER_SECOND`] a second, each cut at [`STDERR_LINE`] bytes); its standard
//! input is `/dev/null`. When it exits it is started again ([`super::Retry`]: at once the
//! first time after a run of 10 s or more, then waiting longer each time).
//!
//! It runs in a process group of its own: when the stream ends, or the server stops, the
//! whole group is killed (SIGKILL) and the process reaped; if the server itself is killed,
//! the kernel kills the process (`PR_SET_PDEATHSIG`), though not processes it started in
//! turn (systemd's unit kills its whole control group then). No orphan, no zombie, no pipe
//! left blocked.

use super::inlet::{Delivery, Inlet, TaskDriver};
use super::retry::Retry;
use super::{SourceContext, SourceError, SourceSpec};
use crate::stream::StreamCounters;
use bytes::BytesMut;
use std::process::Stdio;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncReadExt};

/// Lines of standard error logged per second at most; the rest are counted.
pub(super) const STDERR_LINES_PER_SECOND: u32 = 20;
/// Longest standard error line logged (bytes).
pub(super) const STDERR_LINE: usize = 1024;
/// Longest command line taken.
const MAX_COMMAND_LINE: usize = 8192;
/// Bytes asked of the pipe per read.
const READ_SIZE: usize = 64 * 1024;

/// An encoder process.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExecSpec {
    /// The program and its arguments.
    pub argv: Vec<String>,
}

/// `exec:` then the command line.
pub(super) fn parse(rest: &str) -> Result<SourceSpec, SourceError> {
    let bad = |why: &str| SourceError::Command(format!("{why}: {rest:?}"));
    if rest.len() > MAX_COMMAND_LINE {
        return Err(bad("longer than 8 KiB"));
    }
    if rest.contains(['\n', '\r', '\0']) {
        return Err(bad("a line break or NUL in the command"));
    }
    let argv = shlex::split(rest).ok_or_else(|| bad("unbalanced quotes"))?;
    if argv.is_empty() {
        return Err(bad("no command"));
    }
    Ok(SourceSpec::Exec(ExecSpec { argv }))
}

/// Start `spec`'s task: the home shard's side of it takes what it delivers.
pub(super) fn start(spec: &ExecSpec, context: &SourceContext<'_>) -> TaskDriver {
    let (argv, stream, counters, idle) = (
        spec.argv.clone(),
        context.stream.to_owned(),
        context.counters.clone(),
        context.idle,
    );
    TaskDriver::start(context, None, move |inlet| {
        Run {
            stream,
            argv,
            inlet,
            counters,
            idle,
        }
        .forever()
    })
}

/// A running process's group, killed when this is dropped (the task ended or was aborted).
struct Group {
    child: Option<tokio::process::Child>,
    pgid: Option<nix::unistd::Pid>,
}

impl Drop for Group {
    fn drop(&mut self) {
        if let Some(pgid) = self.pgid {
            let _ = nix::sys::signal::killpg(pgid, nix::sys::signal::Signal::SIGKILL);
        }
        let Some(mut child) = self.child.take() else {
            return;
        };
        let _ = child.start_kill();
        // Reaped as soon as it has died, by a task of its own; with no runtime left (the
        // server stopping), tokio's own reaping of dropped children takes it.
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                let _ = child.wait().await;
            });
        }
    }
}

/// One source's process, started again whenever it ends.
struct Run {
    stream: String,
    argv: Vec<String>,
    inlet: Arc<Inlet>,
    counters: Arc<StreamCounters>,
    idle: Duration,
}

impl Run {
    async fn forever(self) {
        let mut retry = Retry::new();
        loop {
            match self.spawn() {
                Ok(group) => {
                    retry.up(Instant::now());
                    StreamCounters::add(&self.counters.source_connections, 1);
                    self.counters.source_connected.store(1, Ordering::Relaxed);
                    let ended = self.run(group).await;
                    self.counters.source_connected.store(0, Ordering::Relaxed);
                    tracing::warn!(stream = %self.stream, "{} {ended}", self.argv[0]);
                }
                Err(e) => {
                    StreamCounters::add(&self.counters.source_failures, 1);
                    tracing::error!(stream = %self.stream, "cannot start {}: {e}", self.argv[0]);
                }
            }
            let wait = retry.down(Instant::now());
            tokio::time::sleep(wait).await;
        }
    }

    fn spawn(&self) -> std::io::Result<Group> {
        let mut command = tokio::process::Command::new(&self.argv[0]);
        command
            .args(&self.argv[1..])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true);
        crate::sys::die_with_server(&mut command);
        let child = command.spawn()?;
        let pgid = child
            .id()
            .and_then(|id| i32::try_from(id).ok())
            .map(nix::unistd::Pid::from_raw);
        tracing::info!(stream = %self.stream, pid = ?pgid, "started {}", self.argv.join(" "));
        Ok(Group {
            child: Some(child),
            pgid,
        })
    }

    /// Read the process's output until it ends (or sends nothing for the idle time); returns
    /// how it ended, for the log.
    async fn run(&self, mut group: Group) -> String {
        let Some(child) = group.child.as_mut() else {
            return "is gone".to_owned();
        };
        let (Some(mut stdout), Some(stderr)) = (child.stdout.take(), child.stderr.take()) else {
            return "has no pipes".to_owned();
        };
        let log = tokio::spawn(log_lines(self.stream.clone(), self.argv[0].clone(), stderr));
        self.inlet.deliver(Delivery::Restart).await;
        let mut buf = BytesMut::new();
        let why = loop {
            buf.reserve(READ_SIZE);
            match tokio::time::timeout(self.idle, stdout.read_buf(&mut buf)).await {
                Ok(Ok(0)) => break None,
                Ok(Ok(n)) => {
                    let received = crate::sys::unix_ns();
                    self.inlet
                        .deliver(Delivery::Bytes(buf.split().freeze(), received))
                        .await;
                    super::inlet::pace(n).await;
                }
                Ok(Err(e)) => break Some(format!("could not be read: {e}")),
                Err(_) => {
                    break Some(format!(
                        "wrote nothing for {} s: killed",
                        self.idle.as_secs_f64()
                    ))
                }
            }
        };
        let ended = match why {
            Some(why) => why,
            // Its output closed: it is exiting (or closed it and goes on; then it is killed).
            None => match tokio::time::timeout(Duration::from_secs(2), child.wait()).await {
                Ok(Ok(status)) => {
                    if !status.success() {
                        StreamCounters::add(&self.counters.source_failures, 1);
                    }
                    format!("exited ({status})")
                }
                Ok(Err(e)) => format!("could not be waited for: {e}"),
                Err(_) => "closed its output but did not exit: killed".to_owned(),
            },
        };
        drop(group); // the rest of its group goes with it
        let _ = log.await;
        ended
    }
}

/// Which lines of standard error are logged: at most [`STDERR_LINES_PER_SECOND`] in each
/// second, the rest counted and reported once the second is over (sans-IO: time passed in).
#[derive(Debug)]
struct LineBudget {
    window: Instant,
    logged: u32,
    dropped: u64,
}

impl LineBudget {
    fn new(now: Instant) -> Self {
        Self {
            window: now,
            logged: 0,
            dropped: 0,
        }
    }

    /// A line came at `now`: whether to log it, and how many lines of the second before went
    /// unlogged (to say so, once).
    fn line(&mut self, now: Instant) -> (bool, u64) {
        let mut unlogged = 0;
        if now.duration_since(self.window) >= Duration::from_secs(1) {
            unlogged = self.dropped;
            *self = Self::new(now);
        }
        if self.logged >= STDERR_LINES_PER_SECOND {
            self.dropped += 1;
            return (false, unlogged);
        }
        self.logged += 1;
        (true, unlogged)
    }
}

/// Log `stderr` line by line, at most [`STDERR_LINES_PER_SECOND`] a second.
async fn log_lines(stream: String, program: String, stderr: tokio::process::ChildStderr) {
    let mut reader = tokio::io::BufReader::new(stderr);
    let mut line = Vec::new();
    let mut budget = LineBudget::new(Instant::now());
    loop {
        line.clear();
        // At most a line's worth held at once: longer lines are cut, the rest skipped.
        match (&mut reader)
            .take(STDERR_LINE as u64 + 1)
            .read_until(b'\n', &mut line)
            .await
        {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        if line.last() != Some(&b'\n') && line.len() > STDERR_LINE {
            // Skip to the end of this over-long line.
            let mut rest = Vec::new();
            loop {
                rest.clear();
                match (&mut reader)
                    .take(STDERR_LINE as u64)
                    .read_until(b'\n', &mut rest)
                    .await
                {
                    Ok(0) | Err(_) => break,
                    Ok(_) if rest.last() == Some(&b'\n') => break,
                    Ok(_) => {}
                }
            }
            line.truncate(STDERR_LINE);
        }
        let (log, unlogged) = budget.line(Instant::now());
        if unlogged > 0 {
            tracing::info!(stream = %stream, "{program}: {unlogged} more lines not logged");
        }
        if !log {
            continue;
        }
        let text = String::from_utf8_lossy(&line);
        let text = text.trim_end();
        if !text.is_empty() {
            tracing::info!(stream = %stream, "{program}: {text}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A process that writes nothing is killed, with its group, once the idle time has
    /// passed, and reaped.
    #[test]
    fn a_silent_process_is_killed_after_the_idle_time() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let run = Run {
                stream: "quiet".into(),
                argv: vec!["sleep".into(), "60".into()],
                inlet: Inlet::new(Arc::new(crate::wake::Nobody)),
                counters: Arc::new(StreamCounters::default()),
                idle: Duration::from_millis(300),
            };
            let group = run.spawn().unwrap();
            let pid = group.pgid.unwrap();
            let started = Instant::now();
            let ended = run.run(group).await;
            assert!(ended.contains("wrote nothing for 0.3 s: killed"), "{ended}");
            assert!(started.elapsed() >= Duration::from_millis(300));
            let gone = async {
                while std::path::Path::new(&format!("/proc/{pid}")).exists() {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            };
            tokio::time::timeout(Duration::from_secs(2), gone)
                .await
                .expect("the process is killed and reaped");
        });
    }

    #[test]
    fn a_chatty_process_gets_twenty_lines_a_second_and_the_rest_are_counted() {
        let t0 = Instant::now();
        let mut budget = LineBudget::new(t0);
        // 1,000 lines in the first second: 20 logged, 980 reported when the next one comes.
        let logged = (0..1000u64)
            .filter(|i| budget.line(t0 + Duration::from_micros(i * 900)).0)
            .count();
        assert_eq!(logged, STDERR_LINES_PER_SECOND as usize);
        assert_eq!(budget.line(t0 + Duration::from_millis(1000)), (true, 980));
        // A quiet second after it: nothing to report.
        assert_eq!(budget.line(t0 + Duration::from_millis(2500)), (true, 0));
    }

    fn argv(url: &str) -> Result<Vec<String>, SourceError> {
        match SourceSpec::parse(url)? {
            SourceSpec::Exec(spec) => Ok(spec.argv),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn the_command_line_is_split_as_a_shell_would_with_no_shell() {
        assert_eq!(
            argv(r#"exec:ffmpeg -re -i "/srv/my clip.mp4" -f mpegts -"#).unwrap(),
            [
                "ffmpeg",
                "-re",
                "-i",
                "/srv/my clip.mp4",
                "-f",
                "mpegts",
                "-"
            ]
        );
        // Shell syntax is only text: no pipe, no redirection, no variable.
        assert_eq!(
            argv("exec:cat $HOME/x.ts | tee >/tmp/y").unwrap(),
            ["cat", "$HOME/x.ts", "|", "tee", ">/tmp/y"]
        );
        for bad in ["exec:", "exec:   ", "exec:ffmpeg \"-i", "exec:a\nb"] {
            assert!(argv(bad).is_err(), "{bad:?}");
        }
    }
}
