//! The agent's memory is bounded in decoded bytes. A backlog of the largest
//! valid receipts, several times `batch.max_in_flight_bytes`, drains completely — nothing lost,
//! nothing written twice — and the agent never holds more than the bound.

use std::time::Duration;

use sluice_e2e::large::{send_backlog, LARGEST_PER_CHUNK};
use sluice_e2e::oracle::Oracle;
use sluice_e2e::{wait_for, TestEnv};

/// The smallest valid byte budget: the largest message a chunk may decode to.
const BOUND: usize = 16 * 1024 * 1024;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backlog_of_the_largest_receipts_drains_without_exceeding_max_in_flight_bytes(
) -> anyhow::Result<()> {
    let env = TestEnv::new().await?;
    // Eight messages of four ~1 MiB receipts and two nearly as large as the whole budget: about
    // 60 MiB of decoded JSON, four times the bound.
    let mut plan = vec![4; 8];
    plan.extend([LARGEST_PER_CHUNK; 2]);
    let backlog = send_backlog(&env, &plan, 0, true).await?;
    assert!(backlog.total_bytes > 3 * BOUND, "{}", backlog.total_bytes);
    assert!(backlog.largest_message_bytes <= BOUND);
    let mut oracle = Oracle::new();
    oracle.acknowledge(&backlog.receipts);

    let mut agent = env.spawn_agent(
        "agent",
        &format!("[queue]\npollers = 2\n[batch]\nmax_in_flight_bytes = {BOUND}"),
    )?;
    env.wait_drained(backlog.count as i64, Duration::from_secs(600))
        .await?;
    // Every message is settled: what it held is given back.
    wait_for(Duration::from_secs(30), "nothing held", || async {
        (agent.metric("sluice_in_flight_bytes", &[]).await? == 0.0).then_some(())
    })
    .await?;
    // The high-water mark counts each message's decoded size when admitted, under the same lock
    // that gives it back: it is the most ever held, whenever /metrics is read.
    let most = agent
        .metric("sluice_in_flight_bytes_max", &[])
        .await
        .expect("the high-water gauge");
    assert!(
        most <= BOUND as f64,
        "held {most} bytes, over the {BOUND} bound"
    );
    // The largest message was held at some point, charged its decoded (not compressed) size.
    assert!(
        most >= backlog.largest_message_bytes as f64,
        "high water {most} below the largest message's {} decoded bytes",
        backlog.largest_message_bytes
    );
    oracle.verify(&env).await?;
    let status = agent.terminate(Duration::from_secs(30)).await?;
    assert!(status.success(), "{status}");
    Ok(())
}
