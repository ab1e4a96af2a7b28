//! Metric names, with their units, for every layer to record under: the ground floor of the
//! agent, importing nothing of it. The recorder that renders them is `ops::recorder`.
//!
//! Labels stay low-cardinality: no queue URLs, batch ids or tenants.

pub const RECEIPTS_RECEIVED: &str = "sluice_receipts_received_total";
pub const ROWS_WRITTEN: &str = "sluice_rows_written_total";
pub const RECEIPTS_DUPLICATE: &str = "sluice_receipts_duplicate_total";
pub const RECEIPTS_DEAD_LETTERED: &str = "sluice_receipts_dead_lettered_total";
/// Receipts whose id was stored with other content, refused (`write.on_conflict = "reject"`).
pub const RECEIPTS_CONFLICT: &str = "sluice_receipts_conflict_total";
/// Receipts that replaced a stored version with other content (`write.on_conflict = "update"`).
pub const RECEIPTS_UPDATED: &str = "sluice_receipts_updated_total";
pub const MESSAGES_RECEIVED: &str = "sluice_messages_received_total";
pub const MESSAGES_DELETED: &str = "sluice_messages_deleted_total";
pub const MESSAGES_DEAD_LETTERED: &str = "sluice_messages_dead_lettered_total";
pub const MESSAGES_RELEASED: &str = "sluice_messages_released_total";
/// Held messages whose visibility the heartbeat extended (one per message and extension).
pub const VISIBILITY_EXTENSIONS: &str = "sluice_visibility_extensions_total";
/// Held messages whose visibility could not be extended before it lapsed (after retries).
pub const VISIBILITY_EXTENSION_FAILURES: &str = "sluice_visibility_extension_failures_total";
/// Messages in an envelope version this agent does not read, released to the queue.
pub const MESSAGES_UNKNOWN_VERSION: &str = "sluice_messages_unknown_version_total";
pub const BATCHES: &str = "sluice_batches_total";
pub const COMMIT_SECONDS: &str = "sluice_commit_seconds";
pub const LIMITER_WAIT_SECONDS: &str = "sluice_limiter_wait_seconds";
pub const ERRORS: &str = "sluice_errors_total";
/// Refused rows that could not be sent to the dead-letter queue (their messages are released).
pub const DEAD_LETTER_FAILURES: &str = "sluice_dead_letter_failures_total";
/// Probe writes made while every write is refused (`write_refused`).
pub const WRITE_PROBES: &str = "sluice_write_probes_total";
/// The configured rate: `throttle.rows_per_second` or the schedule window's (the ceiling in
/// adaptive mode), this agent's share of it.
pub const RATE_CONFIGURED: &str = "sluice_rate_configured_rows_per_second";
/// The rate the token bucket refills at now.
pub const RATE_CURRENT: &str = "sluice_rate_rows_per_second";
/// Rate changes, by `cause` (start, schedule, reload, adaptive_increase, adaptive_decrease,
/// share).
pub const RATE_CHANGES: &str = "sluice_rate_changes_total";
/// Why the rate is what it is: 1 for the `reason` in force (fixed, schedule, starting,
/// climbing, ceiling, idle, probe_latency, overload, commit_latency, active_backends,
/// probe_learning, probe_settling, probe_near_limit, probe_failing, database_share,
/// rate_unused), 0 for the others seen before.
pub const RATE_REASON: &str = "sluice_rate_reason";
/// The foreground probe (adaptive mode): its latency over the recent window, by `quantile`
/// (0.5, 0.95, 0.99), its learned baseline, the limit, and the reading held under it (the
/// median of the recent window's five-second windows' `throttle.probe_quantile`, the same
/// statistic as the baseline).
pub const PROBE_LATENCY: &str = "sluice_probe_latency_seconds";
pub const PROBE_BASELINE: &str = "sluice_probe_baseline_seconds";
pub const PROBE_LIMIT: &str = "sluice_probe_limit_seconds";
pub const PROBE_READING: &str = "sluice_probe_reading_seconds";
/// Probes that failed with an error (not a timeout: a slow probe counts as slow).
pub const PROBE_ERRORS: &str = "sluice_probe_errors_total";
/// This agent's part of the total rate (0–1; 1 when it drains alone): `[throttle]` is the
/// database's total across the live agents (`throttle::share`).
pub const RATE_SHARE: &str = "sluice_rate_share";
/// This agent's share of the database's time: seconds its transactions took per second, over
/// the last 10 s (`throttle::busy`; above 1 with transactions in flight at once).
pub const DATABASE_SHARE: &str = "sluice_database_share";
/// Agents whose heartbeat in the `agents` table is live, this one included.
pub const AGENTS_LIVE: &str = "sluice_agents_live";
/// Active client backends in `pg_stat_activity` (adaptive mode with `max_active_backends`).
pub const ACTIVE_BACKENDS: &str = "sluice_active_backends";
/// Configuration reloads (SIGHUP), by `result` (applied, refused).
pub const RELOADS: &str = "sluice_config_reloads_total";
pub const IN_FLIGHT_ROWS: &str = "sluice_in_flight_rows";
/// Decoded bytes (the JSON of each held message, decompressed) held now; bounded by
/// `batch.max_in_flight_bytes`.
pub const IN_FLIGHT_BYTES: &str = "sluice_in_flight_bytes";
/// The most decoded bytes held at once since the agent started (a high-water mark).
pub const IN_FLIGHT_BYTES_MAX: &str = "sluice_in_flight_bytes_max";
pub const DB_UP: &str = "sluice_database_up";
/// 1 while a named condition (label `condition`) stops or endangers progress; see
/// `pipeline::health`.
pub const CONDITION: &str = "sluice_condition";

