//! The end-to-end suite, as one test binary: the harness and its dependencies (sqlx, the AWS
//! SDK, axum) are compiled and linked once, not once per file; as 27 binaries that took
//! minutes of a cold `make test` on two cores. Each module is one file of scenarios against the
//! real PostgreSQL and SQS-API server; run one with `cargo test -p sluice-e2e --test e2e
//! probe::`, or one test by its name.

mod bridge;
mod corrections_in_a_refused_batch;
mod customer_conflict;
mod customer_db;
mod customer_ingest;
mod customer_memory;
mod customer_sqs;
mod customer_triage;
mod faults;
mod held_receives;
mod operations;
mod photos;
mod photos_through_the_bridge;
mod pictures;
mod probe;
mod procedure_target;
mod shared_budget;
mod status_reports;
mod status_reports_bind_to_the_accepted_upload;
mod store_write;
mod systemd;
mod the_status_endpoint_folds_reports_and_sends_webhooks;
mod the_status_endpoint_follows_a_real_agent;
mod throttle;
mod upload_photos;
mod upload_wait;
mod webhook_jobs_end;
