//! systemd's service notification protocol (`sd_notify`), and the watchdog that proves the
//! pipeline is still moving.
//!
//! - [`Notifier`] sends `READY=1`, `WATCHDOG=1`, `STOPPING=1`, `RELOADING=1` and `STATUS=…` as
//!   datagrams to `$NOTIFY_SOCKET` (a path, or an abstract socket when it starts with `@`).
//!   Without `$NOTIFY_SOCKET` (not under systemd, or `Type=` is not `notify`) every call is a
//!   no-op. Written here with `std`'s `UnixDatagram`: the protocol is one `sendto` per message.
//! - [`Liveness`] is where the work loops (pollers, writers) report progress, or that they are
//!   waiting for a legitimate reason (database outage, rate limit).
//! - [`supervise`] sends `READY=1` once PostgreSQL and SQS both answer, then pings the watchdog
//!   every `WATCHDOG_USEC / 2` — only while [`Liveness`] says the pipeline moved recently or is
//!   legitimately waiting. A stuck loop stops the pings and systemd restarts the agent.

use std::io;
use std::os::unix::net::{SocketAddr as UnixAddr, UnixDatagram};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use crate::server::check_ready;
use crate::sqs::Queue;
use crate::store::Store;

/// Environment variable naming the notification socket.
pub const NOTIFY_SOCKET: &str = "NOTIFY_SOCKET";
/// Environment variable with the watchdog timeout in microseconds (`WatchdogSec=`).
pub const WATCHDOG_USEC: &str = "WATCHDOG_USEC";
/// Environment variable with the pid the watchdog is meant for (absent: this process).
pub const WATCHDOG_PID: &str = "WATCHDOG_PID";

/// How often readiness is re-checked before `READY=1`.
const READY_RETRY: Duration = Duration::from_secs(1);

/// A state change for systemd. Each renders as one `KEY=VALUE` line of the protocol.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum State {
    /// Start-up finished: PostgreSQL and SQS answer.
    Ready,
    /// The pipeline is alive (keeps `WatchdogSec=` from firing).
    Watchdog,
    /// Shutdown began (SIGTERM): finishing or releasing in-flight work.
    Stopping,
    /// A reload began (SIGHUP); send [`State::Ready`] when it is done.
    Reloading,
    /// Free text shown by `systemctl status`.
    Status(String),
}

impl State {
    /// The protocol line, e.g. `READY=1`. Newlines in a status are flattened: each line of a
    /// datagram is a separate assignment.
    pub fn line(&self) -> String {
        match self {
            State::Ready => "READY=1".to_owned(),
            State::Watchdog => "WATCHDOG=1".to_owned(),
            State::Stopping => "STOPPING=1".to_owned(),
            State::Reloading => "RELOADING=1".to_owned(),
            State::Status(s) => format!("STATUS={}", s.replace(['\n', '\r'], " ")),
        }
    }
}

/// Renders one datagram from several states (`READY=1\nSTATUS=…\n`).
pub fn message(states: &[State]) -> String {
    let mut out = String::new();
    for s in states {
        out.push_str(&s.line());
        out.push('\n');
    }
    out
}

/// Where `$NOTIFY_SOCKET` points.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SocketName {
    /// A filesystem path (`/run/systemd/notify`).
    Path(std::path::PathBuf),
    /// A Linux abstract socket (`@name` in the variable; the `@` is not part of the name).
    Abstract(Vec<u8>),
}

impl SocketName {
    /// Parses `$NOTIFY_SOCKET`; `None` when empty or not a socket name systemd would give.
    pub fn parse(value: &str) -> Option<Self> {
        if let Some(name) = value.strip_prefix('@') {
            (!name.is_empty()).then(|| SocketName::Abstract(name.as_bytes().to_vec()))
        } else if value.starts_with('/') {
            Some(SocketName::Path(value.into()))
        } else {
            None
        }
    }

    fn addr(&self) -> io::Result<UnixAddr> {
        match self {
            SocketName::Path(p) => UnixAddr::from_pathname(p),
            SocketName::Abstract(name) => abstract_addr(name),
        }
    }
}

