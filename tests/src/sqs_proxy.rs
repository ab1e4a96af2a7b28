//! An HTTP proxy in front of the SQS-API server that makes batch calls half-fail inside a 200
//! answer, as SQS does under load: for an armed action (`SendMessageBatch`,
//! `DeleteMessageBatch`, `ChangeMessageVisibilityBatch`), every other entry is withheld from
//! the server and reported back in `Failed` with `SenderFault: false`. A client that ignores
//! `Failed` loses those entries; one that retries them loses nothing.
//!
//! Speaks just enough HTTP/1.1 for the AWS SDK's JSON protocol (`X-Amz-Target: AmazonSQS.*`,
//! bodies with `Content-Length`): each request goes to the server on a fresh connection with
//! `Connection: close`, and its answer is read to the end, rewritten, and returned with a
//! correct `Content-Length`.
//!
//! It can also hold back `ReceiveMessage` answers that carry messages
//! ([`SqsProxy::hold_receives`]), to cut a client off while an answer is on its way.
//!
//! It also counts every request it forwards by action and by the queue or table it names
//! ([`SqsProxy::requests`]), for the bench's request counts; DynamoDB's JSON protocol passes
//! through it the same way.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

#[derive(Debug, Default)]
struct Shared {
    /// Action → how many more calls to half-fail.
    armed: Mutex<HashMap<String, u32>>,
    /// Entries withheld and reported failed, in all.
    withheld: AtomicU64,
    /// Requests forwarded, by (`X-Amz-Target`, `QueueUrl` or `TableName`).
    requests: Mutex<HashMap<(String, String), u64>>,
    /// How long to hold back a `ReceiveMessage` answer that carries messages.
    hold_receives: Mutex<Option<Duration>>,
    /// Such answers held back so far.
    held: AtomicU64,
}

/// A running proxy; stops when dropped.
#[derive(Debug)]
pub struct SqsProxy {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    _stop: tokio_util::sync::DropGuard,
}

impl SqsProxy {
    /// Listens on 127.0.0.1:0 in front of the server at `target`.
    pub async fn start(target: SocketAddr) -> std::io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared::default());
        let stop = CancellationToken::new();
        let (s, st) = (shared.clone(), stop.clone());
        tokio::spawn(async move {
            loop {
                let accepted = tokio::select! {
                    _ = st.cancelled() => return,
                    a = listener.accept() => a,
                };
                let Ok((client, _)) = accepted else { continue };
                let s = s.clone();
                tokio::spawn(async move {
                    let _ = serve(s, client, target).await;
                });
            }
        });
        Ok(Self {
            addr,
            shared,
            _stop: stop.drop_guard(),
        })
    }

    /// The endpoint URL to give a client.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Half-fails the next `calls` calls of `action` (e.g. `"DeleteMessageBatch"`).
    pub fn half_fail(&self, action: &str, calls: u32) {
        self.shared
            .armed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(action.to_owned(), calls);
    }

    /// Holds back every `ReceiveMessage` answer that carries messages for `delay` before
    /// passing it on: a client cut off meanwhile drops an answer the server has already given,
    /// whose messages are then hidden for their visibility timeout.
    pub fn hold_receives(&self, delay: Duration) {
        *self
            .shared
            .hold_receives
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some(delay);
    }

    /// `ReceiveMessage` answers with messages held back so far (see [`Self::hold_receives`]).
    pub fn held(&self) -> u64 {
        self.shared.held.load(Ordering::SeqCst)
    }

    /// Entries withheld and reported failed so far.
    pub fn withheld(&self) -> u64 {
        self.shared.withheld.load(Ordering::SeqCst)
    }

    /// Requests forwarded so far, by (`X-Amz-Target`, e.g. `AmazonSQS.ReceiveMessage` or
    /// `DynamoDB_20120810.UpdateItem`; the `QueueUrl` or `TableName` in the body, or "").
    pub fn requests(&self) -> HashMap<(String, String), u64> {
        self.shared
            .requests
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

/// The queue or table a JSON-protocol request names.
fn resource(body: &[u8]) -> String {
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "PascalCase")]
    struct Names {
        queue_url: Option<String>,
        table_name: Option<String>,
    }
    serde_json::from_slice::<Names>(body)
        .ok()
        .and_then(|n| n.queue_url.or(n.table_name))
        .unwrap_or_default()
}

