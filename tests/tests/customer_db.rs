//! A real customer's database, end to end against a real PostgreSQL and a real SQS-API server
//! (moto): a DBA's table lock is waited out (watchdog fed, nothing lost, draining resumes by
//! itself), the database password shows nowhere however it is given, `/readyz` never needs a
//! writer's connection, `status` reads only through indexes, and a message that always times
//! out is released while the rest is written.

use std::time::Duration;

use serde_json::Value;
use sluice_e2e::gen::Generator;
use sluice_e2e::oracle::Oracle;
use sluice_e2e::{
    binary, wait_for, with_database, EnvOptions, NotifySocket, TestEnv, AGENT_PROCESS_ENV,
};

/// Long enough for a drain on a loaded 2-core CI machine; a healthy run takes seconds.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(180);
const STOP_TIMEOUT: Duration = Duration::from_secs(30);
/// The agent's watchdog interval in these tests (`WATCHDOG_USEC`): a ping every second.
const WATCHDOG_USEC: &str = "2000000";

fn text(out: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_table_lock_is_waited_out_with_the_watchdog_fed_and_nothing_lost() -> anyhow::Result<()> {
    // A visibility timeout shorter than the lock is held: only the heartbeat keeps the held
    // messages from being received again.
    let env = TestEnv::with_options(EnvOptions {
        visibility_timeout_seconds: 10,
        ..EnvOptions::default()
    })
    .await?;
    let notify = NotifySocket::bind(&env.dir())?;
    let ingest = env
        .start_ingest(&[("SLUICE_MAX_RECEIPTS_PER_CHUNK", "100")])
        .await?;
    // One writer connection; in-flight receipts capped at two messages, so while the writes
    // wait the pollers wait too, and only a fed watchdog keeps the agent alive.
    let mut agent = env.spawn_agent_with_env(
        "agent",
        "[queue]\nvisibility_timeout_seconds = 10\n\
         [database]\nmax_connections = 1\nstatement_timeout_ms = 1000\nlock_timeout_ms = 300\n\
         [throttle]\nmax_concurrent_transactions = 1\n\
         [batch]\nmax_rows = 100\nmax_in_flight_rows = 200",
        &[
            ("NOTIFY_SOCKET", notify.path()),
            ("WATCHDOG_USEC", WATCHDOG_USEC),
        ],
    )?;
    anyhow::ensure!(
        notify.wait_line("READY=1", Duration::from_secs(60)).await,
        "no READY=1\n{}",
        agent.log_text()
    );

    // A DBA's session takes the receipts table for itself.
    let mut dba = env.pool.begin().await?;
    sqlx::query("LOCK TABLE sluice.receipts IN ACCESS EXCLUSIVE MODE")
        .execute(&mut *dba)
        .await?;
    let receipts = Generator::new(41).receipts(1_000);
    let (status, answer) = ingest.upload_json(&receipts).await?;
    assert_eq!(status, 202, "{answer}");
    let mut oracle = Oracle::new();
    oracle.acknowledge(&receipts);

    // The lock wait is named on /readyz; PostgreSQL itself still answers there, on the probe's
    // own connection, while the only writer connection waits on the lock.
    let ready = wait_for(
        Duration::from_secs(60),
        "/readyz naming the lock wait",
        || async {
            match agent.get("/readyz").await {
                Some((503, body)) if body.contains("database_lock_wait") => Some(body),
                _ => None,
            }
        },
    )
    .await?;
    let ready: Value = serde_json::from_str(&ready)?;
    assert_eq!(ready["postgres"]["ok"], true, "{ready}");
    // `status` and the condition gauge name it too.
    let config = agent.config().display().to_string();
    let out = env.agent_cli(&["status", "--config", &config]).await?;
    let shown = text(&out);
    assert!(shown.contains("database_lock_wait"), "{shown}");
    let gauge = agent
        .metric("sluice_condition", &[("condition", "database_lock_wait")])
        .await;
    assert_eq!(gauge, Some(1.0));

    // Held through many timeouts and past the watchdog's stale limit (11 s here): the pings go
    // on, one a second, each within a few seconds of the last.
    while notify.next(Duration::from_millis(10)).await.is_some() {}
    for ping in 0..15 {
        anyhow::ensure!(
            notify.wait_line("WATCHDOG=1", Duration::from_secs(5)).await,
            "watchdog pings stopped after {ping} while the lock was held\n{}",
            agent.log_text()
        );
    }
    let timeouts = agent
        .metric("sluice_errors_total", &[("kind", "overload")])
        .await
        .unwrap_or(0.0);
    assert!(timeouts >= 3.0, "writes timed out {timeouts} times");
    assert!(agent.process_mut().try_wait()?.is_none(), "the agent died");

    // The lock goes: draining resumes by itself and everything is stored once.
    dba.commit().await?;
    env.wait_drained(1_000, DRAIN_TIMEOUT).await?;
    oracle.verify(&env).await?;
    // Each of the 10 messages was received once: none lapsed while the lock was held.
    let received = agent.metric("sluice_messages_received_total", &[]).await;
    assert_eq!(received, Some(10.0));
    let duplicates = agent.metric("sluice_receipts_duplicate_total", &[]).await;
    assert!(matches!(duplicates, None | Some(0.0)), "{duplicates:?}");
    wait_for(Duration::from_secs(30), "/readyz 200 again", || async {
        matches!(agent.get("/readyz").await, Some((200, _))).then_some(())
    })
    .await?;

    let exit = agent.terminate(STOP_TIMEOUT).await?;
    assert_eq!(exit.code(), Some(0));
    let log = agent.log_text();
    let raised = log
        .lines()
        .filter(|l| l.contains("Condition raised") && l.contains("database_lock_wait"))
        .count();
    assert_eq!(raised, 1, "one ERROR naming the lock wait:\n{log}");
    assert!(log.contains("lock timeout"), "{log}");
    assert!(
        !log.contains("Pipeline made no progress"),
        "the watchdog starved:\n{log}"
    );
    Ok(())
}

/// The merchant whose rows the test's trigger makes slower than the statement timeout.
const SLOW_MERCHANT: &str = "Slow Merchant GmbH";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_that_always_times_out_is_released_and_the_rest_is_written() -> anyhow::Result<()>
{
    let env = TestEnv::new().await?;
    env.migrate().await?;
    // A trigger that sleeps past the statement timeout on one merchant's rows only: the
    // database takes every other write (and the canary) at once.
    for statement in [
        "CREATE FUNCTION sluice.slow_merchant() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN
           IF NEW.merchant = 'Slow Merchant GmbH' THEN PERFORM pg_sleep(3); END IF;
           RETURN NEW;
         END $$",
        "CREATE TRIGGER slow_merchant BEFORE INSERT ON sluice.receipts
         FOR EACH ROW EXECUTE FUNCTION sluice.slow_merchant()",
    ] {
        sqlx::query(statement).execute(&env.pool).await?;
    }
    let mut receipts = Generator::new(59).receipts(20);
    receipts[7]["merchant"] = Value::from(SLOW_MERCHANT);
    let mut oracle = Oracle::new();
    // One receipt per message, all in one batch: the slow row shares its transaction with 19
    // others.
    env.upload_acknowledged(&mut oracle, &receipts, "1").await?;
    let agent = env
        .launch_agent(
            "slow",
            "[database]\nstatement_timeout_ms = 500\nlock_timeout_ms = 300\n\
             [batch]\nmax_rows = 500\nmax_wait_ms = 2000",
        )
        .await?;

    // Everything else is written while the slow message is held back, named on /readyz.
    wait_for(DRAIN_TIMEOUT, "the 19 other receipts stored", || async {
        (env.count_receipts_or_zero().await == 19).then_some(())
    })
    .await?;
    let ready = wait_for(
        Duration::from_secs(60),
        "/readyz naming the slow message",
        || async {
            match agent.get("/readyz").await {
                Some((503, body)) if body.contains("slow_message") => Some(body),
                _ => None,
            }
        },
    )
    .await?;
    assert!(ready.contains("statement timeout"), "{ready}");
    assert!(
        !ready.contains("database_lock_wait"),
        "the database takes writes: {ready}"
    );
    let stored: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM sluice.receipts WHERE merchant = 'Slow Merchant GmbH'",
    )
    .fetch_one(&env.pool)
    .await?;
    assert_eq!(stored, 0);
    let config = agent.config().display().to_string();
    let shown = text(&env.agent_cli(&["status", "--config", &config]).await?);
    assert!(shown.contains("slow_message"), "{shown}");
    let log = agent.log_text();
    assert!(log.contains("writing its halves apart"), "{log}");
    assert!(log.contains("released to the queue"), "{log}");

    // The trigger is fixed: the message comes back after its delay, is written, and the
    // condition clears by itself. Nothing was dead-lettered.
    sqlx::query("DROP TRIGGER slow_merchant ON sluice.receipts")
        .execute(&env.pool)
        .await?;
    env.wait_drained(20, DRAIN_TIMEOUT).await?;
    wait_for(Duration::from_secs(30), "/readyz 200 again", || async {
        matches!(agent.get("/readyz").await, Some((200, _))).then_some(())
    })
    .await?;
    agent.stop().await?;
    let dead = oracle.verify(&env).await?;
    assert!(dead.is_empty(), "{dead:?}");
    Ok(())
}

