//! Sluice on-premise agent: drains an SQS queue into PostgreSQL at a rate the database can
//! take, writing each receipt exactly once.
//!
//! # Layout
//!
//! | module | job |
//! |---|---|
//! | [`config`] | `agent.toml` types, environment overrides, validation listing every problem |
//! | [`telemetry`] | metric names and logging: the ground floor beside `config` |
//! | `io` | the adapters: `sqs` (the only AWS SDK caller), `store` (the only SQL) |
//! | `pipeline` | pollers → batcher → writers, in-flight messages and their heartbeat, liveness |
//! | `throttle` | the token bucket, schedules, the adaptive controller and its foreground probe, the transaction cap |
//! | `ops` | systemd notify and watchdog, queue monitor, metrics recorder, HTTP server (`/metrics`, `/v1/status`), reload |
//! | [`cli`] | `sluice-agent status` and `sluice-agent dlq` |
//! | `agent` | wiring, start-up and shutdown |
//!
//! The folders are floors and import only downward: `agent` and `cli` above `ops`, above
//! `pipeline`, above `throttle`, above `io`, above `config` and `telemetry` (the ground floor).
//! A module may use its own floor and the floors below it, never one above; `tests/layers.rs`
//! fails on any import from a lower floor to a higher one.

mod agent;
pub mod cli;
pub mod config;
mod io;
mod ops;
mod pipeline;
pub mod telemetry;
mod throttle;

pub use agent::{run, start, Clients, RunningAgent, StartRefused};
pub use config::AgentConfig;
pub use io::sqs::{DeadLetterProblem, NoRootCertificates, Queue, QueueFacts};
pub use io::store::{
    LedgerEntry, ProbeError, Row, Store, TargetProblem, WriteOutcome, RECEIPTS_PER_MESSAGE,
    RECENT_RATE,
};
pub use ops::reload::on_sighup;
pub use ops::target_check::TargetRefused;
pub use pipeline::liveness::STALL_SWITCH;
