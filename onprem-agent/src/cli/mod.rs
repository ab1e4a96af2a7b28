//! The `sluice-agent` commands: `main.rs` parses the arguments ([`args`]), loads the
//! configuration and hands each command to its module here.
//!
//! | module | command |
//! |---|---|
//! | [`args`] | the command line's shapes (clap) |
//! | `service` | `run` and `migrate` |
//! | `online` | `check-config --online`: the queues and the procedure target, asked |
//! | `operate` | `status` and `dlq` as commands: stdout, `--watch`, exit codes |
//! | [`status`] | what `status` reports: queue depth, rates, time to drain |
//! | [`dlq`] | dead letters listed, sent back, purged |

pub mod args;
pub mod dlq;
mod online;
mod operate;
mod service;
pub mod status;

use std::process::ExitCode;

pub use online::check as check_online;
pub use operate::{dlq as dlq_command, status as status_command};
pub use service::{migrate, run};

/// Exit code for an invalid configuration, or a start refused until the configuration changes
/// (EX_USAGE in sysexits.h). The unit's `RestartPreventExitStatus` keeps it from looping.
pub const EXIT_CONFIG: u8 = 64;
/// Exit code when a queue or the database could not be asked (EX_UNAVAILABLE in sysexits.h).
pub const EXIT_UNAVAILABLE: u8 = 69;
/// Exit code for a command refused as given (like clap's own usage errors).
pub const EXIT_USAGE: u8 = 2;

/// The async runtime the commands run on; when it cannot start, says so on stderr.
pub fn runtime() -> Result<tokio::runtime::Runtime, ExitCode> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| {
            eprintln!("sluice-agent: cannot start the async runtime: {e}");
            ExitCode::FAILURE
        })
}
