//! The SQS side, against the real servers and the real `sluice-agent` binary: the
//! dead-letter queue checked by ARN and size (`check-config --online`, start-up, `dlq purge`),
//! thousands of messages held past their visibility timeout received once, and envelope
//! versions from a newer ingest (an unknown optional field stored, an unknown version released).

use std::time::Duration;

use aws_sdk_sqs::types::QueueAttributeName;
use serde_json::{json, Value};
use sluice_e2e::gen::Generator;
use sluice_e2e::oracle::Oracle;
use sluice_e2e::sqs_proxy::SqsProxy;
use sluice_e2e::{wait_for, EnvOptions, TestEnv};

const DRAIN_TIMEOUT: Duration = Duration::from_secs(240);

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn stdout(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The same queue URL, spelled with `localhost` instead of `127.0.0.1`: SQS (and moto) answer
/// to both.
fn other_spelling(url: &str) -> String {
    url.replacen("127.0.0.1", "localhost", 1)
}

/// Writes the test's config with `dead_letter_url` replaced, and returns its path.
fn config_with_dlq(env: &TestEnv, file: &str, dlq_url: &str) -> anyhow::Result<String> {
    let path = env.write_agent_config(file, &format!("[queue]\ndead_letter_url = {dlq_url:?}"))?;
    Ok(path.to_string_lossy().into_owned())
}

async fn create_queue(
    env: &TestEnv,
    name: &str,
    attrs: &[(QueueAttributeName, &str)],
) -> anyhow::Result<String> {
    let mut req = env.sqs.create_queue().queue_name(name);
    for (k, v) in attrs {
        req = req.attributes(k.clone(), *v);
    }
    req.send()
        .await?
        .queue_url
        .ok_or_else(|| anyhow::anyhow!("no queue URL"))
}

/// Item 3: `check-config --online` names each dead-letter problem, and `run` refuses the
/// definite ones with the same words (exit 64, which the unit does not restart).
#[tokio::test]
async fn check_config_online_names_each_dead_letter_queue_problem() -> anyhow::Result<()> {
    let env = TestEnv::new().await?;
    let small = create_queue(
        &env,
        &format!("{}-small", env.name),
        &[(QueueAttributeName::MaximumMessageSize, "1024")],
    )
    .await?;

    let ok = env.write_agent_config("ok.toml", "")?;
    let out = env
        .agent_cli(&[
            "check-config",
            "--online",
            "--config",
            &ok.to_string_lossy(),
        ])
        .await?;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("is another queue and takes messages as large as the main queue's"),
        "{}",
        stdout(&out)
    );

    let same = config_with_dlq(&env, "same.toml", &other_spelling(&env.queue_url))?;
    let too_small = config_with_dlq(&env, "small.toml", &small)?;
    let missing = config_with_dlq(&env, "missing.toml", &format!("{}-gone", env.dlq_url))?;
    for (config, code, needle) in [
        (&same, 64, "is the main queue itself (arn:aws:sqs:"),
        (
            &too_small,
            64,
            "accepts messages up to 1024 bytes, below the main queue's",
        ),
        (&missing, 69, "cannot read the dead-letter queue"),
    ] {
        let out = env
            .agent_cli(&["check-config", "--online", "--config", config])
            .await?;
        assert_eq!(out.status.code(), Some(code), "{config}: {}", stderr(&out));
        assert!(stderr(&out).contains(needle), "{config}: {}", stderr(&out));
        // Offline (what `run` checks before it connects) the file itself is valid.
        let out = env.agent_cli(&["check-config", "--config", config]).await?;
        assert_eq!(out.status.code(), Some(0), "{config}: {}", stderr(&out));
    }
    for (config, needle) in [
        (&same, "refusing to start: queue.dead_letter_url"),
        (&too_small, "refusing to start: the dead-letter queue"),
    ] {
        let out = env.agent_cli(&["run", "--config", config]).await?;
        assert_eq!(out.status.code(), Some(64), "{config}: {}", stderr(&out));
        assert!(stderr(&out).contains(needle), "{config}: {}", stderr(&out));
    }
    Ok(())
}