#[cfg(target_os = "linux")]
fn abstract_addr(name: &[u8]) -> io::Result<UnixAddr> {
    use std::os::linux::net::SocketAddrExt as _;
    UnixAddr::from_abstract_name(name)
}

#[cfg(not(target_os = "linux"))]
fn abstract_addr(_name: &[u8]) -> io::Result<UnixAddr> {
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        "abstract sockets exist only on Linux",
    ))
}

/// Sends notifications to systemd; a no-op when not started by it.
#[derive(Debug, Clone, Default)]
pub struct Notifier {
    target: Option<Arc<Target>>,
}

#[derive(Debug)]
struct Target {
    socket: UnixDatagram,
    addr: UnixAddr,
    name: String,
}

impl Notifier {
    /// From `$NOTIFY_SOCKET`. An unusable value is logged and ignored: the agent runs the
    /// same, only systemd hears nothing (and, with `Type=notify`, will time the start out).
    pub fn from_env() -> Self {
        match std::env::var(NOTIFY_SOCKET) {
            Ok(v) if !v.is_empty() => Self::to_socket(&v).unwrap_or_else(|e| {
                tracing::warn!(notify_socket = %v, error = %e, "Cannot use NOTIFY_SOCKET; systemd will not be notified.");
                Self::default()
            }),
            _ => Self::default(),
        }
    }

    /// To the socket named like `$NOTIFY_SOCKET` (`/path` or `@abstract`).
    pub fn to_socket(name: &str) -> io::Result<Self> {
        let parsed = SocketName::parse(name).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                "not an absolute path or @abstract name",
            )
        })?;
        let addr = parsed.addr()?;
        let socket = UnixDatagram::unbound()?;
        socket.set_nonblocking(true)?;
        Ok(Self {
            target: Some(Arc::new(Target {
                socket,
                addr,
                name: name.to_owned(),
            })),
        })
    }

    /// Whether systemd is listening (`$NOTIFY_SOCKET` was set and usable).
    pub fn is_enabled(&self) -> bool {
        self.target.is_some()
    }

    /// Sends the states as one datagram. Failures are logged, never fatal: losing a
    /// notification must not stop the drain.
    pub fn notify(&self, states: &[State]) {
        let Some(t) = &self.target else { return };
        let msg = message(states);
        if let Err(e) = t.socket.send_to_addr(msg.as_bytes(), &t.addr) {
            tracing::warn!(notify_socket = %t.name, error = %e, message = %msg.trim_end(), "Cannot notify systemd.");
        }
    }

    pub fn ready(&self, status: &str) {
        self.notify(&[State::Ready, State::Status(status.to_owned())]);
    }

    pub fn watchdog(&self) {
        self.notify(&[State::Watchdog]);
    }

    pub fn stopping(&self) {
        self.notify(&[
            State::Stopping,
            State::Status("Stopping: finishing in-flight work.".to_owned()),
        ]);
    }

    /// Hook for the SIGHUP reload: call before applying the new configuration, then
    /// [`Notifier::ready`] once it is in force. (`Type=notify-reload`, systemd ≥ 253, would also
    /// want `MONOTONIC_USEC=`; the unit uses `Type=notify` with `ExecReload=`, which does not.)
    pub fn reloading(&self) {
        self.notify(&[
            State::Reloading,
            State::Status("Reloading configuration.".to_owned()),
        ]);
    }
}

/// The watchdog interval systemd asked for, if it asked this process (`$WATCHDOG_USEC`, and
/// `$WATCHDOG_PID` absent or equal to our pid).
pub fn watchdog_timeout_from_env() -> Option<Duration> {
    watchdog_timeout(
        std::env::var(WATCHDOG_USEC).ok().as_deref(),
        std::env::var(WATCHDOG_PID).ok().as_deref(),
        std::process::id(),
    )
}

