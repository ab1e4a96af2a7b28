//! systemd's service notification protocol (`sd_notify`), alone: what to send and where.
//!
//! [`Notifier`] sends `READY=1`, `WATCHDOG=1`, `STOPPING=1`, `RELOADING=1` and `STATUS=…` as
//! datagrams to `$NOTIFY_SOCKET` (a path, or an abstract socket when it starts with `@`).
//! Without `$NOTIFY_SOCKET` (not under systemd, or `Type=` is not `notify`) every call is a
//! no-op. Written here with `std`'s `UnixDatagram`: the protocol is one `sendto` per message.
//! When to send is [`super::watchdog`]'s business.

use std::io;
use std::os::unix::net::{SocketAddr as UnixAddr, UnixDatagram};
use std::sync::Arc;
use std::time::Duration;

/// Environment variable naming the notification socket.
pub const NOTIFY_SOCKET: &str = "NOTIFY_SOCKET";
/// Environment variable with the watchdog timeout in microseconds (`WatchdogSec=`).
pub const WATCHDOG_USEC: &str = "WATCHDOG_USEC";
/// Environment variable with the pid the watchdog is meant for (absent: this process).
pub const WATCHDOG_PID: &str = "WATCHDOG_PID";

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
pub(crate) fn abstract_addr(name: &[u8]) -> io::Result<UnixAddr> {
    use std::os::linux::net::SocketAddrExt as _;
    UnixAddr::from_abstract_name(name)
}

#[cfg(not(target_os = "linux"))]
pub(crate) fn abstract_addr(_name: &[u8]) -> io::Result<UnixAddr> {
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

    #[test]
    fn without_a_socket_notifications_are_a_no_op() {
        let n = Notifier::default();
        assert!(!n.is_enabled());
        n.ready("nobody listens");
        n.stopping();
    }
}
