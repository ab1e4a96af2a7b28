//! Unit tests of loading and validating `agent.toml`: defaults, environment overrides,
//! secrets, and the problems listed with their full keys.

use super::*;

const MINIMAL: &str = r#"
[queue]
url = "http://127.0.0.1:5000/123456789012/q"
[database]
url = "postgres://postgres@127.0.0.1:5432/db"
"#;

fn load(text: &str, env: &[(&str, &str)]) -> Result<AgentConfig, ConfigError> {
    AgentConfig::from_toml_with_env(
        text,
        env.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
    )
}

#[test]
fn minimal_file_gets_documented_defaults() {
    let c = load(MINIMAL, &[]).expect("valid");
    assert_eq!(c.queue.pollers, 2);
    assert_eq!(c.queue.wait_seconds, 20);
    assert_eq!(c.throttle.rows_per_second, 500);
    assert_eq!(c.throttle.burst, 1000);
    assert_eq!(c.batch.max_rows, 500);
    assert_eq!(c.database.schema, "sluice");
    assert_eq!(c.server.listen, "127.0.0.1:9187");
}

#[test]
fn environment_overrides_a_key_from_the_file() {
    let c = load(MINIMAL, &[("SLUICE__THROTTLE__ROWS_PER_SECOND", "800")]).expect("valid");
    assert_eq!(c.throttle.rows_per_second, 800);
}

#[test]
fn environment_supplies_the_password() {
    let c = load(MINIMAL, &[("SLUICE__DATABASE__PASSWORD", "s3cret")]).expect("valid");
    assert_eq!(c.database.password.as_deref(), Some("s3cret"));
    assert!(!c.redacted().to_string().contains("s3cret"));
}

#[test]
fn unrelated_environment_variables_are_ignored() {
    let c = load(MINIMAL, &[("SLUICE_QUEUE_URL", "x"), ("PATH", "/bin")]).expect("valid");
    assert_eq!(c.queue.url, "http://127.0.0.1:5000/123456789012/q");
}

#[test]
fn every_problem_is_listed_at_once() {
    let text = r#"
[queue]
url = "not a url"
wait_seconds = 30
[database]
url = "mysql://x"
schema = "Bad-Schema"
[throttle]
rows_per_second = 0
burst = 10
[batch]
max_rows = 500
"#;
    let err = load(text, &[]).expect_err("invalid");
    let all = err.to_string();
    for needle in [
        "queue.url",
        "queue.wait_seconds",
        "database.url",
        "database.schema",
        "throttle.rows_per_second",
        "throttle.burst",
    ] {
        assert!(all.contains(needle), "missing {needle} in:\n{all}");
    }
    assert_eq!(err.problems.len(), 6, "{all}");
}

