//! Teardown the harness owns ([`Teardown`]): what one test made on the shared servers — its
//! database, every queue named after it (its queue pair, its status queue pair, any other it
//! made as `{name}-…`) and its upload records table — and its directory on disk, removed once.
//! A test never tears down by hand: the removal runs when its [`crate::TestEnv`] is dropped,
//! also when the test fails or panics (a panicking test keeps its directory, for its logs), or
//! earlier by `TestEnv::cleanup` for what must come after it. Drop cannot `.await`, so the
//! removal runs to completion on a thread of its own, with its own current-thread runtime and
//! its own clients (the test's runtime may be the very thread blocked in the drop), bounded in
//! time so that a dead server cannot hang the suite. What it cannot remove is logged; it never
//! panics.

use std::path::PathBuf;
use std::time::Duration;

use sqlx::Connection as _;

use crate::{dynamodb_client, sqs_client};

/// How long one test's teardown may take before it is given up (and logged).
const TEARDOWN_TIMEOUT: Duration = Duration::from_secs(30);
/// `DROP DATABASE … WITH (FORCE)` attempts: a client of the test (a killed agent's last
/// connection) may connect again between the terminations and the drop.
const DROP_ATTEMPTS: u32 = 3;

/// What one test leaves on the servers and on disk, all named after the test.
#[derive(Debug)]
pub(crate) struct Leftovers {
    /// The test's name: its database, the prefix of its queues and of its table.
    pub name: String,
    /// A superuser URL of the cluster the database is on.
    pub admin_url: String,
    /// The SQS- and DynamoDB-API endpoint.
    pub endpoint: String,
    /// The test's own directory (configs, logs), once named.
    pub dir: Option<PathBuf>,
    /// Its upload records table, once named.
    pub table: Option<String>,
}

/// Owns a test's [`Leftovers`] until they are removed: by [`Teardown::now`], or else on drop.
#[derive(Debug)]
pub(crate) struct Teardown {
    left: Option<Leftovers>,
}

impl Teardown {
    /// Armed as soon as the first thing is made, so that a setup failing half-way leaves
    /// nothing either.
    pub(crate) fn new(left: Leftovers) -> Self {
        Self { left: Some(left) }
    }

    /// Also removes `dir` and the DynamoDB table `table`.
    pub(crate) fn also(&mut self, dir: PathBuf, table: String) {
        if let Some(left) = &mut self.left {
            left.dir = Some(dir);
            left.table = Some(table);
        }
    }

    /// Removes everything now, on the caller's runtime; the drop then has nothing left to do.
    pub(crate) async fn now(&mut self) {
        if let Some(left) = self.left.take() {
            report(&left.name.clone(), bounded(left.remove(true)).await);
        }
    }
}

impl Drop for Teardown {
    fn drop(&mut self) {
        let Some(left) = self.left.take() else {
            return;
        };
        let name = left.name.clone();
        // A panicking test keeps its logs to be read; what is on the servers goes either way.
        let keep_dir = std::thread::panicking();
        if let (true, Some(dir)) = (keep_dir, &left.dir) {
            eprintln!("teardown: kept {} for inspection", dir.display());
        }
        let removal = std::thread::Builder::new()
            .name(format!("teardown-{name}"))
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(|e| vec![format!("building a runtime: {e}")])?;
                runtime.block_on(bounded(left.remove(!keep_dir)))
            });
        let outcome = match removal {
            Ok(thread) => thread
                .join()
                .unwrap_or_else(|_| Err(vec!["the teardown thread panicked".to_owned()])),
            Err(e) => Err(vec![format!("starting the teardown thread: {e}")]),
        };
        report(&name, outcome);
    }
}

/// `removal` given at most [`TEARDOWN_TIMEOUT`].
async fn bounded(
    removal: impl std::future::Future<Output = Result<(), Vec<String>>>,
) -> Result<(), Vec<String>> {
    tokio::time::timeout(TEARDOWN_TIMEOUT, removal)
        .await
        .unwrap_or_else(|_| Err(vec![format!("gave up after {TEARDOWN_TIMEOUT:?}")]))
}

/// Logs what could not be removed (a teardown never fails the test).
fn report(name: &str, outcome: Result<(), Vec<String>>) {
    if let Err(problems) = outcome {
        for p in problems {
            eprintln!("teardown of {name}: {p}");
        }
    }
}

impl Leftovers {
    /// Drops the database, deletes the queues and the table, and removes the directory when
    /// `dir`; every step is tried, and the ones that failed are returned.
    async fn remove(self, dir: bool) -> Result<(), Vec<String>> {
        let mut problems = Vec::new();
        if let (true, Some(dir)) = (dir, &self.dir) {
            if let Err(e) = std::fs::remove_dir_all(dir) {
                if e.kind() != std::io::ErrorKind::NotFound {
                    problems.push(format!("removing {}: {e}", dir.display()));
                }
            }
        }
        if let Err(e) = self.drop_database().await {
            problems.push(format!("dropping database {}: {e:#}", self.name));
        }
        if let Err(e) = self.delete_queues().await {
            problems.push(format!("deleting queues {}…: {e:#}", self.name));
        }
        if let Some(table) = &self.table {
            if let Err(e) = self.delete_table(table).await {
                problems.push(format!("deleting table {table}: {e:#}"));
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems)
        }
    }

    async fn drop_database(&self) -> anyhow::Result<()> {
        let mut admin = sqlx::PgConnection::connect(&self.admin_url).await?;
        let statement = format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name);
        let mut attempt = 1;
        let dropped = loop {
            match sqlx::query(&statement).execute(&mut admin).await {
                Err(_) if attempt < DROP_ATTEMPTS => attempt += 1,
                done => break done,
            }
        };
        admin.close().await.ok();
        dropped?;
        Ok(())
    }

    /// Every queue whose name starts with the test's name.
    async fn delete_queues(&self) -> anyhow::Result<()> {
        let sqs = sqs_client(&self.endpoint);
        let listed = sqs
            .list_queues()
            .queue_name_prefix(&self.name)
            .send()
            .await
            .map_err(|e| anyhow::anyhow!("{}", aws_sdk_sqs::error::DisplayErrorContext(e)))?;
        for url in listed.queue_urls.unwrap_or_default() {
            sqs.delete_queue()
                .queue_url(&url)
                .send()
                .await
                .map_err(|e| {
                    anyhow::anyhow!("{url}: {}", aws_sdk_sqs::error::DisplayErrorContext(e))
                })?;
        }
        Ok(())
    }

    /// The upload records table, if an ingest created it.
    async fn delete_table(&self, table: &str) -> anyhow::Result<()> {
        let deleted = dynamodb_client(&self.endpoint)
            .delete_table()
            .table_name(table)
            .send()
            .await;
        match deleted {
            Ok(_) => Ok(()),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_resource_not_found_exception()) =>
            {
                Ok(())
            }
            Err(e) => Err(anyhow::anyhow!(
                "{}",
                aws_sdk_dynamodb::error::DisplayErrorContext(e)
            )),
        }
    }
}
