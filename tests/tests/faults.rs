//! Fault injection against the real servers and the real `sluice-agent` binary, each scenario
//! judged by one oracle (`sluice_e2e::oracle`): once the faults stop and the queue drains,
//! every acknowledged receipt is stored exactly once and intact, nothing else is, and the DLQ
//! holds only what is genuinely bad, each with its reason.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use rand::{Rng as _, SeedableRng as _};
use serde_json::{json, Value};
use sluice_e2e::gen::Generator;
use sluice_e2e::oracle::Oracle;
use sluice_e2e::proxy::{CommitCut, Mode, Proxy};
use sluice_e2e::{wait_for, EnvOptions, Signal, TestEnv};

const DRAIN_TIMEOUT: Duration = Duration::from_secs(240);

/// The agent's database URL through `proxy`.
fn via(env: &TestEnv, proxy: &Proxy) -> String {
    let target = env
        .database_url
        .split_once('@')
        .map(|(user, rest)| {
            let path = rest.split_once('/').map_or("", |(_, p)| p);
            format!("{user}@{}/{path}", proxy.addr)
        })
        .unwrap_or_default();
    format!("[database]\nurl = \"{target}\"")
}

/// Where the test's PostgreSQL listens.
fn database_addr(env: &TestEnv) -> anyhow::Result<SocketAddr> {
    let host_port = env
        .database_url
        .split_once('@')
        .and_then(|(_, rest)| rest.split('/').next())
        .ok_or_else(|| anyhow::anyhow!("no host in {}", env.database_url))?;
    Ok(host_port.parse()?)
}

/// Scenario 1: `kill -9` at random moments — mid-receive, mid-transaction, between commit and
/// delete, mid-delete — ten times, restarting each time.
#[tokio::test]
async fn the_agent_killed_ten_times_at_random_moments_loses_and_duplicates_nothing(
) -> anyhow::Result<()> {
    let env = TestEnv::with_options(EnvOptions {
        visibility_timeout_seconds: 10,
        // Each kill leaves what it held invisible for one timeout, then it is received again:
        // the receive count grows with the kills, which is not the data's fault.
        max_receive_count: 30,
        ..EnvOptions::default()
    })
    .await?;
    let mut oracle = Oracle::new();
    env.upload_acknowledged(&mut oracle, &Generator::new(61).receipts(8_000), "100")
        .await?;
    let settings = "[queue]\nvisibility_timeout_seconds = 10\n[throttle]\nrows_per_second = 2000\nburst = 2000\n[batch]\nmax_rows = 300\nmax_wait_ms = 10";
    let mut rng = rand::rngs::StdRng::seed_from_u64(61);
    let mut stored_at_kills = Vec::new();
    for i in 0..10 {
        let mut agent = env.launch_agent(&format!("kill{i}"), settings).await?;
        let life = Duration::from_millis(rng.random_range(150..1_200));
        tokio::time::sleep(life).await;
        agent.kill().await?;
        stored_at_kills.push(env.count_receipts_or_zero().await);
    }
    assert!(
        stored_at_kills.last().copied().unwrap_or(0) < 8_000,
        "the kills must land mid-drain: {stored_at_kills:?}"
    );
    let agent = env.launch_agent("final", settings).await?;
    env.wait_drained(8_000, DRAIN_TIMEOUT).await?;
    agent.stop().await?;
    oracle.verify(&env).await?;
    Ok(())
}

