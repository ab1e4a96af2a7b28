//! Operating the agent, end to end against a real PostgreSQL and a real SQS-API server (moto):
//! `/metrics` while a backlog drains, `sluice-agent status`, the `dlq` commands, and the
//! systemd notifications (`READY=1`, `WATCHDOG=1`, `STOPPING=1`) on a `NOTIFY_SOCKET` the test
//! listens on. The agent runs as a separate process here: its metrics registry, its signals and
//! its environment are its own.

use std::collections::HashSet;
use std::time::Duration;

use serde_json::Value;
use sluice_e2e::gen::Generator;
use sluice_e2e::{free_local_addr, wait_for, Metrics, TestEnv};

/// Long enough for a drain on a loaded 2-core CI machine; a healthy run takes seconds.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(180);
/// The agent exits within its grace period (10 s in TestEnv's config) plus one long poll.
const STOP_TIMEOUT: Duration = Duration::from_secs(30);

/// Messages on a queue, visible or in flight.
async fn held(env: &TestEnv, url: &str) -> Option<u64> {
    env.depth(url).await.ok().map(|(v, f, d)| v + f + d)
}

/// Visible + in-flight messages of the main queue, from the agent's gauges.
fn main_queue_gauge(metrics: &Metrics) -> Option<f64> {
    let state = |s| metrics.sum("sluice_queue_messages", &[("queue", "main"), ("state", s)]);
    Some(state("visible")? + state("in_flight")?)
}