/// [`watchdog_timeout_from_env`] on explicit values.
pub fn watchdog_timeout(usec: Option<&str>, pid: Option<&str>, my_pid: u32) -> Option<Duration> {
    let usec: u64 = usec?.trim().parse().ok().filter(|u| *u > 0)?;
    if let Some(pid) = pid {
        if pid.trim().parse::<u32>().ok()? != my_pid {
            return None;
        }
    }
    Some(Duration::from_micros(usec))
}

/// Progress reports from the work loops, read by the watchdog.
///
/// Loops call [`Liveness::beat`] when they complete a round (a receive returned, a batch was
/// settled or retried). A loop that waits for a legitimate reason holds a [`Waiting`] guard
/// for the duration. A loop that neither beats nor holds a guard is stuck.
#[derive(Debug, Clone)]
pub struct Liveness {
    inner: Arc<LivenessInner>,
}

#[derive(Debug)]
struct LivenessInner {
    origin: Instant,
    /// Milliseconds since `origin` of the last beat.
    last_beat_ms: AtomicU64,
    waiting: AtomicUsize,
}

impl Default for Liveness {
    fn default() -> Self {
        Self::new()
    }
}

impl Liveness {
    pub fn new() -> Self {
        Self {
            inner: Arc::new(LivenessInner {
                origin: Instant::now(),
                last_beat_ms: AtomicU64::new(0),
                waiting: AtomicUsize::new(0),
            }),
        }
    }