#[test]
fn a_type_error_in_one_section_does_not_hide_problems_in_another() {
    let text = r#"
[queue]
url = "http://127.0.0.1:5000/q"
pollers = "many"
[database]
url = "postgres://x@h/db"
schema = "1bad"
"#;
    let err = load(text, &[]).expect_err("invalid");
    let all = err.to_string();
    assert!(
        all.contains(r#"queue.pollers: invalid type: string "many", expected u16"#),
        "{all}"
    );
    assert!(all.contains("database.schema"), "{all}");
}

#[test]
fn unknown_keys_and_sections_are_rejected() {
    let text = format!("{MINIMAL}\n[throttle]\nrate = 5\n[extra]\na = 1\n");
    let err = load(&text, &[]).expect_err("invalid");
    let all = err.to_string();
    assert!(all.contains("unknown field `rate`"), "{all}");
    assert!(all.contains("unknown section [extra]"), "{all}");
}

#[test]
fn password_in_the_file_is_refused() {
    let text = MINIMAL.replace("[database]", "[database]\npassword = \"hunter2\"");
    let err = load(&text, &[]).expect_err("invalid");
    assert!(err.to_string().contains("secrets must not be in the file"));
}

#[test]
fn missing_sections_are_named() {
    let err = load("[log]\nlevel = \"info\"\n", &[]).expect_err("invalid");
    let all = err.to_string();
    assert!(all.contains("missing section [queue]"), "{all}");
    assert!(all.contains("missing section [database]"), "{all}");
}

#[test]
fn bad_environment_value_is_reported_with_its_key() {
    let err = load(MINIMAL, &[("SLUICE__BATCH__MAX_ROWS", "lots")]).expect_err("invalid");
    assert_eq!(
        err.problems,
        vec![
            "batch.max_rows: invalid type: string \"lots\", expected u32 \
             (set by the environment variable SLUICE__BATCH__MAX_ROWS)"
                .to_owned()
        ]
    );
}

#[test]
fn adaptive_mode_is_accepted_with_documented_defaults() {
    let text = format!("{MINIMAL}\n[throttle]\nmode = \"adaptive\"\n");
    let c = load(&text, &[]).expect("valid");
    assert_eq!(c.throttle.mode, ThrottleMode::Adaptive);
    assert_eq!(c.throttle.min_rows_per_second, 50);
    assert_eq!(c.throttle.target_commit_ms, 250);
    assert_eq!(c.throttle.max_active_backends, None);
    assert_eq!(c.throttle.increase_rows_per_second, None);
    assert_eq!(c.throttle.decrease_factor, 0.5);
    assert_eq!(c.throttle.adjust_interval_ms, 1000);
}

#[test]
fn the_foreground_probe_has_documented_defaults() {
    let c = load(MINIMAL, &[]).expect("valid");
    assert_eq!(
        c.throttle.probe_sql,
        "SELECT pg_logical_emit_message(true, 'sluice-probe', '')"
    );
    assert_eq!(c.throttle.target_latency_ratio, 1.5);
    assert_eq!(c.throttle.probe_quantile, 0.99);
    assert_eq!(c.throttle.probe_interval_ms, 50);
    assert_eq!(c.throttle.baseline_relearn_minutes, 10);
}

#[test]
fn bad_probe_keys_are_each_reported() {
    let text = format!(
        "{MINIMAL}\n[throttle]\nmode = \"adaptive\"\nprobe_sql = \"SELECT 1; DELETE FROM t\"\n\
         target_latency_ratio = 1.0\nprobe_quantile = 0.999\nprobe_interval_ms = 5\n\
         baseline_relearn_minutes = 5000\n"
    );
    let err = load(&text, &[]).expect_err("invalid");
    assert_eq!(
        err.problems,
        vec![
            "throttle.probe_sql: \"SELECT 1; DELETE FROM t\" holds several statements; give one read-only statement",
            "throttle.target_latency_ratio: 1 must be above 1 and at most 100",
            "throttle.probe_quantile: 0.999 is out of range 0.5..=0.99 (0.99 judges the p99)",
            "throttle.probe_interval_ms: 5 is out of range 20..=10000",
            "throttle.baseline_relearn_minutes: 5000 is out of range 0..=1440 (0: learn only while idle)",
        ]
    );
}

#[test]
fn an_empty_probe_or_a_negative_ratio_is_refused() {
    let text = format!("{MINIMAL}\n[throttle]\nprobe_sql = \" ; \"\ntarget_latency_ratio = -2.0\n");
    let err = load(&text, &[]).expect_err("invalid");
    assert_eq!(
        err.problems,
        vec![
            "throttle.probe_sql: must be one read-only SQL statement, not empty",
            "throttle.target_latency_ratio: -2 must be above 1 and at most 100",
        ]
    );
    let long = format!(
        "{MINIMAL}\n[throttle]\nprobe_sql = \"SELECT {}1\"\n",
        "1 + ".repeat(1100)
    );
    let err = load(&long, &[]).expect_err("invalid");
    assert!(
        err.problems[0].starts_with("throttle.probe_sql: 4408 characters is above 4096"),
        "{err}"
    );
}

#[test]
fn unknown_throttle_mode_is_refused_naming_the_choices() {
    let text = format!("{MINIMAL}\n[throttle]\nmode = \"turbo\"\n");
    let err = load(&text, &[]).expect_err("invalid");
    assert!(
        err.to_string()
            .contains("throttle.mode: unknown variant `turbo`, expected `fixed` or `adaptive`"),
        "{err}"
    );
}

#[test]
fn bad_adaptive_keys_are_each_reported() {
    let text = format!(
        "{MINIMAL}\n[throttle]\nmode = \"adaptive\"\nrows_per_second = 100\nmin_rows_per_second = 200\n\
         target_commit_ms = 0\nmax_active_backends = 0\nincrease_rows_per_second = 0\n\
         decrease_factor = 1.5\nadjust_interval_ms = 10\nburst = 500\n"
    );
    let err = load(&text, &[]).expect_err("invalid");
    assert_eq!(
        err.problems,
        vec![
            "throttle.min_rows_per_second: 200 is above throttle.rows_per_second (100), the ceiling",
            "throttle.target_commit_ms: 0 is out of range 1..=600000",
            "throttle.max_active_backends: must be at least 1 (or unset)",
            "throttle.increase_rows_per_second: must be at least 1 (or unset)",
            "throttle.decrease_factor: 1.5 must be above 0 and below 1",
            "throttle.adjust_interval_ms: 10 is out of range 100..=60000",
        ]
    );
}

#[test]
fn the_database_share_cap_must_be_able_to_bind() {
    let with =
        |extra: &str| format!("{MINIMAL}\n[throttle]\nmax_concurrent_transactions = 2\n{extra}\n");
    let c = load(&with("max_database_share = 0.2"), &[]).expect("valid");
    assert_eq!(c.throttle.max_database_share, Some(0.2));
    assert_eq!(
        load(MINIMAL, &[])
            .expect("valid")
            .throttle
            .max_database_share,
        None
    );
    for (value, problem) in [
        (
            "0",
            "throttle.max_database_share: 0 must be above 0 (0.2: the agents' transactions take \
             at most 200 ms of each second), or unset",
        ),
        (
            "-0.5",
            "throttle.max_database_share: -0.5 must be above 0 (0.2: the agents' transactions \
             take at most 200 ms of each second), or unset",
        ),
        (
            "2.5",
            "throttle.max_database_share: 2.5 can never bind: with \
             throttle.max_concurrent_transactions = 2 the agents' transactions take at most 2 s \
             of each second; set it at or below 2, or unset it",
        ),
    ] {
        let err = load(&with(&format!("max_database_share = {value}")), &[]).expect_err(value);
        assert_eq!(err.problems, vec![problem.to_owned()], "{value}");
    }
    // The TOML reader hands `nan` over as "no value": it must not read as "unset".
    let problem = "throttle.max_database_share: is not a number (nan is not one); write a \
                   number such as 0.2, or remove the key";
    let err = load(&with("max_database_share = nan"), &[]).expect_err("nan in the file");
    assert_eq!(err.problems, vec![problem.to_owned()]);
    let err = load(
        &with(""),
        &[("SLUICE__THROTTLE__MAX_DATABASE_SHARE", "nan")],
    )
    .expect_err("nan from the environment");
    assert_eq!(
        err.problems,
        vec![format!(
            "{problem} (set by the environment variable SLUICE__THROTTLE__MAX_DATABASE_SHARE)"
        )]
    );
    let err = load(&with("max_database_share = \"20%\""), &[]).expect_err("a string");
    assert!(
        err.to_string().contains("max_database_share"),
        "the key is named: {err}"
    );
}

#[test]
fn schedule_windows_are_read_in_order() {
    let text = format!(
        "{MINIMAL}\n[[throttle.schedule]]\ndays = \"Mon-Fri\"\nhours = \"08:00-18:00\"\nrows_per_second = 150\n\
         [[throttle.schedule]]\ndays = \"Sat,Sun\"\nrows_per_second = 2000\n\
         [[throttle.schedule]]\nhours = \"22:00-06:00\"\nrows_per_second = 1500\n"
    );
    let c = load(&text, &[]).expect("valid");
    assert_eq!(c.throttle.schedule.len(), 3);
    assert_eq!(c.throttle.schedule[1].days.as_deref(), Some("Sat,Sun"));
    assert_eq!(c.throttle.schedule[1].hours, None);
    let s = c.throttle.parsed_schedule().expect("valid");
    use crate::config::schedule::{LocalTime, Weekday};
    let rate = |at| s.window_at(at).map(|(_, w)| w.rows_per_second);
    assert_eq!(rate(LocalTime::at(Weekday::Tue, 9, 0)), Some(150));
    assert_eq!(rate(LocalTime::at(Weekday::Sun, 9, 0)), Some(2000));
    assert_eq!(rate(LocalTime::at(Weekday::Wed, 3, 0)), Some(1500));
    assert_eq!(rate(LocalTime::at(Weekday::Wed, 20, 0)), None);
}

fn schedule_problems(window: &str) -> Vec<String> {
    let text = format!("{MINIMAL}\n[[throttle.schedule]]\n{window}\n");
    load(&text, &[]).expect_err("invalid").problems
}

#[test]
fn an_unknown_day_in_a_schedule_is_named() {
    assert_eq!(
        schedule_problems("days = \"Mon-Fry\"\nrows_per_second = 10"),
        vec![
            "throttle.schedule[0].days: \"Fry\" is not a day (use Mon, Tue, Wed, Thu, Fri, Sat, Sun, \
             ranges like \"Mon-Fri\" and lists like \"Sat,Sun\")"
        ]
    );
}

#[test]
fn an_empty_day_list_in_a_schedule_is_refused() {
    assert_eq!(
        schedule_problems("days = \"\"\nrows_per_second = 10"),
        vec!["throttle.schedule[0].days: no days given (e.g. \"Mon-Fri\" or \"Sat,Sun\")"]
    );
}

#[test]
fn an_hour_range_without_a_dash_is_refused() {
    assert_eq!(
        schedule_problems("hours = \"08:00\"\nrows_per_second = 10"),
        vec!["throttle.schedule[0].hours: \"08:00\" is not a time range like \"08:00-18:00\""]
    );
}

#[test]
fn an_impossible_time_in_a_schedule_is_refused() {
    assert_eq!(
        schedule_problems("hours = \"08:00-25:30\"\nrows_per_second = 10"),
        vec!["throttle.schedule[0].hours: \"25:30\" is not a time between 00:00 and 24:00 (HH:MM)"]
    );
}

#[test]
fn an_empty_hour_range_in_a_schedule_is_refused() {
    assert_eq!(
        schedule_problems("hours = \"09:00-09:00\"\nrows_per_second = 10"),
        vec![
            "throttle.schedule[0].hours: \"09:00-09:00\" is empty: it starts and ends at the \
             same time (\"00:00-24:00\" is the whole day)"
        ]
    );
}

#[test]
fn a_zero_rate_in_a_schedule_is_refused() {
    assert_eq!(
        schedule_problems("days = \"Sat\"\nrows_per_second = 0"),
        vec!["throttle.schedule[0].rows_per_second: must be at least 1"]
    );
}

#[test]
fn a_schedule_window_without_a_rate_or_with_an_unknown_key_is_refused() {
    let missing = schedule_problems("days = \"Sat\"");
    assert_eq!(missing.len(), 1, "{missing:?}");
    assert!(
        missing[0].contains("missing field `rows_per_second`"),
        "{missing:?}"
    );
    let unknown = schedule_problems("day = \"Sat\"\nrows_per_second = 5");
    assert!(
        unknown[0].contains("throttle.schedule[0].day")
            && unknown[0].contains("unknown field `day`"),
        "{unknown:?}"
    );
}

#[test]
fn every_bad_window_is_reported_at_once() {
    let text = format!(
        "{MINIMAL}\n[[throttle.schedule]]\ndays = \"Mo-Fr\"\nhours = \"8-18\"\nrows_per_second = 10\n\
         [[throttle.schedule]]\ndays = \"Sun\"\nrows_per_second = 0\n"
    );
    let err = load(&text, &[]).expect_err("invalid");
    assert_eq!(err.problems.len(), 3, "{err}");
    assert!(
        err.problems[0].starts_with("throttle.schedule[0].days: \"Mo\""),
        "{err}"
    );
    assert!(
        err.problems[1].starts_with("throttle.schedule[0].hours: \"8\""),
        "{err}"
    );
    assert!(
        err.problems[2].starts_with("throttle.schedule[1].rows_per_second"),
        "{err}"
    );
}

#[test]
fn concurrent_transactions_cannot_exceed_the_pool() {
    let text = format!("{MINIMAL}\n[throttle]\nmax_concurrent_transactions = 3\n");
    let err = load(&text, &[]).expect_err("invalid");
    assert!(err.to_string().contains("max_concurrent_transactions"));
}

#[test]
fn bad_listen_address_and_log_filter_are_reported() {
    let text = format!("{MINIMAL}\n[server]\nlisten = \"nowhere\"\n[log]\nlevel = \"[[\"\n");
    let err = load(&text, &[]).expect_err("invalid");
    let all = err.to_string();
    assert!(all.contains("server.listen"), "{all}");
    assert!(all.contains("log.level"), "{all}");
}

#[test]
fn passwords_are_redacted_from_urls() {
    assert_eq!(
        redact_url("postgres://u:pw@h:5432/db"),
        "postgres://u:***@h:5432/db"
    );
    assert_eq!(redact_url("postgres://u@h/db"), "postgres://u@h/db");
}

#[test]
fn a_section_that_does_not_parse_is_not_compared_against_invented_values() {
    let text = format!(
        "{MINIMAL}max_connections = \"two\"\n[throttle]\nburst = 10\nrows_per_second = 0\n\
         max_concurrent_transactions = 150\n[batch]\nmax_rows = \"lots\"\n"
    );
    let err = load(&text, &[]).expect_err("invalid");
    assert_eq!(
        err.problems,
        vec![
            "database.max_connections: invalid type: string \"two\", expected u32",
            "batch.max_rows: invalid type: string \"lots\", expected u32",
            "throttle.rows_per_second: must be at least 1",
        ]
    );
}

#[test]
fn on_conflict_defaults_to_reject_and_takes_update_or_ignore() {
    let c = load(MINIMAL, &[]).expect("valid");
    assert_eq!(c.write.on_conflict, OnConflict::Reject);
    let text = format!("{MINIMAL}[write]\non_conflict = \"update\"\n");
    let c = load(&text, &[]).expect("valid");
    assert_eq!(c.write.on_conflict, OnConflict::Update);
    let c = load(MINIMAL, &[("SLUICE__WRITE__ON_CONFLICT", "ignore")]).expect("valid");
    assert_eq!(c.write.on_conflict, OnConflict::Ignore);
}

#[test]
fn an_unknown_on_conflict_value_names_the_key_and_the_choices() {
    let text = format!("{MINIMAL}[write]\non_conflict = \"overwrite\"\n");
    let err = load(&text, &[]).expect_err("invalid");
    assert_eq!(
        err.problems,
        vec![
            "write.on_conflict: unknown variant `overwrite`, expected one of `reject`, `update`, `ignore`"
                .to_owned()
        ]
    );
    let err = load(MINIMAL, &[("SLUICE__WRITE__ON_CONFLICT", "Reject")]).expect_err("invalid");
    assert_eq!(
        err.problems,
        vec![
            "write.on_conflict: unknown variant `Reject`, expected one of `reject`, `update`, `ignore` \
             (set by the environment variable SLUICE__WRITE__ON_CONFLICT)"
                .to_owned()
        ]
    );
}

#[test]
fn write_timeouts_default_well_below_the_visibility_timeout() {
    let c = load(MINIMAL, &[]).expect("valid");
    assert_eq!(c.database.statement_timeout_ms, 5_000);
    assert_eq!(c.database.lock_timeout_ms, 2_000);
    assert!(c.database.statement_timeout_ms < u64::from(c.queue.visibility_timeout_seconds) * 1000);
}

#[test]
fn write_timeouts_at_or_above_the_visibility_timeout_are_refused() {
    let text = MINIMAL.replace(
        "[database]",
        "visibility_timeout_seconds = 20\n[database]\nstatement_timeout_ms = 20000\nlock_timeout_ms = 20000",
    );
    let err = load(&text, &[]).expect_err("invalid");
    assert_eq!(
        err.problems,
        vec![
            "database.statement_timeout_ms: 20000 ms is not below queue.visibility_timeout_seconds \
             (20 s); a write must give up (and be retried) well before its messages become \
             visible again",
            "database.lock_timeout_ms: 20000 ms is not below queue.visibility_timeout_seconds \
             (20 s); a write must give up (and be retried) well before its messages become \
             visible again",
        ]
    );
    // Just below is fine.
    let ok = text.replace("= 20000", "= 19999");
    load(&ok, &[]).expect("valid");
}

#[test]
fn write_timeouts_cannot_be_zero_and_the_lock_wait_fits_the_statement() {
    let text = MINIMAL.replace(
        "[database]",
        "[database]\nstatement_timeout_ms = 0\nlock_timeout_ms = 0",
    );
    let err = load(&text, &[]).expect_err("invalid");
    assert_eq!(
        err.problems,
        vec![
            "database.statement_timeout_ms: 0 is out of range 100..=3600000",
            "database.lock_timeout_ms: 0 is out of range 100..=3600000",
        ]
    );
    let text = MINIMAL.replace(
        "[database]",
        "[database]\nstatement_timeout_ms = 1000\nlock_timeout_ms = 3000",
    );
    let err = load(&text, &[]).expect_err("invalid");
    assert_eq!(
        err.problems,
        vec![
            "database.lock_timeout_ms: 3000 is above database.statement_timeout_ms (1000), which \
             cancels the statement first; keep it at or below"
        ]
    );
}

#[test]
fn write_timeouts_come_from_the_environment_too() {
    let c = load(
        MINIMAL,
        &[
            ("SLUICE__DATABASE__STATEMENT_TIMEOUT_MS", "8000"),
            ("SLUICE__DATABASE__LOCK_TIMEOUT_MS", "500"),
        ],
    )
    .expect("valid");
    assert_eq!(c.database.statement_timeout_ms, 8000);
    assert_eq!(c.database.lock_timeout_ms, 500);
}

#[test]
fn an_environment_password_is_taken_verbatim_and_never_echoed() {
    // Typed parsing would make "007" the number 7, and a type error would print the value.
    let c = load(MINIMAL, &[("SLUICE__DATABASE__PASSWORD", "007")]).expect("valid");
    assert_eq!(c.database.password.as_deref(), Some("007"));
    let c = load(MINIMAL, &[("SLUICE__DATABASE__PASSWORD", "true")]).expect("valid");
    assert_eq!(c.database.password.as_deref(), Some("true"));
    // A problem elsewhere in the section does not show it either.
    let text = format!("{MINIMAL}schema = \"Bad\"\n");
    let err = load(&text, &[("SLUICE__DATABASE__PASSWORD", "4242424242")]).expect_err("invalid");
    assert!(!err.to_string().contains("4242424242"), "{err}");
}

#[test]
fn no_form_of_the_password_reaches_the_effective_configuration_or_an_error() {
    for (url, env, secret) in [
        (
            "postgres://u:Userinfo-0xC0FFEE@h/db",
            None,
            "Userinfo-0xC0FFEE",
        ),
        (
            "postgres://u@h/db?password=Query-0xC0FFEE&sslmode=disable",
            None,
            "Query-0xC0FFEE",
        ),
        ("postgres://u@h/db", Some("Env-0xC0FFEE"), "Env-0xC0FFEE"),
    ] {
        let text = MINIMAL.replace("postgres://postgres@127.0.0.1:5432/db", url);
        let env: Vec<(&str, &str)> = env
            .map(|pw| vec![("SLUICE__DATABASE__PASSWORD", pw)])
            .unwrap_or_default();
        let c = load(&text, &env).expect("valid");
        let shown = format!("{} {:?} {}", c.redacted(), c, c.database.url);
        assert!(!shown.contains(secret), "{shown}");
        // An invalid configuration names the URL too, still hidden.
        let bad = text.replace("postgres://", "mysql://");
        let err = load(&bad, &env).expect_err("invalid").to_string();
        assert!(err.contains("database.url"), "{err}");
        assert!(!err.contains(secret), "{err}");
    }
}

// -- batch.max_in_flight_bytes --------------------------------------------------------------------

fn with_in_flight_bytes(value: &str) -> Result<AgentConfig, ConfigError> {
    load(
        &format!("{MINIMAL}\n[batch]\nmax_in_flight_bytes = {value}\n"),
        &[],
    )
}

#[test]
fn max_in_flight_bytes_defaults_to_64_mib_and_takes_the_smallest_allowed_value() {
    let c = load(MINIMAL, &[]).expect("valid");
    assert_eq!(c.batch.max_in_flight_bytes, 64 * 1024 * 1024);
    let c = with_in_flight_bytes("16777216").expect("16 MiB is valid");
    assert_eq!(c.batch.max_in_flight_bytes, MIN_IN_FLIGHT_BYTES);
}

#[test]
fn max_in_flight_bytes_of_zero_is_refused() {
    let err = with_in_flight_bytes("0").expect_err("invalid");
    assert_eq!(
        err.problems,
        vec![
            "batch.max_in_flight_bytes: 0 is below 16777216 (16 MiB), the largest decoded \
              message the agent may have to hold"
                .to_owned()
        ]
    );
}

#[test]
fn max_in_flight_bytes_below_the_largest_message_is_refused() {
    let err = with_in_flight_bytes("1048576").expect_err("invalid");
    assert_eq!(
        err.problems,
        vec![
            "batch.max_in_flight_bytes: 1048576 is below 16777216 (16 MiB), the largest \
              decoded message the agent may have to hold"
                .to_owned()
        ]
    );
}

#[test]
fn max_in_flight_bytes_over_a_tebibyte_is_refused() {
    let err = with_in_flight_bytes("1099511627777").expect_err("invalid");
    assert_eq!(
        err.problems,
        vec!["batch.max_in_flight_bytes: 1099511627777 is over 1099511627776 (1 TiB)".to_owned()]
    );
}

#[test]
fn max_in_flight_bytes_that_is_not_a_number_is_refused_with_its_key() {
    let err = with_in_flight_bytes("\"64MiB\"").expect_err("invalid");
    assert_eq!(
        err.problems,
        vec!["batch.max_in_flight_bytes: invalid type: string \"64MiB\", expected u64".to_owned()]
    );
    let err = with_in_flight_bytes("-1").expect_err("invalid");
    assert!(
        err.problems[0].starts_with("batch.max_in_flight_bytes: invalid value: integer `-1`"),
        "{err}"
    );
}