fn stdout(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn metrics_show_the_queue_depth_falling_while_a_backlog_drains_and_status_agrees(
) -> anyhow::Result<()> {
    let env = TestEnv::new().await?;
    let ingest = env
        .start_ingest(&[("SLUICE_MAX_RECEIPTS_PER_CHUNK", "100")])
        .await?;
    let (status, answer) = ingest
        .upload_json(&Generator::new(21).receipts(3_000))
        .await?;
    assert_eq!(status, 202, "{answer}");
    assert_eq!(answer["chunks"], 30, "{answer}");

    let mut agent = env.spawn_agent(
        "agent",
        "[throttle]\nrows_per_second = 120\nburst = 100\n[batch]\nmax_rows = 100\nmax_wait_ms = 20",
    )?;

    // Sample the agent's own gauges until the backlog is gone.
    // Sample the agent's own gauges until the backlog is gone (a bounded poll).
    let mut seen: Vec<f64> = Vec::new();
    let deadline = std::time::Instant::now() + DRAIN_TIMEOUT;
    loop {
        let total = agent.metrics().await.and_then(|m| main_queue_gauge(&m));
        if let Some(total) = total {
            if seen.last() != Some(&total) {
                seen.push(total);
            }
            if total == 0.0 && seen.len() > 1 {
                break;
            }
        }
        anyhow::ensure!(
            std::time::Instant::now() < deadline,
            "the main-queue gauges did not reach 0; seen {seen:?}\n{}",
            agent.log_text()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        seen.first().copied().unwrap_or(0.0) >= 15.0,
        "the first reading shows the backlog: {seen:?}"
    );
    assert!(
        seen.len() >= 3,
        "the depth was seen falling in steps, not only full then empty: {seen:?}"
    );
    assert!(
        seen.windows(2).filter(|w| w[1] < w[0]).count() >= 2,
        "mostly falling: {seen:?}"
    );
    wait_for(DRAIN_TIMEOUT, "3,000 receipts stored", || async {
        (env.count_receipts_or_zero().await >= 3_000).then_some(())
    })
    .await?;

    // The agent's own figures are there too.
    let (_, text) = agent.get("/metrics").await.expect("metrics answer");
    let metrics = Metrics::parse(&text);
    for name in [
        "sluice_receipts_received_total",
        "sluice_rows_written_total",
        "sluice_batches_total",
        "sluice_commit_seconds_bucket",
        "sluice_limiter_wait_seconds",
        "sluice_rate_configured_rows_per_second",
        "sluice_oldest_received_message_age_seconds",
        "sluice_ready",
    ] {
        assert!(text.contains(name), "/metrics lacks {name}:\n{text}");
    }
    assert_eq!(metrics.sum("sluice_rows_written_total", &[]), Some(3_000.0));
    assert_eq!(
        metrics.sum("sluice_queue_messages", &[("queue", "dlq")]),
        Some(0.0)
    );

    // `status --json` with the agent running: true depth (zero), the agent answering and
    // ready, receipts per message from the ledger (100 per chunk).
    let out = env
        .agent_cli(&[
            "status",
            "--json",
            "--config",
            agent.config().to_str().unwrap_or_default(),
        ])
        .await?;
    assert!(out.status.success(), "{}", stderr(&out));
    let report: Value = serde_json::from_str(&stdout(&out))?;
    assert_eq!(report["queue"]["visible"], 0, "{report:#}");
    assert_eq!(report["queue"]["in_flight"], 0, "{report:#}");
    assert_eq!(report["agent"]["reachable"], true, "{report:#}");
    assert_eq!(report["agent"]["ready"], true, "{report:#}");
    assert_eq!(report["receipts_per_message"], 100.0, "{report:#}");
    assert_eq!(report["rate"]["limit_rows_per_second"], 120.0, "{report:#}");
    assert!(
        report["rate"]["database_receipts_per_second"]
            .as_f64()
            .unwrap_or(0.0)
            > 0.0,
        "{report:#}"
    );

    let exit = agent.terminate(STOP_TIMEOUT).await?;
    assert_eq!(exit.code(), Some(0), "{}", agent.log_text());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn status_json_reports_the_true_depth_with_no_agent_running() -> anyhow::Result<()> {
    let env = TestEnv::new().await?;
    let ingest = env
        .start_ingest(&[("SLUICE_MAX_RECEIPTS_PER_CHUNK", "50")])
        .await?;
    let (status, answer) = ingest
        .upload_json(&Generator::new(22).receipts(350))
        .await?;
    assert_eq!(status, 202, "{answer}");
    env.send_raw_to(&env.dlq_url, "a dead letter", &[]).await?;
    let config = env.write_agent_config("agent.toml", "")?;
    let config = config.to_str().unwrap_or_default();

    let out = env
        .agent_cli(&["status", "--json", "--config", config])
        .await?;
    assert!(out.status.success(), "{}", stderr(&out));
    let report: Value = serde_json::from_str(&stdout(&out))?;
    let (visible, in_flight, delayed) = env.depth(&env.queue_url).await?;
    assert_eq!(visible, 7);
    assert_eq!(report["queue"]["visible"], visible, "{report:#}");
    assert_eq!(report["queue"]["in_flight"], in_flight, "{report:#}");
    assert_eq!(report["queue"]["delayed"], delayed, "{report:#}");
    assert_eq!(report["dlq"]["visible"], 1, "{report:#}");
    assert_eq!(report["agent"]["reachable"], false, "{report:#}");
    assert_eq!(report["oldest_message_age_seconds"], Value::Null);
    let problems = report["problems"].to_string();
    assert!(
        problems.contains("agent metrics not answering"),
        "{report:#}"
    );
    // The schema does not exist yet (no agent ever ran): said, not fatal.
    assert!(problems.contains("PostgreSQL"), "{report:#}");

    // The screen says the same for a person.
    let out = env.agent_cli(&["status", "--config", config]).await?;
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(
        text.contains("7 messages (visible 7, in flight 0, delayed 0)"),
        "{text}"
    );
    assert!(text.contains("dead letters  1 messages"), "{text}");
    assert!(text.contains("ApproximateAgeOfOldestMessage"), "{text}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn status_watch_json_prints_one_report_per_refresh_until_stopped() -> anyhow::Result<()> {
    use tokio::io::AsyncBufReadExt as _;
    let env = TestEnv::new().await?;
    env.send_raw("one message", &[]).await?;
    let config = env.write_agent_config("agent.toml", "")?;
    let mut child = tokio::process::Command::new(sluice_e2e::binary("sluice-agent")?)
        .args(["status", "--watch", "--json", "--interval", "1", "--config"])
        .arg(&config)
        .envs(sluice_e2e::AGENT_PROCESS_ENV.iter().copied())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()?;
    let stdout = child.stdout.take().expect("piped stdout");
    let mut lines = tokio::io::BufReader::new(stdout).lines();
    for refresh in 0..3 {
        let line = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
            .await
            .map_err(|_| anyhow::anyhow!("no report {refresh} within 30 s"))??
            .ok_or_else(|| anyhow::anyhow!("status --watch ended after {refresh} reports"))?;
        let report: Value = serde_json::from_str(&line)?;
        assert_eq!(report["queue"]["visible"], 1, "{report:#}");
    }
    child.kill().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_poison_receipt_is_listed_with_its_reason_and_once_fixed_redriven_and_stored(
) -> anyhow::Result<()> {
    let env = TestEnv::new().await?;
    let config = env.write_agent_config("agent.toml", "")?;
    let config = config.to_str().unwrap_or_default().to_owned();
    let agent = env.start_agent(env.agent_config("")?).await?;
    // The schema exists once the agent has migrated; then the "operator's mistake": a
    // constraint that refuses one merchant.
    wait_for(DRAIN_TIMEOUT, "the agent's schema", || async {
        env.count_receipts().await.ok()
    })
    .await?;
    sqlx::query(
        "ALTER TABLE sluice.receipts ADD CONSTRAINT no_poison CHECK (merchant <> 'Poison Pill Ltd')",
    )
    .execute(&env.pool)
    .await?;

    let mut receipts = Generator::new(23).receipts(50);
    receipts[17]["merchant"] = Value::from("Poison Pill Ltd");
    let poison_id = receipts[17]["receipt_id"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let ingest = env.start_ingest(&[]).await?;
    let (status, answer) = ingest.upload_json(&receipts).await?;
    assert_eq!(status, 202, "{answer}");
    let batch_id = answer["batch_id"].as_str().unwrap_or_default().to_owned();

    wait_for(DRAIN_TIMEOUT, "49 stored and one dead letter", || async {
        let stored = env.count_receipts_or_zero().await;
        let dlq = env.depth(&env.dlq_url).await.ok()?;
        (stored == 49 && dlq.0 == 1).then_some(())
    })
    .await?;

    let out = env
        .agent_cli(&["dlq", "list", "--json", "--config", &config])
        .await?;
    assert!(out.status.success(), "{}", stderr(&out));
    let listed: Value = serde_json::from_str(&stdout(&out))?;
    let letters = listed.as_array().cloned().unwrap_or_default();
    assert_eq!(letters.len(), 1, "{listed:#}");
    let d = &letters[0];
    assert_eq!(d["batch_id"], batch_id.as_str(), "{d:#}");
    assert_eq!(d["receipts"], 1, "{d:#}");
    assert_eq!(d["receipt_ids"][0], poison_id.as_str(), "{d:#}");
    let reason = d["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("refused by the database") && reason.contains("no_poison"),
        "{d:#}"
    );
    assert!(d["receive_count"].as_u64().unwrap_or(0) >= 1, "{d:#}");
    assert_eq!(d["decode_error"], Value::Null);

    // The screen for a person, and listing moved nothing.
    let out = env.agent_cli(&["dlq", "list", "--config", &config]).await?;
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.contains(&format!("batch {batch_id}")), "{text}");
    assert!(text.contains("no_poison"), "{text}");
    assert!(text.contains("1 dead letters."), "{text}");
    wait_for(
        Duration::from_secs(30),
        "the listed message back on the DLQ",
        || async { (env.depth(&env.dlq_url).await.ok()? == (1, 0, 0)).then_some(()) },
    )
    .await?;

    // Fixed: the constraint goes; the dead letter goes back and is stored.
    sqlx::query("ALTER TABLE sluice.receipts DROP CONSTRAINT no_poison")
        .execute(&env.pool)
        .await?;
    let out = env
        .agent_cli(&["dlq", "redrive", "--rate", "5", "--config", &config])
        .await?;
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).starts_with("1 messages sent back"),
        "{}",
        stdout(&out)
    );
    wait_for(
        DRAIN_TIMEOUT,
        "all 50 stored and both queues empty",
        || async {
            let stored = env.count_receipts_or_zero().await;
            (stored == 50
                && held(&env, &env.queue_url).await? == 0
                && held(&env, &env.dlq_url).await? == 0)
                .then_some(())
        },
    )
    .await?;
    let merchant: String =
        sqlx::query_scalar("SELECT merchant FROM sluice.receipts WHERE receipt_id = $1::uuid")
            .bind(&poison_id)
            .fetch_one(&env.pool)
            .await?;
    assert_eq!(merchant, "Poison Pill Ltd");
    agent.stop().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_undecodable_dead_letter_is_listed_with_its_decode_error() -> anyhow::Result<()> {
    let env = TestEnv::new().await?;
    env.send_raw_to(
        &env.dlq_url,
        "{\"v\":1,\"batch_id\":",
        &[("sluice-error", "undecodable message: truncated")],
    )
    .await?;
    let config = env.write_agent_config("agent.toml", "")?;
    let out = env
        .agent_cli(&[
            "dlq",
            "list",
            "--json",
            "--config",
            config.to_str().unwrap_or_default(),
        ])
        .await?;
    assert!(out.status.success(), "{}", stderr(&out));
    let listed: Value = serde_json::from_str(&stdout(&out))?;
    assert_eq!(
        listed[0]["reason"], "undecodable message: truncated",
        "{listed:#}"
    );
    assert!(listed[0]["decode_error"].is_string(), "{listed:#}");
    assert_eq!(listed[0]["batch_id"], Value::Null, "{listed:#}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn dlq_purge_refuses_without_yes_and_deletes_everything_with_it() -> anyhow::Result<()> {
    let env = TestEnv::new().await?;
    for i in 0..3 {
        env.send_raw_to(&env.dlq_url, &format!("dead {i}"), &[])
            .await?;
    }
    let config = env.write_agent_config("agent.toml", "")?;
    let config = config.to_str().unwrap_or_default();

    let out = env.agent_cli(&["dlq", "purge", "--config", config]).await?;
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("refusing to purge"), "{err}");
    assert!(err.contains("3 messages now"), "{err}");
    assert!(err.contains("--yes"), "{err}");
    assert_eq!(held(&env, &env.dlq_url).await, Some(3), "nothing deleted");

    let out = env
        .agent_cli(&["dlq", "purge", "--yes", "--config", config])
        .await?;
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("3 messages deleted"),
        "{}",
        stdout(&out)
    );
    wait_for(Duration::from_secs(60), "the DLQ empty", || async {
        (held(&env, &env.dlq_url).await? == 0).then_some(())
    })
    .await?;
    assert_eq!(
        held(&env, &env.queue_url).await,
        Some(0),
        "main queue untouched"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn malformed_operator_input_is_refused_with_a_clear_error() -> anyhow::Result<()> {
    let env = TestEnv::new().await?;
    let config = env.write_agent_config("agent.toml", "")?;
    let config = config.to_str().unwrap_or_default();

    // Usage errors: exit 2, naming the argument.
    for (args, needle) in [
        (vec!["dlq", "redrive", "--rate", "0"], "--rate"),
        (vec!["dlq", "redrive", "--rate", "fast"], "--rate"),
        (vec!["dlq", "redrive", "--rate", "-5"], "--rate"),
        (vec!["dlq", "list", "--max", "0"], "--max"),
        (vec!["status", "--interval", "0"], "--interval"),
        (vec!["dlq", "empty-it"], "unrecognized subcommand"),
        (vec!["dlq"], "Usage"),
        (vec!["status", "--yes"], "--yes"),
    ] {
        let mut full = args.clone();
        full.extend(["--config", config]);
        let out = env.agent_cli(&full).await?;
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
        assert!(
            stderr(&out).contains(needle),
            "{args:?} should name {needle}: {}",
            stderr(&out)
        );
    }

    // No dead-letter queue configured: exit 64, saying which key.
    let no_dlq = env
        .agent_toml("")
        .replace(&format!("dead_letter_url = {:?}\n", env.dlq_url), "");
    let path = env.dir().join("no-dlq.toml");
    std::fs::write(&path, no_dlq)?;
    let path = path.to_str().unwrap_or_default();
    for args in [
        vec!["dlq", "list", "--config", path],
        vec!["dlq", "redrive", "--config", path],
        vec!["dlq", "purge", "--yes", "--config", path],
    ] {
        let action = args[1];
        let out = env.agent_cli(&args).await?;
        assert_eq!(
            out.status.code(),
            Some(64),
            "dlq {action}: {}",
            stderr(&out)
        );
        assert!(
            stderr(&out).contains("queue.dead_letter_url is not set"),
            "dlq {action}: {}",
            stderr(&out)
        );
    }

    // A missing config file: exit 64 like every other command.
    let out = env
        .agent_cli(&["status", "--config", "/nonexistent/agent.toml"])
        .await?;
    assert_eq!(out.status.code(), Some(64), "{}", stderr(&out));
    assert!(stderr(&out).contains("cannot read /nonexistent/agent.toml"));

    // SQS unreachable: status fails (exit 1) naming the queue rather than printing zeros.
    let dead_sqs = format!("http://{}", free_local_addr()?);
    let toml = env.agent_toml(&format!("[queue]\nendpoint = {dead_sqs:?}"));
    let path = env.dir().join("dead-sqs.toml");
    std::fs::write(&path, toml)?;
    let out = env
        .agent_cli(&["status", "--config", path.to_str().unwrap_or_default()])
        .await?;
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains(&format!("reading the depth of {}", env.queue_url)),
        "{}",
        stderr(&out)
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ready_and_watchdog_reach_the_notify_socket_and_stopping_follows_sigterm(
) -> anyhow::Result<()> {
    let env = TestEnv::new().await?;
    let dir = env.dir();
    std::fs::create_dir_all(&dir)?;
    let socket_path = dir.join("notify.sock");
    let socket = tokio::net::UnixDatagram::bind(&socket_path)?;
    let mut agent = env.spawn_agent_with_env(
        "agent",
        "[log]\nformat = \"json\"",
        &[
            ("NOTIFY_SOCKET", socket_path.to_str().unwrap_or_default()),
            // 2 s: a ping every second.
            ("WATCHDOG_USEC", "2000000"),
            ("SLUICE__DATABASE__PASSWORD", "hunter2-not-logged"),
        ],
    )?;

    let mut got: Vec<String> = Vec::new();
    let mut buf = vec![0u8; 4096];
    let collect = async {
        loop {
            let n = socket.recv(&mut buf).await?;
            let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
            got.push(msg);
            let ready = got.iter().position(|m| m.lines().any(|l| l == "READY=1"));
            let pings_after_ready = ready.map_or(0, |r| {
                got[r..]
                    .iter()
                    .filter(|m| m.lines().any(|l| l == "WATCHDOG=1"))
                    .count()
            });
            if pings_after_ready >= 3 {
                return Ok::<_, std::io::Error>(());
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(60), collect)
        .await
        .map_err(|_| {
            anyhow::anyhow!(
                "no READY=1 and 3 WATCHDOG=1 within 60 s; got {got:?}\n{}",
                agent.log_text()
            )
        })??;
    // READY=1 means what /readyz means.
    let (code, _) = agent.get("/readyz").await.expect("readyz answers");
    assert_eq!(code, 200);

    let exit = agent.terminate(STOP_TIMEOUT).await?;
    assert_eq!(exit.code(), Some(0), "{}", agent.log_text());
    let mut stopping = false;
    while let Ok(Ok(n)) = tokio::time::timeout(Duration::from_secs(1), socket.recv(&mut buf)).await
    {
        stopping |= String::from_utf8_lossy(&buf[..n])
            .lines()
            .any(|l| l == "STOPPING=1");
    }
    assert!(stopping, "STOPPING=1 after SIGTERM; got {got:?}");

    // The startup line: version and effective configuration, secrets redacted.
    let log = agent.log_text();
    let start = log
        .lines()
        .find(|l| l.contains("sluice-agent starting."))
        .unwrap_or_default();
    let line: Value = serde_json::from_str(start)
        .map_err(|e| anyhow::anyhow!("startup line is not JSON ({e}): {log}"))?;
    assert_eq!(line["version"], env!("CARGO_PKG_VERSION"), "{line}");
    assert!(
        line["config"].to_string().contains("rows_per_second"),
        "{line}"
    );
    assert!(
        !log.contains("hunter2-not-logged"),
        "a secret reached the log:\n{log}"
    );
    let kinds: HashSet<&str> = got
        .iter()
        .flat_map(|m| m.lines())
        .filter_map(|l| l.split('=').next())
        .collect();
    assert!(kinds.contains("STATUS"), "{got:?}");
    Ok(())
}