/// Scenario 3: the PostgreSQL connection is cut right after `COMMIT` reaches the server (the
/// commit happened; the agent cannot know) and right before it does (it did not). Neither may
/// be followed by a delete; the retry of the committed batch is absorbed as duplicates.
#[tokio::test]
async fn a_connection_cut_around_commit_leads_to_no_delete_and_the_redelivery_is_absorbed(
) -> anyhow::Result<()> {
    let env = TestEnv::new().await?;
    let proxy = Proxy::start(database_addr(&env)?).await?;
    let mut oracle = Oracle::new();
    env.upload_acknowledged(&mut oracle, &Generator::new(63).receipts(3_000), "250")
        .await?;
    // Migrations commit too: let the agent apply every one of them, then arm the cuts.
    let migrations = std::fs::read_dir(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../onprem-agent/migrations"
    ))?
    .filter_map(Result::ok)
    .filter(|e| e.path().extension().is_some_and(|x| x == "sql"))
    .count();
    let agent = env
        .launch_agent(
            "commit-cut",
            &format!(
                "{}\n[throttle]\nrows_per_second = 1000\nburst = 1000\n[batch]\nmax_rows = 500",
                via(&env, &proxy)
            ),
        )
        .await?;
    wait_for(
        Duration::from_secs(30),
        "every migration applied",
        || async {
            sqlx::query_scalar::<_, i64>(
                "SELECT count(*) FROM sluice._sqlx_migrations WHERE success",
            )
            .fetch_one(&env.pool)
            .await
            .ok()
            .filter(|&n| usize::try_from(n).is_ok_and(|n| n >= migrations))
            .map(|_| ())
        },
    )
    .await?;
    proxy.cut_commits(CommitCut::AfterForwarding, 2);
    wait_for(
        Duration::from_secs(60),
        "two commits cut after forwarding",
        || async { (proxy.commits_cut() >= 2).then_some(()) },
    )
    .await?;
    proxy.cut_commits(CommitCut::BeforeForwarding, 2);
    wait_for(
        Duration::from_secs(60),
        "two commits cut before forwarding",
        || async { (proxy.commits_cut() >= 4).then_some(()) },
    )
    .await?;
    env.wait_drained(3_000, DRAIN_TIMEOUT).await?;
    let duplicates = agent.counter("sluice_receipts_duplicate_total").await;
    let received = agent.counter("sluice_messages_received_total").await;
    agent.stop().await?;
    oracle.verify(&env).await?;
    // A batch committed behind a cut connection is written again (not deleted unconfirmed):
    // its receipts come back as duplicates.
    assert!(duplicates >= 1.0, "no duplicate absorbed: {duplicates}");
    // And it was retried while held, not left to be redelivered by SQS.
    assert_eq!(received, 12.0, "12 chunks, each received once");
    Ok(())
}

