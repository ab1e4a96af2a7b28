//! What can go wrong talking to PostgreSQL, sorted by what the writer does about it: a
//! SQLSTATE is a lost connection (retry as is), overload (retry, throttle backs off) or a
//! refusal (find the rows at fault; see `pipeline::isolate`).
//!
//! Keeps the guarantee "A row the database refuses is the row's fault, whatever the SQLSTATE":
//! `classify_sqlstate` calls every answer a refusal but a lost connection, a shutdown or overload.

/// What went wrong talking to the database, sorted by what the caller does about it.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database answered and refused the statement: a constraint or a bad value, a
    /// trigger's `RAISE EXCEPTION`, a column added by hand, a revoked permission, a missing
    /// column. Retrying the same rows cannot help: the batch is split to find the rows at
    /// fault, and when every row fails the same way the fault is systemic (see
    /// `pipeline::refusal`).
    #[error("database refused the write ({code}): {message}")]
    Refused { code: String, message: String },
    /// The write may not have reached the database or its outcome is unknown: connection lost
    /// (I/O, SQLSTATE class 08), the server shutting down or not accepting connections
    /// (class 57 other than 57014), a read-only standby (25006), a pool timeout. Retried with
    /// backoff; nothing is deleted.
    #[error("database unavailable: {0}")]
    Unavailable(String),
    /// The database is overloaded (SQLSTATE class 53 such as too_many_connections, 55P03
    /// lock_not_available, 57014 statement timeout, 40001 serialization_failure, 40P01
    /// deadlock): retried like `Unavailable`, and a signal for the adaptive throttle to back off.
    #[error("database overloaded ({code}): {message}")]
    Overloaded { code: String, message: String },
    /// A photo fetched into the agent's spool could not be read back for the transaction: the
    /// agent's own disk, not the database. Nothing is committed without its photo; the writer
    /// retries the batch, fetching its photos again (`photo_store_unavailable`).
    #[error("the agent's photo spool: {0}")]
    Spool(String),
}

/// What a SQLSTATE tells the writer to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SqlStateClass {
    /// The connection or the server went away: retry the batch as it is.
    Lost,
    /// Too much load: retry, and let the throttle back off.
    Overload,
    /// The database refused the statement: find the rows at fault.
    Refused,
}

/// Whether a SQLSTATE means "too much load" rather than "down" or "bad data".
pub fn is_overload_code(code: &str) -> bool {
    code.starts_with("53") || matches!(code, "55P03" | "57014" | "40001" | "40P01")
}

/// Sorts a SQLSTATE: overload first (57014 is in the operator-intervention class but means a
/// statement timeout), then connection exceptions (08), operator intervention such as
/// admin/crash shutdown or "cannot connect now" (57), and a read-only transaction (25006, a
/// standby after a failover); everything else the server answers with is a refusal.
pub fn classify_sqlstate(code: &str) -> SqlStateClass {
    if is_overload_code(code) {
        SqlStateClass::Overload
    } else if code.starts_with("08") || code.starts_with("57") || code == "25006" {
        SqlStateClass::Lost
    } else {
        SqlStateClass::Refused
    }
}

impl StoreError {
    /// The database refused the statement (see [`StoreError::Refused`]).
    pub fn is_refused(&self) -> bool {
        matches!(self, StoreError::Refused { .. })
    }

    /// The SQLSTATE of a refusal.
    pub fn refused_code(&self) -> Option<&str> {
        match self {
            StoreError::Refused { code, .. } => Some(code),
            _ => None,
        }
    }

    /// Whether both are refusals with the same SQLSTATE and message (the same constraint,
    /// column or trigger text).
    pub fn same_refusal(&self, other: &StoreError) -> bool {
        match (self, other) {
            (
                StoreError::Refused { code, message },
                StoreError::Refused {
                    code: c2,
                    message: m2,
                },
            ) => code == c2 && message == m2,
            _ => false,
        }
    }

