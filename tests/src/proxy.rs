//! A TCP proxy for fault injection: sits between the agent and PostgreSQL or SQS and, on
//! command, adds latency, refuses or resets connections, or cuts a PostgreSQL connection right
//! around `COMMIT`.
//!
//! The `COMMIT` trigger reads the client's bytes: sqlx sends `COMMIT` as a simple-query
//! message (`'Q'`, length, `COMMIT\0`), so the proxy can forward it and then cut the
//! connection before the server's answer reaches the client — a commit that happened, whose
//! outcome the client cannot know. That is the case guarantee 1 is about.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

/// What the proxy does with traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Forward everything.
    Pass,
    /// Forward, delaying every chunk in both directions.
    Latency(Duration),
    /// Accept connections and close them at once (a server that is down or restarting).
    Refuse,
}

/// When to cut a connection that carries a `COMMIT`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommitCut {
    /// Never.
    Off,
    /// Forward `COMMIT` to the server, then reset the connection before its answer comes back:
    /// committed, outcome unknown to the client.
    AfterForwarding,
    /// Reset the connection instead of forwarding `COMMIT`: not committed, outcome unknown.
    BeforeForwarding,
}

#[derive(Debug)]
struct Shared {
    target: SocketAddr,
    mode: Mutex<Mode>,
    /// How many more commits to cut (each cut uses one).
    commit_cuts: Mutex<(CommitCut, u32)>,
    /// Cancelled to reset every open connection; replaced by a fresh token after.
    reset: Mutex<CancellationToken>,
    commits_cut: AtomicU64,
    connections: AtomicU64,
}

/// A running proxy; stops when dropped.
#[derive(Debug)]
pub struct Proxy {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    _stop: tokio_util::sync::DropGuard,
}