/// Scenario 4: SQS slow, resetting connections, then down for a while.
#[tokio::test]
async fn sqs_latency_resets_and_an_outage_lose_nothing() -> anyhow::Result<()> {
    let env = TestEnv::with_options(EnvOptions {
        max_receive_count: 10,
        ..EnvOptions::default()
    })
    .await?;
    let sqs_addr = env.servers.sqs_addr()?;
    let proxy = Proxy::start(sqs_addr).await?;
    let mut oracle = Oracle::new();
    env.upload_acknowledged(&mut oracle, &Generator::new(64).receipts(4_000), "100")
        .await?;
    let agent = env.launch_agent("sqs-faults",
        &format!(
            "[queue]\nendpoint = \"http://{}\"\n[throttle]\nrows_per_second = 800\nburst = 800\n[batch]\nmax_rows = 200",
            proxy.addr
        ),
    )
    .await?;
    proxy.set_mode(Mode::Latency(Duration::from_millis(150)));
    tokio::time::sleep(Duration::from_secs(2)).await;
    for _ in 0..5 {
        proxy.reset_all();
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    proxy.set_mode(Mode::Refuse);
    proxy.reset_all();
    let outage_started = env.count_receipts_or_zero().await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    proxy.set_mode(Mode::Pass);
    env.wait_drained(4_000, DRAIN_TIMEOUT).await?;
    let errors = agent.counter("sluice_errors_total").await;
    agent.stop().await?;
    assert!(outage_started < 4_000, "the outage must land mid-drain");
    assert!(errors >= 1.0, "the faults were seen: {errors}");
    oracle.verify(&env).await?;
    Ok(())
}

/// Scenario 5: every batch takes longer than the visibility timeout; the heartbeat extends it,
/// so no message becomes visible again and none is received twice.
#[tokio::test]
async fn a_batch_slower_than_the_visibility_timeout_is_received_once() -> anyhow::Result<()> {
    let env = TestEnv::with_options(EnvOptions {
        visibility_timeout_seconds: 10,
        ..EnvOptions::default()
    })
    .await?;
    let mut oracle = Oracle::new();
    env.upload_acknowledged(&mut oracle, &Generator::new(65).receipts(600), "200")
        .await?;
    env.migrate().await?;
    // The receipts and the ledger statements each sleep 6 s: a transaction of 12 s, longer
    // than the 10 s visibility timeout, while each statement stays under the statement timeout
    // (which must be below the visibility timeout).
    sqlx::raw_sql(
        "CREATE FUNCTION sluice.slow_down() RETURNS trigger LANGUAGE plpgsql AS
           $$ BEGIN PERFORM pg_sleep(6); RETURN NULL; END $$;
         CREATE TRIGGER slow_down AFTER INSERT ON sluice.receipts
           FOR EACH STATEMENT EXECUTE FUNCTION sluice.slow_down();
         CREATE TRIGGER slow_down AFTER INSERT ON sluice.chunks
           FOR EACH STATEMENT EXECUTE FUNCTION sluice.slow_down();",
    )
    .execute(&env.pool)
    .await?;
    let agent = env
        .launch_agent(
            "slow",
            "[queue]\nvisibility_timeout_seconds = 10\n[database]\nstatement_timeout_ms = 9000\n\
         [batch]\nmax_rows = 600\nmax_wait_ms = 2000\n[throttle]\nburst = 1000",
        )
        .await?;
    env.wait_drained(600, DRAIN_TIMEOUT).await?;
    let received = agent.counter("sluice_messages_received_total").await;
    let duplicates = agent.counter("sluice_receipts_duplicate_total").await;
    agent.stop().await?;
    assert_eq!(received, 3.0, "3 chunks, each received exactly once");
    assert_eq!(duplicates, 0.0);
    oracle.verify(&env).await?;
    Ok(())
}

/// Scenario 6: two agents on one queue; one is frozen (SIGSTOP) past its visibility timeout
/// while holding messages, the other takes them over, then the frozen one resumes.
#[tokio::test]
async fn two_agents_one_frozen_past_its_visibility_timeout_still_store_exactly_once(
) -> anyhow::Result<()> {
    let env = TestEnv::with_options(EnvOptions {
        visibility_timeout_seconds: 10,
        max_receive_count: 10,
        ..EnvOptions::default()
    })
    .await?;
    let mut oracle = Oracle::new();
    env.upload_acknowledged(&mut oracle, &Generator::new(66).receipts(4_000), "100")
        .await?;
    let settings = "[queue]\nvisibility_timeout_seconds = 10\n[throttle]\nrows_per_second = 250\nburst = 250\n[batch]\nmax_rows = 200\nmax_in_flight_rows = 1000";
    let frozen = env.launch_agent("frozen", settings).await?;
    let other = env.launch_agent("other", settings).await?;
    wait_for(
        Duration::from_secs(60),
        "the first agent to hold messages",
        || async { (frozen.counter("sluice_messages_received_total").await >= 3.0).then_some(()) },
    )
    .await?;
    frozen.signal(Signal::SIGSTOP)?;
    let frozen_at = Instant::now();
    // Past its visibility timeout: what it held is handed to the other agent.
    tokio::time::sleep(Duration::from_secs(16)).await;
    frozen.signal(Signal::SIGCONT)?;
    assert!(frozen_at.elapsed() > Duration::from_secs(10));
    env.wait_drained(4_000, DRAIN_TIMEOUT).await?;
    frozen.stop().await?;
    other.stop().await?;
    oracle.verify(&env).await?;
    Ok(())
}

/// Scenario 8: one receipt the database refuses (a check constraint the test adds) among 999
/// good ones in one message: 999 stored, the bad one dead-lettered with the database's error.
#[tokio::test]
async fn a_row_the_database_refuses_is_dead_lettered_and_its_999_neighbours_stored(
) -> anyhow::Result<()> {
    let env = TestEnv::new().await?;
    env.migrate().await?;
    sqlx::query(
        "ALTER TABLE sluice.receipts ADD CONSTRAINT no_poison_pill CHECK (merchant <> 'Poison Pill GmbH')",
    )
    .execute(&env.pool)
    .await?;
    let mut receipts = Generator::new(68).receipts(1_000);
    receipts[637]["merchant"] = json!("Poison Pill GmbH");
    let bad_id = receipts[637]["receipt_id"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let ingest = env
        .start_ingest(&[
            ("SLUICE_MAX_RECEIPTS_PER_CHUNK", "1000"),
            ("SLUICE_MAX_MESSAGE_BYTES", "1048576"),
        ])
        .await?;
    let (status, answer) = ingest.upload_json(&receipts).await?;
    assert_eq!(status, 202, "{answer}");
    assert_eq!(answer["chunks"], 1, "one message: {answer}");
    let mut oracle = Oracle::new();
    let good: Vec<Value> = receipts
        .iter()
        .filter(|r| r["receipt_id"] != json!(bad_id))
        .cloned()
        .collect();
    oracle.acknowledge(&good);
    oracle.expect_dead_letter(&bad_id, "no_poison_pill");

    let agent = env
        .launch_agent(
            "poison",
            "[batch]\nmax_rows = 1000\n[throttle]\nrows_per_second = 5000\nburst = 5000",
        )
        .await?;
    env.wait_drained(999, DRAIN_TIMEOUT).await?;
    let refused = agent.counter("sluice_receipts_dead_lettered_total").await;
    agent.stop().await?;
    assert_eq!(refused, 1.0);
    let dead = oracle.verify(&env).await?;
    assert_eq!(dead.len(), 1);
    let reason = &dead[0].attributes["sluice-error"];
    assert!(
        reason.contains(&format!("receipt {bad_id} refused by the database")),
        "{reason}"
    );
    assert!(
        reason.contains("23514"),
        "the SQLSTATE of a check violation: {reason}"
    );
    let ledger: (i32, i32) = sqlx::query_as("SELECT receipts, rejected FROM sluice.chunks")
        .fetch_one(&env.pool)
        .await?;
    assert_eq!(
        ledger,
        (1000, 1),
        "the ledger records the chunk with its one rejected row"
    );
    Ok(())
}

/// Scenario 4, second half: SQS batch calls that half-fail inside a 200 answer — on the API's
/// sends, the agent's deletes and its visibility changes. Every `Failed` entry is retried.
#[tokio::test]
async fn batch_calls_that_half_fail_inside_a_200_lose_nothing() -> anyhow::Result<()> {
    use sluice_e2e::sqs_proxy::SqsProxy;
    let env = TestEnv::new().await?;
    let sqs_addr = env.servers.sqs_addr()?;
    let proxy = SqsProxy::start(sqs_addr).await?;
    proxy.half_fail("SendMessageBatch", 3);
    let ingest = env
        .start_ingest(&[
            ("SLUICE_SQS_ENDPOINT", proxy.endpoint().as_str()),
            ("SLUICE_MAX_RECEIPTS_PER_CHUNK", "50"),
        ])
        .await?;
    let receipts = Generator::new(69).receipts(3_000);
    let (status, answer) = ingest.upload_json(&receipts).await?;
    assert_eq!(status, 202, "{answer}");
    assert_eq!(answer["chunks"], 60);
    let withheld_sends = proxy.withheld();
    assert!(
        withheld_sends >= 3,
        "sends were half-failed: {withheld_sends}"
    );
    assert_eq!(
        env.depth(&env.queue_url).await?.0,
        60,
        "every chunk is on the queue once"
    );
    let mut oracle = Oracle::new();
    oracle.acknowledge(&receipts);

    proxy.half_fail("DeleteMessageBatch", 5);
    proxy.half_fail("ChangeMessageVisibilityBatch", 5);
    let agent = env
        .launch_agent(
            "half-fail",
            &format!(
                "[queue]\nendpoint = \"{}\"\n[throttle]\nrows_per_second = 1000\nburst = 1000",
                proxy.endpoint()
            ),
        )
        .await?;
    env.wait_drained(3_000, DRAIN_TIMEOUT).await?;
    let received = agent.counter("sluice_messages_received_total").await;
    agent.stop().await?;
    assert!(
        proxy.withheld() > withheld_sends,
        "deletes were half-failed too"
    );
    assert_eq!(received, 60.0, "retried deletes: no message came back");
    oracle.verify(&env).await?;
    Ok(())
}

/// Scenario 2: PostgreSQL killed in immediate mode while transactions are in flight, then
/// restarted (crash recovery). Whatever was mid-transaction rolls back; the agent retries it.
#[tokio::test]
async fn postgres_crashing_mid_transaction_and_restarting_loses_nothing() -> anyhow::Result<()> {
    let pg = sluice_e2e::PrivatePostgres::start().await?;
    let env = TestEnv::with_options(EnvOptions {
        database_url: Some(pg.url()),
        ..EnvOptions::default()
    })
    .await?;
    let mut oracle = Oracle::new();
    env.upload_acknowledged(&mut oracle, &Generator::new(62).receipts(6_000), "200")
        .await?;
    env.migrate().await?;
    // Every insert takes 300 ms, so transactions are back to back and a crash lands inside one.
    sqlx::raw_sql(
        "CREATE FUNCTION sluice.slow_down() RETURNS trigger LANGUAGE plpgsql AS
           $$ BEGIN PERFORM pg_sleep(0.3); RETURN NULL; END $$;
         CREATE TRIGGER slow_down AFTER INSERT ON sluice.receipts
           FOR EACH STATEMENT EXECUTE FUNCTION sluice.slow_down();",
    )
    .execute(&env.pool)
    .await?;
    let agent = env.launch_agent("crash",
        "[throttle]\nrows_per_second = 100000\nburst = 100000\n[batch]\nmax_rows = 400\nmax_wait_ms = 20",
    )
    .await?;
    for round in 0..3 {
        wait_for(
            Duration::from_secs(60),
            "the drain to be under way",
            || async { (env.count_receipts_or_zero().await >= 1_000 * (round + 1)).then_some(()) },
        )
        .await?;
        pg.crash().await?;
        tokio::time::sleep(Duration::from_secs(2)).await;
        pg.resume().await?;
    }
    env.wait_drained(6_000, DRAIN_TIMEOUT).await?;
    let errors = agent.counter("sluice_errors_total").await;
    agent.stop().await?;
    assert!(errors >= 1.0, "the crashes were seen: {errors}");
    oracle.verify(&env).await?;
    Ok(())
}

/// Scenario 7: a duplicate storm — every message delivered three times, some copies inside one
/// receive batch, some after the first copy was committed.
#[tokio::test]
async fn a_duplicate_storm_is_stored_exactly_once() -> anyhow::Result<()> {
    let env = TestEnv::new().await?;
    let values = Generator::new(67).receipts(3_000);
    let receipts: Vec<sluice_protocol::Receipt> = values
        .iter()
        .enumerate()
        .map(|(i, v)| sluice_protocol::Receipt::from_value(v, i))
        .collect::<Result<_, _>>()
        .map_err(|e| anyhow::anyhow!("generated receipts are valid: {e:?}"))?;
    let limits = sluice_protocol::Limits {
        max_receipts_per_chunk: 100,
        ..sluice_protocol::Limits::default()
    };
    let messages = sluice_protocol::split(&uuid::Uuid::new_v4().to_string(), &receipts, &limits)?;
    let mut oracle = Oracle::new();
    oracle.acknowledge(&values);
    // Two copies of everything now, back to back (they share receive batches)...
    for m in &messages {
        env.send_raw(&m.body, &[]).await?;
        env.send_raw(&m.body, &[]).await?;
    }
    let agent = env
        .launch_agent(
            "storm",
            "[throttle]\nrows_per_second = 1500\nburst = 1500\n[batch]\nmax_rows = 500",
        )
        .await?;
    // ...and a third copy of each while the drain is under way.
    wait_for(
        Duration::from_secs(60),
        "the drain to be under way",
        || async { (env.count_receipts_or_zero().await >= 500).then_some(()) },
    )
    .await?;
    for m in &messages {
        env.send_raw(&m.body, &[]).await?;
    }
    env.wait_drained(3_000, DRAIN_TIMEOUT).await?;
    let received = agent.counter("sluice_messages_received_total").await;
    let duplicates = agent.counter("sluice_receipts_duplicate_total").await;
    agent.stop().await?;
    assert_eq!(received, 90.0, "30 chunks × 3 copies");
    assert_eq!(duplicates, 6_000.0, "two of every three copies absorbed");
    oracle.verify(&env).await?;
    let chunks: i64 = sqlx::query_scalar("SELECT count(*) FROM sluice.chunks")
        .fetch_one(&env.pool)
        .await?;
    assert_eq!(chunks, 30);
    Ok(())
}