/// Item 3 at start-up: a dead-letter queue that does not exist yet is a condition on /readyz,
/// not a crash loop; the agent drains meanwhile and the condition clears once the queue exists.
#[tokio::test]
async fn a_missing_dead_letter_queue_at_start_is_a_condition_that_clears() -> anyhow::Result<()> {
    let env = TestEnv::new().await?;
    let late_name = format!("{}-late", env.name);
    let late_url = env.queue_url.replace(&env.name, &late_name);
    let agent = env
        .launch_agent(
            "late-dlq",
            &format!("[queue]\ndead_letter_url = {late_url:?}"),
        )
        .await?;
    let (code, body) = agent.get("/readyz").await.unwrap_or_default();
    assert_eq!(code, 503, "{body}");
    assert!(body.contains("dead_letter_unavailable"), "{body}");
    assert!(body.contains("cannot read the dead-letter queue"), "{body}");

    let mut oracle = Oracle::new();
    let receipts = Generator::new(1101).receipts(50);
    let ingest = env.start_ingest(&[]).await?;
    let (status, answer) = ingest.upload_json(&receipts).await?;
    assert_eq!(status, 202, "{answer}");
    oracle.acknowledge(&receipts);
    env.wait_drained(50, DRAIN_TIMEOUT).await?;

    create_queue(&env, &late_name, &[]).await?;
    wait_for(
        Duration::from_secs(90),
        "the condition to clear",
        || async {
            let (code, _) = agent.get("/readyz").await?;
            (code == 200).then_some(())
        },
    )
    .await?;
    agent.stop().await?;
    oracle.verify(&env).await?;
    Ok(())
}

/// Item 9: `dlq purge` resolves both queues to ARNs: another spelling of the main queue's URL
/// is refused and nothing is deleted; a real purge says how many messages go before it goes.
#[tokio::test]
async fn dlq_purge_refuses_another_spelling_of_the_main_queue() -> anyhow::Result<()> {
    let env = TestEnv::new().await?;
    for i in 0..2 {
        env.send_raw(&format!("main {i}"), &[]).await?;
    }
    for i in 0..3 {
        env.send_raw_to(&env.dlq_url, &format!("dead {i}"), &[])
            .await?;
    }
    let spellings = [
        other_spelling(&env.queue_url),
        // moto also answers to the account-less path.
        env.queue_url.replace("/123456789012/", "/"),
    ];
    for (i, spelling) in spellings.iter().enumerate() {
        assert_ne!(spelling, &env.queue_url);
        let config = config_with_dlq(&env, &format!("same{i}.toml"), spelling)?;
        let out = env
            .agent_cli(&["dlq", "purge", "--yes", "--config", &config])
            .await?;
        assert_eq!(out.status.code(), Some(64), "{spelling}: {}", stderr(&out));
        assert!(
            stderr(&out).contains("refusing to purge")
                && stderr(&out).contains("it is the main queue"),
            "{spelling}: {}",
            stderr(&out)
        );
    }
    assert_eq!(
        env.depth(&env.queue_url).await?.0,
        2,
        "main queue untouched"
    );

    let config = env.write_agent_config("agent.toml", "")?;
    let out = env
        .agent_cli(&[
            "dlq",
            "purge",
            "--yes",
            "--config",
            &config.to_string_lossy(),
        ])
        .await?;
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("3 messages now: 3 waiting (ApproximateNumberOfMessages)"),
        "{}",
        stderr(&out)
    );
    assert_eq!(
        env.depth(&env.queue_url).await?.0,
        2,
        "main queue untouched"
    );
    Ok(())
}