    /// A short label for metrics and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            StoreError::Refused { .. } => "refused",
            StoreError::Unavailable(_) => "unavailable",
            StoreError::Overloaded { .. } => "overload",
            StoreError::Spool(_) => "spool",
        }
    }

    pub fn is_overload(&self) -> bool {
        matches!(self, StoreError::Overloaded { .. })
    }
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        // Only an answer from the server carries a SQLSTATE; I/O, TLS, protocol and pool errors
        // mean the connection is gone or was never had.
        if let sqlx::Error::Database(db) = &e {
            if let Some(code) = db.code() {
                let message = db.message().to_owned();
                return match classify_sqlstate(&code) {
                    SqlStateClass::Refused => StoreError::Refused {
                        code: code.into_owned(),
                        message,
                    },
                    SqlStateClass::Overload => StoreError::Overloaded {
                        code: code.into_owned(),
                        message,
                    },
                    SqlStateClass::Lost => StoreError::Unavailable(e.to_string()),
                };
            }
        }
        StoreError::Unavailable(e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overload_sqlstates_are_told_apart_from_outages_and_bad_data() {
        for code in ["53300", "53400", "55P03", "57014", "40001", "40P01"] {
            assert!(is_overload_code(code), "{code}");
        }
        for code in ["08006", "57P01", "22P02", "23505", "42P01"] {
            assert!(!is_overload_code(code), "{code}");
        }
    }

    #[test]
    fn each_sqlstate_class_has_one_outcome() {
        use SqlStateClass::*;
        let cases = [
            // Connection exceptions: the connection is gone.
            ("08000", Lost),
            ("08003", Lost),
            ("08006", Lost),
            ("08P01", Lost),
            // Operator intervention: admin shutdown, crash shutdown, cannot connect now,
            // database dropped, idle session timeout.
            ("57P01", Lost),
            ("57P02", Lost),
            ("57P03", Lost),
            ("57P04", Lost),
            ("57P05", Lost),
            ("57000", Lost),
            // A standby after a failover does not take writes.
            ("25006", Lost),
            // Overload: insufficient resources, lock and statement timeouts, serialization.
            ("53000", Overload),
            ("53100", Overload),
            ("53200", Overload),
            ("53300", Overload),
            ("53400", Overload),
            ("55P03", Overload),
            ("57014", Overload),
            ("40001", Overload),
            ("40P01", Overload),
            // Refusals: data exceptions and constraints (one row), and what fails for every row.
            ("22001", Refused),
            ("22P02", Refused),
            ("22021", Refused),
            ("23502", Refused),
            ("23503", Refused),
            ("23505", Refused),
            ("23514", Refused),
            ("54000", Refused),
            ("P0001", Refused),
            ("42501", Refused),
            ("42703", Refused),
            ("42P01", Refused),
            ("42804", Refused),
            ("25P02", Refused),
            ("0A000", Refused),
            ("XX000", Refused),
        ];
        for (code, want) in cases {
            assert_eq!(classify_sqlstate(code), want, "{code}");
        }
    }

    #[test]
    fn the_same_refusal_has_the_same_sqlstate_and_message() {
        let r = |code: &str, message: &str| StoreError::Refused {
            code: code.into(),
            message: message.into(),
        };
        assert!(r("23514", "check a").same_refusal(&r("23514", "check a")));
        assert!(!r("23514", "check a").same_refusal(&r("23514", "check b")));
        assert!(!r("23514", "check a").same_refusal(&r("23502", "check a")));
        assert!(!StoreError::Unavailable("x".into()).same_refusal(&r("23514", "x")));
    }

    #[test]
    fn errors_without_an_answer_from_the_server_are_outages() {
        let io = StoreError::from(sqlx::Error::Io(std::io::Error::new(
            std::io::ErrorKind::ConnectionReset,
            "reset",
        )));
        assert_eq!(io.kind(), "unavailable");
        assert_eq!(
            StoreError::from(sqlx::Error::PoolTimedOut).kind(),
            "unavailable"
        );
        assert_eq!(
            StoreError::from(sqlx::Error::PoolClosed).kind(),
            "unavailable"
        );
        assert!(!io.is_refused());
        assert_eq!(io.refused_code(), None);
    }
}