    /// A loop completed a round.
    pub fn beat(&self) {
        let ms = u64::try_from(self.inner.origin.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.inner.last_beat_ms.fetch_max(ms, Ordering::Relaxed);
    }

    /// A loop starts a legitimate wait (database outage, rate limit); it ends when the guard is
    /// dropped, which also counts as a beat.
    pub fn waiting(&self) -> Waiting {
        self.inner.waiting.fetch_add(1, Ordering::Relaxed);
        Waiting {
            liveness: self.clone(),
        }
    }

    /// Time since the last beat.
    pub fn since_last_beat(&self) -> Duration {
        let last = Duration::from_millis(self.inner.last_beat_ms.load(Ordering::Relaxed));
        self.inner.origin.elapsed().saturating_sub(last)
    }

    /// Loops currently in a legitimate wait.
    pub fn waiters(&self) -> usize {
        self.inner.waiting.load(Ordering::Relaxed)
    }

    /// Whether the pipeline counts as alive: it beat within `stale_after`, or some loop is
    /// legitimately waiting.
    pub fn is_alive(&self, stale_after: Duration) -> bool {
        should_ping(self.since_last_beat(), self.waiters(), stale_after)
    }
}

/// The watchdog's rule, pure for tests.
pub fn should_ping(since_last_beat: Duration, waiters: usize, stale_after: Duration) -> bool {
    waiters > 0 || since_last_beat <= stale_after
}

/// How long without a beat counts as stuck: half the watchdog timeout, but never less than
/// one long poll plus slack (an idle poller beats once per `wait_seconds`).
pub fn stale_after(watchdog: Duration, wait_seconds: u8) -> Duration {
    (watchdog / 2).max(Duration::from_secs(u64::from(wait_seconds)) + Duration::from_secs(10))
}

/// See [`Liveness::waiting`].
#[derive(Debug)]
pub struct Waiting {
    liveness: Liveness,
}

impl Drop for Waiting {
    fn drop(&mut self) {
        self.liveness.beat();
        self.liveness.inner.waiting.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Tells systemd about the agent's life: `READY=1` once PostgreSQL and SQS answer, then
/// `WATCHDOG=1` every half watchdog interval while the pipeline is alive, until `stop`.
/// Returns at once when systemd is not listening.
pub async fn supervise(
    notifier: Notifier,
    liveness: Liveness,
    store: Store,
    queue: Queue,
    wait_seconds: u8,
    stop: CancellationToken,
) {
    if !notifier.is_enabled() {
        return;
    }
    loop {
        let (ready, detail) = tokio::select! {
            _ = stop.cancelled() => return,
            r = check_ready(&store, &queue) => r,
        };
        if ready {
            notifier.ready("Draining: PostgreSQL and SQS answer.");
            tracing::info!("Ready: notified systemd.");
            break;
        }
        notifier.notify(&[State::Status(format!("Waiting for dependencies: {detail}"))]);
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(READY_RETRY) => {}
        }
    }
    let Some(timeout) = watchdog_timeout_from_env() else {
        return;
    };
    let tick = timeout / 2;
    let stale = stale_after(timeout, wait_seconds);
    tracing::info!(watchdog = ?timeout, ping_every = ?tick, stale_after = ?stale, "Watchdog enabled.");
    watchdog(&notifier, &liveness, tick, stale, &stop).await;
}

/// Every `tick`, sends `WATCHDOG=1` if the pipeline is alive (see [`Liveness::is_alive`]);
/// logs once when it stops being so. Until `stop`.
pub async fn watchdog(
    notifier: &Notifier,
    liveness: &Liveness,
    tick: Duration,
    stale: Duration,
    stop: &CancellationToken,
) {
    let mut stuck_reported = false;
    loop {
        if liveness.is_alive(stale) {
            notifier.watchdog();
            stuck_reported = false;
        } else if !stuck_reported {
            stuck_reported = true;
            tracing::error!(since_last_progress = ?liveness.since_last_beat(), "Pipeline made no progress; watchdog pings stopped, systemd will restart the agent.");
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(tick) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_render_as_protocol_lines_one_per_line() {
        assert_eq!(
            message(&[State::Ready, State::Status("up\nnow".into())]),
            "READY=1\nSTATUS=up now\n"
        );
        assert_eq!(message(&[State::Watchdog]), "WATCHDOG=1\n");
        assert_eq!(message(&[State::Stopping]), "STOPPING=1\n");
        assert_eq!(message(&[State::Reloading]), "RELOADING=1\n");
    }

    #[test]
    fn notify_socket_names_are_paths_or_abstract() {
        assert_eq!(
            SocketName::parse("/run/systemd/notify"),
            Some(SocketName::Path("/run/systemd/notify".into()))
        );
        assert_eq!(
            SocketName::parse("@sd-notify"),
            Some(SocketName::Abstract(b"sd-notify".to_vec()))
        );
        assert_eq!(SocketName::parse("@"), None);
        assert_eq!(SocketName::parse("relative/path"), None);
        assert_eq!(SocketName::parse(""), None);
    }

    #[test]
    fn the_watchdog_timeout_is_only_for_the_named_pid() {
        assert_eq!(
            watchdog_timeout(Some("30000000"), None, 7),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            watchdog_timeout(Some("30000000"), Some("7"), 7),
            Some(Duration::from_secs(30))
        );
        assert_eq!(watchdog_timeout(Some("30000000"), Some("8"), 7), None);
        assert_eq!(watchdog_timeout(Some("0"), None, 7), None);
        assert_eq!(watchdog_timeout(Some("soon"), None, 7), None);
        assert_eq!(watchdog_timeout(None, None, 7), None);
    }

    #[test]
    fn a_loop_that_stops_beating_stops_the_pings_unless_it_is_waiting() {
        let stale = Duration::from_secs(30);
        assert!(should_ping(Duration::from_secs(5), 0, stale));
        assert!(should_ping(Duration::from_secs(30), 0, stale));
        assert!(!should_ping(Duration::from_secs(31), 0, stale));
        assert!(should_ping(Duration::from_secs(600), 1, stale));
    }

    #[test]
    fn stale_after_is_never_shorter_than_a_long_poll() {
        assert_eq!(
            stale_after(Duration::from_secs(60), 20),
            Duration::from_secs(30)
        );
        assert_eq!(
            stale_after(Duration::from_secs(10), 20),
            Duration::from_secs(30)
        );
    }

    #[test]
    fn a_waiting_guard_counts_while_held_and_beats_when_dropped() {
        let l = Liveness::new();
        assert_eq!(l.waiters(), 0);
        let g = l.waiting();
        assert_eq!(l.waiters(), 1);
        assert!(l.is_alive(Duration::ZERO));
        drop(g);
        assert_eq!(l.waiters(), 0);
        assert!(l.since_last_beat() < Duration::from_secs(1));
    }

    #[test]
    fn notifications_arrive_on_a_path_socket() -> io::Result<()> {
        let dir = std::env::temp_dir().join(format!("sluice-notify-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let path = dir.join("notify.sock");
        let _ = std::fs::remove_file(&path);
        let listener = UnixDatagram::bind(&path)?;
        listener.set_read_timeout(Some(Duration::from_secs(5)))?;
        let n = Notifier::to_socket(path.to_str().unwrap_or_default())?;
        n.ready("up");
        let mut buf = [0u8; 256];
        let len = listener.recv(&mut buf)?;
        assert_eq!(&buf[..len], b"READY=1\nSTATUS=up\n");
        std::fs::remove_dir_all(&dir).ok();
        Ok(())
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn notifications_arrive_on_an_abstract_socket() -> io::Result<()> {
        let name = format!("sluice-notify-test-{}", std::process::id());
        let listener = UnixDatagram::bind_addr(&abstract_addr(name.as_bytes())?)?;
        listener.set_read_timeout(Some(Duration::from_secs(5)))?;
        let n = Notifier::to_socket(&format!("@{name}"))?;
        n.watchdog();
        let mut buf = [0u8; 64];
        let len = listener.recv(&mut buf)?;
        assert_eq!(&buf[..len], b"WATCHDOG=1\n");
        Ok(())
    }

    const WAIT: Duration = Duration::from_millis(400);

    /// Whether a `WATCHDOG=1` arrives within `wait`.
    async fn ping_within(listener: &tokio::net::UnixDatagram, wait: Duration) -> bool {
        let mut buf = [0u8; 64];
        matches!(
            tokio::time::timeout(wait, listener.recv(&mut buf)).await,
            Ok(Ok(n)) if &buf[..n] == b"WATCHDOG=1\n"
        )
    }

    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn a_stuck_pipeline_stops_the_watchdog_pings_and_progress_resumes_them() -> io::Result<()>
    {
        let name = format!("sluice-watchdog-test-{}", std::process::id());
        let std_listener = UnixDatagram::bind_addr(&abstract_addr(name.as_bytes())?)?;
        std_listener.set_nonblocking(true)?;
        let listener = tokio::net::UnixDatagram::from_std(std_listener)?;
        let notifier = Notifier::to_socket(&format!("@{name}"))?;
        let liveness = Liveness::new();
        let stop = CancellationToken::new();
        let tick = Duration::from_millis(50);
        let stale = Duration::from_millis(500);
        let task = {
            let (n, l, s) = (notifier.clone(), liveness.clone(), stop.clone());
            tokio::spawn(async move { watchdog(&n, &l, tick, stale, &s).await })
        };
        // Beating: alive (retried, so a slow test machine cannot make the beat stale first).
        let mut pinged = false;
        for _ in 0..5 {
            liveness.beat();
            if ping_within(&listener, WAIT).await {
                pinged = true;
                break;
            }
        }
        assert!(pinged, "pings while the loop beats");
        // No beats for longer than `stale`: the pings stop.
        tokio::time::sleep(stale + tick * 2).await;
        while ping_within(&listener, Duration::from_millis(10)).await {}
        assert!(!ping_within(&listener, WAIT).await, "no ping while stuck");
        // A legitimate wait counts as alive.
        let waiting = liveness.waiting();
        assert!(ping_within(&listener, WAIT).await, "pings while waiting");
        drop(waiting);
        stop.cancel();
        task.await.map_err(io::Error::other)?;
        Ok(())
    }

    #[test]
    fn without_a_socket_notifications_are_a_no_op() {
        let n = Notifier::default();
        assert!(!n.is_enabled());
        n.ready("nobody listens");
        n.stopping();
    }
}