/// How the password is given to the agent.
#[derive(Debug, Clone, Copy)]
enum PasswordForm {
    Userinfo,
    Query,
    File,
    Environment,
}

/// `check-config`, the agent's log, `/readyz` on its error path (a database that does not
/// exist), `status`, and the exit messages: none of them ever shows the password.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_database_password_appears_nowhere_however_it_is_given() -> anyhow::Result<()> {
    const PASSWORD: &str = "Sluice-Pw-7f3a9c";
    let env = TestEnv::new().await?;
    let dir = env.dir();
    std::fs::create_dir_all(&dir)?;
    let missing = with_database(&env.servers.database_url, &format!("{}_missing", env.name));
    let pw_file = dir.join("db-password");
    std::fs::write(&pw_file, format!("{PASSWORD}\n"))?;
    for form in [
        PasswordForm::Userinfo,
        PasswordForm::Query,
        PasswordForm::File,
        PasswordForm::Environment,
    ] {
        let (url, extra, vars): (String, String, Vec<(&str, &str)>) = match form {
            PasswordForm::Userinfo => (
                missing.replacen("://postgres@", &format!("://postgres:{PASSWORD}@"), 1),
                String::new(),
                vec![],
            ),
            PasswordForm::Query => (
                format!("{missing}?password={PASSWORD}"),
                String::new(),
                vec![],
            ),
            PasswordForm::File => (
                missing.clone(),
                format!("password_file = {:?}", pw_file.display().to_string()),
                vec![],
            ),
            PasswordForm::Environment => (
                missing.clone(),
                String::new(),
                vec![("SLUICE__DATABASE__PASSWORD", PASSWORD)],
            ),
        };
        let section = format!("[database]\nurl = {url:?}\n{extra}\n[log]\nformat = \"json\"");
        let name = format!("{form:?}").to_lowercase();

        // check-config: valid, then with a problem in the same section.
        let config = env.write_agent_config(&format!("{name}-check.toml"), &section)?;
        let out = cli(
            &["check-config", "--config", &config.display().to_string()],
            &vars,
        )
        .await?;
        assert_eq!(out.status.code(), Some(0), "{form:?}: {}", text(&out));
        assert!(!text(&out).contains(PASSWORD), "{form:?}: {}", text(&out));
        let bad = section.replace("postgres://", "mysql://") + "\n[database]\nschema = \"Bad\"";
        let config = env.write_agent_config(&format!("{name}-bad.toml"), &bad)?;
        let out = cli(
            &["check-config", "--config", &config.display().to_string()],
            &vars,
        )
        .await?;
        assert_eq!(out.status.code(), Some(64), "{form:?}: {}", text(&out));
        assert!(text(&out).contains("database.url"), "{}", text(&out));
        assert!(!text(&out).contains(PASSWORD), "{form:?}: {}", text(&out));

        // The agent: its log and /readyz while the database cannot be used.
        let mut agent = env.spawn_agent_with_env(&name, &section, &vars)?;
        agent.wait_answering(Duration::from_secs(60)).await?;
        let body = wait_for(
            Duration::from_secs(60),
            "/readyz with the database error",
            || async {
                match agent.get("/readyz").await {
                    Some((503, body)) => {
                        let v: Value = serde_json::from_str(&body).ok()?;
                        (v["postgres"]["ok"] == false).then_some(body)
                    }
                    _ => None,
                }
            },
        )
        .await?;
        assert!(body.contains("does not exist"), "{body}");
        assert!(!body.contains(PASSWORD), "{form:?}: {body}");
        for path in ["/v1/status", "/metrics"] {
            let (_, body) = agent.get(path).await.unwrap_or_default();
            assert!(!body.contains(PASSWORD), "{form:?} {path}: {body}");
        }
        let out = cli(
            &["status", "--config", &agent.config().display().to_string()],
            &vars,
        )
        .await?;
        assert!(text(&out).contains("PostgreSQL"), "{}", text(&out));
        assert!(!text(&out).contains(PASSWORD), "{form:?}: {}", text(&out));
        agent.terminate(STOP_TIMEOUT).await?;
        let log = agent.log_text();
        assert!(log.contains("Cannot apply migrations"), "{log}");
        assert!(
            !log.contains(PASSWORD),
            "{form:?}: the password reached the log:\n{log}"
        );
    }
    Ok(())
}