// Queue monitoring (`monitor`): what GetQueueAttributes says about the queue and its DLQ.
/// Messages by `queue` (main, dlq) and `state` (visible, in_flight, delayed). SQS's figures
/// are approximate and lag by up to a minute.
pub const QUEUE_MESSAGES: &str = "sluice_queue_messages";
/// 1 while the last GetQueueAttributes for `queue` answered, 0 when it failed.
pub const QUEUE_MONITOR_UP: &str = "sluice_queue_monitor_up";
/// Age (now minus SentTimestamp) of the oldest message in the agent's latest receive; 0 after
/// an empty receive. SQS's API has no age of the oldest message (CloudWatch's
/// ApproximateAgeOfOldestMessage is not in GetQueueAttributes): this is what the agent sees.
pub const OLDEST_RECEIVED_AGE_SECONDS: &str = "sluice_oldest_received_message_age_seconds";
/// 1 when PostgreSQL and SQS both answered the monitor's last check (what `/readyz` says).
pub const READY: &str = "sluice_ready";

// Status reporting (`pipeline::report`).
/// Chunk-ledger rows the status queue has not taken yet.
pub const STATUS_UNREPORTED: &str = "sluice_status_unreported_chunks";
/// Chunk reports the status queue took.
pub const STATUS_REPORTS_SENT: &str = "sluice_status_reports_sent_total";
/// Status sends (rounds) that failed, wholly or in part; what failed is re-sent.
pub const STATUS_SEND_FAILURES: &str = "sluice_status_send_failures_total";
/// Photo bytes fetched from S3 (`[photos]`), whole photos checked or not.
pub const PHOTO_BYTES_FETCHED: &str = "sluice_photo_bytes_fetched_total";
/// Photo bytes stored with their receipts (`receipt_photos` rows or files), once each.
pub const PHOTO_BYTES_STORED: &str = "sluice_photo_bytes_stored_total";
/// Photos whose object was missing or did not match the receipt, by `reason` (image_missing,
/// image_checksum): their receipts are dead-lettered.
pub const PHOTOS_REFUSED: &str = "sluice_photos_refused_total";
/// Objects of committed photos that could not be deleted from the bucket (left to its
/// lifecycle rule).
pub const PHOTO_DELETE_FAILURES: &str = "sluice_photo_delete_failures_total";
/// Seconds a batch waited for `throttle.photo_bytes_per_second`.
pub const PHOTO_LIMITER_WAIT_SECONDS: &str = "sluice_photo_limiter_wait_seconds";

/// Counters exported at 0 from the start (by `ops::recorder::install`), not only after their
/// first event: a dashboard's `rate()` of a counter that never moved is then 0, not "no data",
/// and an alert on it can tell "none yet" from "not scraped". All unlabelled.
pub const COUNTERS_FROM_ZERO: &[&str] = &[
    RECEIPTS_RECEIVED,
    ROWS_WRITTEN,
    RECEIPTS_DUPLICATE,
    RECEIPTS_DEAD_LETTERED,
    RECEIPTS_CONFLICT,
    RECEIPTS_UPDATED,
    MESSAGES_RECEIVED,
    MESSAGES_DELETED,
    MESSAGES_DEAD_LETTERED,
    MESSAGES_RELEASED,
    VISIBILITY_EXTENSIONS,
    VISIBILITY_EXTENSION_FAILURES,
    DEAD_LETTER_FAILURES,
    BATCHES,
];
