//! Sluice on-premise agent: drains an SQS queue into PostgreSQL at a rate the database can
//! take, writing each receipt exactly once.
//!
//! # Layout
//!
//! | module | job |
//! |---|---|
//! | [`config`] | `agent.toml` types, environment overrides, validation listing every problem |
//! | [`sqs`] | the SQS calls: receive, delete, visibility, dead-letter; reads per-entry failures |
//! | [`consumer`] | pollers: long-poll, decode, gate on database health and the in-flight budget |
//! | [`batcher`] | groups messages into batches by rows and wait time |
//! | [`limiter`] | the token bucket (receipts/s, burst), its rate changeable while running |
//! | [`throttle`] | decides the rate (base, schedule window, adaptive) and caps transactions |
//! | [`schedule`] | `[[throttle.schedule]]` windows: weekdays + local time range, first match |
//! | [`adaptive`] | the AIMD controller (pure, on injected time) |
//! | [`reload`] | SIGHUP: re-read `agent.toml`, apply `[throttle]`, log what changed |
//! | [`writer`] | one transaction per batch, isolation of refused rows, then delete |
//! | [`store`] | PostgreSQL: pool, migrations, the idempotent batched insert |
//! | [`inflight`] | messages held, heartbeat (visibility extension), release on shutdown |
//! | [`health`] | database up/down, shared by writers and pollers |
//! | [`server`] | `/metrics`, `/healthz`, `/readyz` |
//! | [`metrics`] | metric names and the Prometheus recorder |
//! | [`agent`] | wiring, start-up and shutdown |
//! | [`telemetry`] | logging |
//! | [`notify`] | systemd: `READY=1`, `STOPPING=1`, the watchdog fed by the pipeline's progress |
//! | [`monitor`] | queue and DLQ depth (GetQueueAttributes) as gauges |
//! | [`status`] | `sluice-agent status`: depth, rate, time to drain, from SQS, PostgreSQL and `/metrics` |
//! | [`dlq`] | `sluice-agent dlq list / redrive / purge` |

pub mod adaptive;
pub mod agent;
pub mod batcher;
pub mod config;
pub mod consumer;
pub mod dlq;
pub mod health;
pub mod inflight;
pub mod limiter;
pub mod metrics;
pub mod monitor;
pub mod notify;
pub mod reload;
pub mod schedule;
pub mod server;
pub mod sqs;
pub mod status;
pub mod store;
pub mod telemetry;
pub mod throttle;
pub mod writer;

pub use agent::{run, start, Clients, RunningAgent};
pub use config::AgentConfig;