/// Item 6: 2,000 one-receipt messages held about twice as long as their 20 s visibility
/// timeout (a low rate), with visibility calls half-failing inside a 200 at first: every
/// extension lands in time, so no message is received twice. (Needs the local stack's patched
/// moto: stock moto loses deletes that race each other and hands those messages out again.)
#[tokio::test]
async fn thousands_of_messages_held_past_their_visibility_are_received_once() -> anyhow::Result<()>
{
    const N: usize = 2_000;
    let env = TestEnv::with_options(EnvOptions {
        visibility_timeout_seconds: 20,
        ..EnvOptions::default()
    })
    .await?;
    let receipts = Generator::new(1106).receipts(N);
    let ingest = env
        .start_ingest(&[("SLUICE_MAX_RECEIPTS_PER_CHUNK", "1")])
        .await?;
    let (status, answer) = ingest.upload_json(&receipts).await?;
    assert_eq!(status, 202, "{answer}");
    assert_eq!(answer["chunks"], N);
    assert_eq!(
        env.depth(&env.queue_url).await?.0,
        N as u64,
        "each chunk queued once"
    );
    let mut oracle = Oracle::new();
    oracle.acknowledge(&receipts);

    let sqs_addr = env.servers.sqs_addr()?;
    let proxy = SqsProxy::start(sqs_addr).await?;
    proxy.half_fail("ChangeMessageVisibilityBatch", 100);
    let agent = env
        .launch_agent(
            "held",
            &format!(
                "[queue]\nendpoint = \"{}\"\nvisibility_timeout_seconds = 20\n\
             [throttle]\nrows_per_second = 50\nburst = 100\n[batch]\nmax_rows = 100",
                proxy.endpoint()
            ),
        )
        .await?;
    env.wait_drained(N as i64, DRAIN_TIMEOUT).await?;
    let received = agent.counter("sluice_messages_received_total").await;
    let lapsed = agent
        .counter("sluice_visibility_extension_failures_total")
        .await;
    agent.stop().await?;
    assert!(proxy.withheld() > 0, "visibility calls were half-failed");
    assert_eq!(lapsed, 0.0, "every extension landed in time");
    assert_eq!(received, N as f64, "no message was received twice");
    oracle.verify(&env).await?;
    Ok(())
}

/// A plain-JSON chunk body of `receipts`, version `v`, with `extra` fields merged in.
fn chunk_body(v: u32, receipts: &[Value], extra: Value) -> String {
    let mut env = json!({
        "v": v,
        "batch_id": uuid::Uuid::new_v4().to_string(),
        "chunk_index": 0,
        "chunk_count": 1,
        "receipts": receipts,
    });
    if let (Some(obj), Some(more)) = (env.as_object_mut(), extra.as_object()) {
        for (k, val) in more {
            obj.insert(k.clone(), val.clone());
        }
    }
    env.to_string()
}

/// Item 7, a rolling upgrade of the ingest: a chunk with an optional field this agent does not
/// know is stored; chunks of an unknown envelope version are released to the queue (not
/// dead-lettered, not deleted), counted, reported once per version, and named on /readyz.
#[tokio::test]
async fn a_newer_ingest_is_stored_or_released_never_dead_lettered() -> anyhow::Result<()> {
    let env = TestEnv::new().await?;
    let mut gen = Generator::new(1107);
    let known = gen.receipts(20);
    env.send_raw(
        &chunk_body(
            1,
            &known,
            json!({"trace": {"id": "abc", "hops": [1, 2]}, "priority": 3}),
        ),
        &[],
    )
    .await?;
    for _ in 0..2 {
        env.send_raw(&chunk_body(3, &gen.receipts(5), json!({"parts": []})), &[])
            .await?;
    }
    let mut oracle = Oracle::new();
    oracle.acknowledge(&known);

    let agent = env.launch_agent("newer", "").await?;
    wait_for(
        DRAIN_TIMEOUT,
        "the known chunk stored and two released",
        || async {
            let stored = env.count_receipts_or_zero().await;
            let unknown = agent.counter("sluice_messages_unknown_version_total").await;
            (stored == 20 && unknown >= 2.0).then_some(())
        },
    )
    .await?;
    let (code, body) = agent.get("/readyz").await.unwrap_or_default();
    assert_eq!(code, 503, "{body}");
    assert!(body.contains("envelope_version_unknown"), "{body}");
    assert!(body.contains("upgrade the agent"), "{body}");
    assert_eq!(
        agent.counter("sluice_messages_dead_lettered_total").await,
        0.0
    );
    // Both are still on the queue, hidden for the release delay.
    let (visible, in_flight, delayed) = env.depth(&env.queue_url).await?;
    assert_eq!(visible + in_flight + delayed, 2, "released, not deleted");
    let log = agent.log_text();
    agent.stop().await?;
    assert_eq!(
        log.matches("which this agent does not read: upgrade the agent")
            .count(),
        1,
        "one ERROR per version:\n{log}"
    );
    // Nothing in the DLQ, the known chunk stored intact, the unknown ones not stored.
    oracle.verify(&env).await?;
    Ok(())
}
