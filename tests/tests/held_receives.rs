//! Messages held at a slow rate are received once each: the heartbeat keeps every held
//! message invisible, nothing is released and taken again. Counted with
//! `sluice_messages_received_total`: every extra receive brings a healthy message one step
//! nearer the queue's `maxReceiveCount` and the dead-letter queue.

use std::time::Duration;

use sluice_e2e::gen::Generator;
use sluice_e2e::oracle::Oracle;
use sluice_e2e::{EnvOptions, TestEnv};

const N: usize = 3_000;
const TIMEOUT: Duration = Duration::from_secs(240);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_thousand_messages_held_at_a_slow_rate_are_each_received_once() -> anyhow::Result<()>
{
    let env = TestEnv::with_options(EnvOptions {
        visibility_timeout_seconds: 10,
        ..EnvOptions::default()
    })
    .await?;
    let mut oracle = Oracle::new();
    let receipts = Generator::new(3131).receipts(N);
    env.upload_acknowledged(&mut oracle, &receipts, "1").await?;
    let agent = env
        .launch_agent(
            "held",
            "[queue]\nvisibility_timeout_seconds = 10\n\
             [throttle]\nrows_per_second = 100\nburst = 100\n\
             [batch]\nmax_rows = 100\nmax_in_flight_rows = 3000",
        )
        .await?;
    env.wait_drained(N as i64, TIMEOUT).await?;
    let received = agent.counter("sluice_messages_received_total").await;
    let released = agent.counter("sluice_messages_released_total").await;
    let lapsed = agent
        .counter("sluice_visibility_extension_failures_total")
        .await;
    let span: f64 = sqlx::query_scalar(
        "SELECT extract(epoch FROM max(ingested_at) - min(ingested_at))::float8 FROM sluice.receipts",
    )
    .fetch_one(&env.pool)
    .await?;
    eprintln!("received {received}, released {released}, lapsed {lapsed}, stored over {span:.1} s");
    agent.stop().await?;
    oracle.verify(&env).await?;
    assert_eq!(lapsed, 0.0, "every extension landed in time");
    assert_eq!(released, 0.0, "nothing was handed back");
    assert_eq!(received, N as f64, "each message received once");
    Ok(())
}
