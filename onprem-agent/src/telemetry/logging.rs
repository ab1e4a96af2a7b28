//! Logging setup: JSON lines for journald, or human-readable text, every line scrubbed of the
//! database password (see [`crate::config::secret`]) before it is written.

use std::io::{IsTerminal as _, Write};

use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::EnvFilter;

use crate::config::{secret, LogFormat};

/// Installs the global subscriber (a second call is a no-op, e.g. in tests). Logs go to stderr.
pub fn init(format: LogFormat, level: &str) {
    let filter = EnvFilter::try_new(level).unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(Scrubbed);
    let _ = match format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .try_init(),
        // Colour only for a person at a terminal: journald and log files get plain text.
        LogFormat::Pretty => builder
            .with_target(false)
            .with_ansi(std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none())
            .try_init(),
    };
}

/// Makes one [`ScrubbedLine`] per event, written to stderr.
struct Scrubbed;

impl<'a> MakeWriter<'a> for Scrubbed {
    type Writer = ScrubbedLine<std::io::Stderr>;

    fn make_writer(&'a self) -> Self::Writer {
        ScrubbedLine::new(std::io::stderr())
    }
}

/// Collects one formatted event and writes it, scrubbed, when dropped: a secret is never cut
/// in two by separate writes.
struct ScrubbedLine<W: Write> {
    buf: Vec<u8>,
    out: W,
}

impl<W: Write> ScrubbedLine<W> {
    fn new(out: W) -> Self {
        Self {
            buf: Vec::with_capacity(256),
            out,
        }
    }
}

impl<W: Write> Write for ScrubbedLine<W> {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let text = String::from_utf8_lossy(&self.buf);
        let result = self.out.write_all(secret::scrub(&text).as_bytes());
        self.buf.clear();
        result
    }
}

impl<W: Write> Drop for ScrubbedLine<W> {
    fn drop(&mut self) {
        // Nowhere to report a failed log write.
        let _ = self.flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_log_line_is_written_whole_and_without_the_password() {
        secret::register("log-line-pw-7781");
        let mut out = Vec::new();
        {
            let mut line = ScrubbedLine::new(&mut out);
            // Written in pieces that cut the secret in two.
            line.write_all(b"{\"error\":\"auth failed for log-line")
                .unwrap_or_default();
            line.write_all(b"-pw-7781\"}\n").unwrap_or_default();
        }
        assert_eq!(
            String::from_utf8_lossy(&out),
            "{\"error\":\"auth failed for ***\"}\n"
        );
    }
}
