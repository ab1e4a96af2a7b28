//! Running the agent as a service: what operators and systemd see.
//!
//! | module | job |
//! |---|---|
//! | [`sd_notify`] | systemd's notification protocol alone (`READY=1`, `WATCHDOG=1`, …) |
//! | [`watchdog`] | readiness, then watchdog pings while the pipeline makes progress |
//! | [`monitor`] | queue and DLQ depth as gauges |
//! | [`dead_letter_check`] | the dead-letter queue checked at start-up (ARN, size), rechecked until it passes |
//! | [`target_check`] | the write target checked at start-up (the procedure, its signature, EXECUTE) |
//! | [`server`] | `/metrics`, `/healthz`, `/readyz`, `/v1/status`, the live page at `/` |
//! | [`recorder`] | the Prometheus recorder, keeping the live figures on the way |
//! | [`live`] | the live figures `/v1/status` serves and `status` reads |
//! | [`history`] | their last 15 minutes, one point a second, for the live page's charts |
//! | [`reload`] | SIGHUP: re-read `agent.toml`, apply `[throttle]`, log what changed |

pub(crate) mod dead_letter_check;
pub(crate) mod history;
pub(crate) mod live;
pub(crate) mod monitor;
pub(crate) mod recorder;
pub(crate) mod reload;
pub(crate) mod sd_notify;
pub(crate) mod server;
pub(crate) mod target_check;
pub(crate) mod watchdog;