impl Proxy {
    /// Listens on 127.0.0.1:0 and forwards to `target`.
    pub async fn start(target: SocketAddr) -> std::io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            target,
            mode: Mutex::new(Mode::Pass),
            commit_cuts: Mutex::new((CommitCut::Off, 0)),
            reset: Mutex::new(CancellationToken::new()),
            commits_cut: AtomicU64::new(0),
            connections: AtomicU64::new(0),
        });
        let stop = CancellationToken::new();
        let accept_shared = shared.clone();
        let accept_stop = stop.clone();
        tokio::spawn(async move {
            loop {
                let accepted = tokio::select! {
                    _ = accept_stop.cancelled() => return,
                    a = listener.accept() => a,
                };
                let Ok((client, _)) = accepted else { continue };
                let shared = accept_shared.clone();
                let stop = accept_stop.clone();
                tokio::spawn(async move { serve(shared, client, stop).await });
            }
        });
        Ok(Self {
            addr,
            shared,
            _stop: stop.drop_guard(),
        })
    }

    /// Sets what happens to traffic from now on (open connections included).
    pub fn set_mode(&self, mode: Mode) {
        *lock(&self.shared.mode) = mode;
    }

    /// Cuts the next `times` connections that send `COMMIT`, as `how` says.
    pub fn cut_commits(&self, how: CommitCut, times: u32) {
        *lock(&self.shared.commit_cuts) = (how, times);
    }

    /// Resets every open connection now.
    pub fn reset_all(&self) {
        let mut token = lock(&self.shared.reset);
        token.cancel();
        *token = CancellationToken::new();
    }

    /// Commits cut so far.
    pub fn commits_cut(&self) -> u64 {
        self.shared.commits_cut.load(Ordering::SeqCst)
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> u64 {
        self.shared.connections.load(Ordering::SeqCst)
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Makes the socket close with RST rather than FIN, as a crashed peer or a broken network
/// would. Tokio deprecates `set_linger` because a non-zero linger blocks on drop; a zero linger
/// does not block, it discards and resets at once.
#[allow(deprecated)]
fn abortive_close(stream: &TcpStream) {
    let _ = stream.set_linger(Some(Duration::ZERO));
}

fn reset(stream: TcpStream) {
    abortive_close(&stream);
    drop(stream);
}

async fn serve(shared: Arc<Shared>, client: TcpStream, stop: CancellationToken) {
    shared.connections.fetch_add(1, Ordering::SeqCst);
    if *lock(&shared.mode) == Mode::Refuse {
        reset(client);
        return;
    }
    let Ok(server) = TcpStream::connect(shared.target).await else {
        reset(client);
        return;
    };
    // Every close is an RST: a cut looks like a crashed peer or a broken network, not a
    // polite shutdown.
    for s in [&client, &server] {
        let _ = s.set_nodelay(true);
        abortive_close(s);
    }
    let reset_token = lock(&shared.reset).clone();
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    let cut = CancellationToken::new();
    // Set before a COMMIT that is to be cut goes to the server: from then on nothing the
    // server says reaches the client.
    let muted = Arc::new(std::sync::atomic::AtomicBool::new(false));

    let up_shared = shared.clone();
    let up_cut = cut.clone();
    let up_muted = muted.clone();
    let upstream = async move {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = match client_read.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            let chunk = &buf[..n];
            delay(&up_shared).await;
            let refusing = *lock(&up_shared.mode) == Mode::Refuse;
            let commit = contains_commit(chunk);
            let how = if commit {
                let mut cuts = lock(&up_shared.commit_cuts);
                if cuts.1 > 0 && cuts.0 != CommitCut::Off {
                    cuts.1 -= 1;
                    cuts.0
                } else {
                    CommitCut::Off
                }
            } else {
                CommitCut::Off
            };
            if refusing || how == CommitCut::BeforeForwarding {
                if how != CommitCut::Off {
                    up_shared.commits_cut.fetch_add(1, Ordering::SeqCst);
                }
                up_cut.cancel();
                return;
            }
            if how == CommitCut::AfterForwarding {
                up_muted.store(true, Ordering::SeqCst);
            }
            if server_write.write_all(chunk).await.is_err() {
                return;
            }
            if how == CommitCut::AfterForwarding {
                up_shared.commits_cut.fetch_add(1, Ordering::SeqCst);
                // Give the server time to read and run the COMMIT; its answer is muted.
                let _ = server_write.flush().await;
                tokio::time::sleep(Duration::from_millis(200)).await;
                up_cut.cancel();
                return;
            }
        }
    };
    let down_shared = shared.clone();
    let downstream = async move {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = match server_read.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            delay(&down_shared).await;
            if muted.load(Ordering::SeqCst) {
                return;
            }
            if client_write.write_all(&buf[..n]).await.is_err() {
                return;
            }
        }
    };
    // Whichever ends first ends the connection; a cut or a reset ends it with an RST.
    tokio::select! {
        _ = upstream => {}
        _ = downstream => {}
        _ = cut.cancelled() => {}
        _ = reset_token.cancelled() => {}
        _ = stop.cancelled() => {}
    }
}

async fn delay(shared: &Shared) {
    let mode = *lock(&shared.mode);
    if let Mode::Latency(d) = mode {
        tokio::time::sleep(d).await;
    }
}

/// Whether a chunk of client bytes holds a simple-query `COMMIT` message.
fn contains_commit(chunk: &[u8]) -> bool {
    const MSG: &[u8] = b"COMMIT\0";
    chunk
        .windows(MSG.len())
        .enumerate()
        .any(|(i, w)| w.eq_ignore_ascii_case(MSG) && i >= 5 && chunk[i - 5] == b'Q')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_simple_query_commit_is_recognised() {
        let mut msg = vec![b'Q'];
        msg.extend(11u32.to_be_bytes());
        msg.extend(b"COMMIT\0");
        assert!(contains_commit(&msg));
        let mut other = vec![b'Q'];
        other.extend(28u32.to_be_bytes());
        other.extend(b"SELECT 'COMMIT\0");
        assert!(!contains_commit(&other));
        assert!(!contains_commit(b"COMMIT\0"));
    }
}