/// Runs `sluice-agent ARGS` with `vars` added to its environment.
async fn cli(args: &[&str], vars: &[(&str, &str)]) -> anyhow::Result<std::process::Output> {
    let out = tokio::process::Command::new(binary("sluice-agent")?)
        .args(args)
        .envs(AGENT_PROCESS_ENV.iter().copied())
        .envs(vars.iter().copied())
        .env_remove("SLUICE_CONFIG")
        .kill_on_drop(true)
        .output();
    Ok(tokio::time::timeout(Duration::from_secs(120), out).await??)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn readiness_answers_while_every_writer_connection_is_held() -> anyhow::Result<()> {
    let env = TestEnv::new().await?;
    // A writer pool of one, whose acquire would wait minutes.
    let cfg = env.agent_config("[database]\nmax_connections = 1\nconnect_timeout_seconds = 300")?;
    let store = sluice_agent::Store::connect_lazy(&cfg.database)?;
    let held = store.pool().acquire().await?;
    assert!(
        store.pool().try_acquire().is_none(),
        "the writer pool is exhausted"
    );
    // The probe has its own connection: it answers at once, not after the acquire timeout.
    let answered = tokio::time::timeout(Duration::from_secs(30), store.ping()).await;
    assert!(matches!(answered, Ok(Ok(()))), "{answered:?}");
    drop(held);
    Ok(())
}

/// One node of an EXPLAIN (FORMAT JSON) plan.
#[derive(Debug)]
struct PlanNode {
    kind: String,
    relation: Option<String>,
    index: Option<String>,
}

/// Every node of an EXPLAIN (FORMAT JSON) plan.
fn plan_nodes(plan: &Value, out: &mut Vec<PlanNode>) {
    if let Some(kind) = plan.get("Node Type").and_then(Value::as_str) {
        let field = |k: &str| plan.get(k).and_then(Value::as_str).map(str::to_owned);
        out.push(PlanNode {
            kind: kind.to_owned(),
            relation: field("Relation Name"),
            index: field("Index Name"),
        });
    }
    match plan {
        Value::Object(m) => m.values().for_each(|v| plan_nodes(v, out)),
        Value::Array(a) => a.iter().for_each(|v| plan_nodes(v, out)),
        _ => {}
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn status_reads_only_through_indexes_on_a_large_ledger() -> anyhow::Result<()> {
    let env = TestEnv::new().await?;
    env.migrate().await?;
    // Two days of ledger at one message a second: 172,800 rows, about 17 million receipts.
    sqlx::query(
        "INSERT INTO sluice.chunks (batch_id, chunk_index, chunk_count, receipts, committed_at)
         SELECT md5(g::text)::uuid, 0, 1, 100, now() - make_interval(secs => g)
         FROM generate_series(1, 172800) AS g",
    )
    .execute(&env.pool)
    .await?;
    sqlx::query("ANALYZE sluice.chunks")
        .execute(&env.pool)
        .await?;

    for (name, query, bind) in [
        ("recent rate", sluice_agent::RECENT_RATE, "60"),
        (
            "receipts per message",
            sluice_agent::RECEIPTS_PER_MESSAGE,
            "100",
        ),
    ] {
        // The status query as the agent sends it, its parameter inlined.
        let sql = format!("EXPLAIN (FORMAT JSON) {}", query.replace("$1", bind));
        // `json` on the wire is its text: read unchecked (sqlx's json feature is not on).
        let row = sqlx::query(&sql).fetch_one(&env.pool).await?;
        let plan: String = sqlx::Row::try_get_unchecked(&row, 0)?;
        let plan: Value = serde_json::from_str(&plan)?;
        let mut nodes = Vec::new();
        plan_nodes(&plan, &mut nodes);
        assert!(
            nodes.iter().all(|n| n.kind != "Seq Scan"),
            "{name}: a sequential scan\n{plan:#}"
        );
        assert!(
            nodes
                .iter()
                .any(|n| n.index.as_deref() == Some("chunks_committed_at_idx")),
            "{name}: not through chunks_committed_at_idx\n{plan:#}"
        );
        assert!(
            nodes
                .iter()
                .all(|n| n.relation.as_deref() != Some("receipts")),
            "{name}: reads receipts\n{nodes:?}"
        );
    }
    // And the figures the queries give are what the ledger says.
    let store = sluice_agent::Store::from_pool(env.pool.clone());
    assert_eq!(store.receipts_per_message(100).await?, Some(100.0));
    let rate = store.recent_rate(Duration::from_secs(60)).await?;
    assert!((50.0..=110.0).contains(&rate), "{rate}");
    Ok(())
}