/// One HTTP message: head lines and body.
struct Message {
    start: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Message {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn set_body(&mut self, body: Vec<u8>) {
        self.headers
            .retain(|(k, _)| !k.eq_ignore_ascii_case("content-length"));
        self.headers
            .push(("Content-Length".into(), body.len().to_string()));
        self.body = body;
    }

    fn to_bytes(&self) -> Vec<u8> {
        let mut out = format!("{}\r\n", self.start).into_bytes();
        for (k, v) in &self.headers {
            out.extend(format!("{k}: {v}\r\n").as_bytes());
        }
        out.extend(b"\r\n");
        out.extend(&self.body);
        out
    }
}

/// Reads a request head and its `Content-Length` body; `None` at a clean end of stream.
async fn read_request<R: tokio::io::AsyncRead + Unpin>(
    reader: &mut BufReader<R>,
) -> std::io::Result<Option<Message>> {
    let mut start = String::new();
    if reader.read_line(&mut start).await? == 0 {
        return Ok(None);
    }
    let mut headers = Vec::new();
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).await?;
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some((k, v)) = line.split_once(':') {
            headers.push((k.trim().to_owned(), v.trim().to_owned()));
        }
    }
    let mut msg = Message {
        start: start.trim_end().to_owned(),
        headers,
        body: Vec::new(),
    };
    let len: usize = msg
        .header("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0; len];
    reader.read_exact(&mut body).await?;
    msg.body = body;
    Ok(Some(msg))
}

/// Parses a whole response read to EOF.
fn parse_response(raw: &[u8]) -> Option<Message> {
    let end = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = std::str::from_utf8(&raw[..end]).ok()?;
    let mut lines = head.split("\r\n");
    let start = lines.next()?.to_owned();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect();
    let mut msg = Message {
        start,
        headers,
        body: Vec::new(),
    };
    let body = raw[end + 4..].to_vec();
    // Whatever framing the server used, the client gets a Content-Length.
    msg.headers.retain(|(k, _)| {
        !k.eq_ignore_ascii_case("transfer-encoding") && !k.eq_ignore_ascii_case("connection")
    });
    msg.set_body(body);
    Some(msg)
}

async fn serve(shared: Arc<Shared>, client: TcpStream, target: SocketAddr) -> std::io::Result<()> {
    let (read, mut write) = client.into_split();
    let mut reader = BufReader::new(read);
    while let Some(mut request) = read_request(&mut reader).await? {
        let target_header = request.header("x-amz-target").unwrap_or("").to_owned();
        *shared
            .requests
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry((target_header, resource(&request.body)))
            .or_default() += 1;
        let action = request
            .header("x-amz-target")
            .and_then(|t| t.strip_prefix("AmazonSQS."))
            .unwrap_or("")
            .to_owned();
        let armed = {
            let mut armed = shared.armed.lock().unwrap_or_else(|p| p.into_inner());
            match armed.get_mut(&action) {
                Some(n) if *n > 0 => {
                    *n -= 1;
                    true
                }
                _ => false,
            }
        };
        let mut withheld: Vec<String> = Vec::new();
        if armed {
            if let Ok(mut body) = serde_json::from_slice::<Value>(&request.body) {
                if let Some(entries) = body["Entries"].as_array_mut() {
                    // Entries 1, 3, 5, … are withheld; entry 0 always goes (SQS refuses an
                    // empty batch).
                    let mut kept = Vec::new();
                    for (i, e) in entries.drain(..).enumerate() {
                        if i % 2 == 1 {
                            withheld.push(e["Id"].as_str().unwrap_or_default().to_owned());
                        } else {
                            kept.push(e);
                        }
                    }
                    *entries = kept;
                }
                request.set_body(serde_json::to_vec(&body)?);
            }
        }
        request
            .headers
            .retain(|(k, _)| !k.eq_ignore_ascii_case("connection"));
        request.headers.push(("Connection".into(), "close".into()));
        let mut upstream = TcpStream::connect(target).await?;
        upstream.write_all(&request.to_bytes()).await?;
        let mut raw = Vec::new();
        upstream.read_to_end(&mut raw).await?;
        let Some(mut response) = parse_response(&raw) else {
            return Ok(());
        };
        if !withheld.is_empty() {
            if let Ok(mut body) = serde_json::from_slice::<Value>(&response.body) {
                let failed = body
                    .as_object_mut()
                    .map(|o| o.entry("Failed").or_insert_with(|| json!([])));
                if let Some(Value::Array(failed)) = failed {
                    for id in &withheld {
                        failed.push(json!({
                            "Id": id,
                            "SenderFault": false,
                            "Code": "InternalError",
                            "Message": "withheld by the test proxy",
                        }));
                    }
                    shared
                        .withheld
                        .fetch_add(withheld.len() as u64, Ordering::SeqCst);
                }
                response.set_body(serde_json::to_vec(&body)?);
            }
        }
        let hold = *shared
            .hold_receives
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if let (Some(delay), "ReceiveMessage") = (hold, action.as_str()) {
            let carries = serde_json::from_slice::<Value>(&response.body)
                .is_ok_and(|b| b["Messages"].as_array().is_some_and(|m| !m.is_empty()));
            if carries {
                shared.held.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(delay).await;
            }
        }
        write.write_all(&response.to_bytes()).await?;
    }
    Ok(())
}
