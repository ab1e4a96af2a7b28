//! The rate accuracy of several agents together: three `sluice-agent` processes (release
//! build) on one queue and one database share a total of [`TOTAL`] receipts/s; what they store
//! together over a window, by the database's clock (`receipts.ingested_at`), against that
//! total. On the shared local stack's PostgreSQL, not the bench's private cluster: no
//! foreground runs alongside.

use std::time::Duration;

use sluice_e2e::gen::Generator;
use sluice_e2e::oracle::Oracle;
use sluice_e2e::shared_budget::{fleet_toml, wait_live};
use sluice_e2e::TestEnv;

use crate::Table;

/// The total the agents share (300 receipts/s each), as in the end-to-end test.
const TOTAL: u32 = 900;
const AGENTS: usize = 3;

/// Uploads a backlog that outlasts the window, runs the agents, and adds the row.
pub(crate) async fn measure(window: Duration, table: &mut Table) -> anyhow::Result<()> {
    let env = TestEnv::new().await?;
    // Startup, the window and its settling, with a margin.
    let backlog = (f64::from(TOTAL) * (window.as_secs_f64() + 20.0) * 1.3) as usize;
    eprintln!("bench: {AGENTS} agents sharing {TOTAL}/s, a backlog of {backlog} receipts");
    let receipts = Generator::new(9).receipts(backlog);
    env.upload_acknowledged(&mut Oracle::new(), &receipts, "100")
        .await?;
    drop(receipts);
    let agents = env
        .launch_fleet("shared", AGENTS, &fleet_toml(TOTAL))
        .await?;
    wait_live(
        &agents.iter().collect::<Vec<_>>(),
        AGENTS,
        Duration::from_secs(120),
    )
    .await?;
    // After the first second's burst.
    let from = env.db_now().await? + 2.0;
    let rate = env.stored_rate(from, window).await?;
    table.row(
        format!("rate accuracy, {AGENTS} agents sharing {TOTAL}/s (measured / configured total)"),
        format!("{:.1} %", rate / f64::from(TOTAL) * 100.0),
        format!(
            "{rate:.0}/s stored together over {} s by the database's clock; batches of 100",
            window.as_secs()
        ),
    );
    for a in agents {
        a.stop().await?;
    }
    env.cleanup().await;
    Ok(())
}
