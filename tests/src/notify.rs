//! A systemd notification socket a test listens on (`NOTIFY_SOCKET`): what the agent tells
//! systemd (`READY=1`, `WATCHDOG=1`, `STOPPING=1`), message by message.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;

/// A bound `NOTIFY_SOCKET`; pass [`NotifySocket::path`] to the agent.
#[derive(Debug)]
pub struct NotifySocket {
    socket: tokio::net::UnixDatagram,
    path: PathBuf,
}

impl NotifySocket {
    /// Binds `notify.sock` in `dir`.
    pub fn bind(dir: &Path) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let path = dir.join("notify.sock");
        let socket = tokio::net::UnixDatagram::bind(&path)
            .with_context(|| format!("binding {}", path.display()))?;
        Ok(Self { socket, path })
    }

    pub fn path(&self) -> &str {
        self.path.to_str().unwrap_or_default()
    }

    /// The next message, or `None` when none arrives within `wait`.
    pub async fn next(&self, wait: Duration) -> Option<String> {
        let mut buf = vec![0u8; 4096];
        match tokio::time::timeout(wait, self.socket.recv(&mut buf)).await {
            Ok(Ok(n)) => Some(String::from_utf8_lossy(&buf[..n]).into_owned()),
            _ => None,
        }
    }

    /// Waits for a message holding the line `line` (such as `WATCHDOG=1`); `false` when none
    /// comes within `wait` of the previous message.
    pub async fn wait_line(&self, line: &str, wait: Duration) -> bool {
        while let Some(m) = self.next(wait).await {
            if m.lines().any(|l| l == line) {
                return true;
            }
        }
        false
    }
}
