//! Whether the database is taking writes. Writers set it from what their transactions see;
//! pollers wait on it, so nothing new is received while PostgreSQL is down (no receive-count
//! burn that would push good data into the dead-letter queue).

use tokio::sync::watch;

#[derive(Debug, Clone)]
pub struct Health {
    db_up: watch::Sender<bool>,
}

impl Default for Health {
    fn default() -> Self {
        Self::new()
    }
}

impl Health {
    pub fn new() -> Self {
        Self {
            db_up: watch::Sender::new(true),
        }
    }

    pub fn db_is_up(&self) -> bool {
        *self.db_up.borrow()
    }

    /// Marks the database down; logs only on the transition.
    pub fn db_down(&self, error: &dyn std::fmt::Display) {
        if self.db_up.send_replace(false) {
            tracing::error!(error = %error, "PostgreSQL is not taking writes; receiving paused, retrying with backoff.");
            metrics::gauge!(crate::ops::metrics::DB_UP).set(0.0);
        }
    }

    /// Marks the database up; logs only on the transition.
    pub fn db_up(&self) {
        if !self.db_up.send_replace(true) {
            tracing::info!("PostgreSQL is taking writes again; receiving resumed.");
            metrics::gauge!(crate::ops::metrics::DB_UP).set(1.0);
        }
    }

    /// Resolves once the database is up.
    pub async fn wait_db_up(&self) {
        let mut rx = self.db_up.subscribe();
        let _ = rx.wait_for(|up| *up).await;
    }
}
