//! The operator's pictures, end to end with the real `sluice-agent` draining a backlog: the
//! Grafana dashboard's every query evaluated by a real Prometheus scraping the agent (issue 34),
//! and the agent's live page at `/` driven in a real headless Chromium.
//!
//! Prometheus and Chromium are Debian's packages, found or installed by
//! `deploy/local/tools.sh`; where neither is possible each test prints `SKIPPED:` with the
//! reason and passes without asserting (no Grafana server is involved: the dashboard's queries
//! are what is tested). Screenshots go to the test's directory; with
//! `SLUICE_WRITE_SCREENSHOTS=1` the live page's is also written to `docs/images/` (the README's).

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use serde_json::Value;
use sluice_e2e::gen::Generator;
use sluice_e2e::{
    free_local_addr, repo_root, wait_for, AgentProcess, ChildProcess, Launch, TestEnv,
};

/// Long enough for a drain on a loaded 2-core machine.
const TIMEOUT: Duration = Duration::from_secs(240);
const STOP_TIMEOUT: Duration = Duration::from_secs(30);

/// The tool's path from `deploy/local/tools.sh`, or why it is missing.
fn tool(name: &str) -> Result<PathBuf, String> {
    let script = repo_root().join("deploy/local/tools.sh");
    let out = std::process::Command::new("bash")
        .arg(&script)
        .arg(name)
        .output()
        .map_err(|e| format!("running {}: {e}", script.display()))?;
    let path = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    if out.status.success() && !path.is_empty() {
        Ok(PathBuf::from(path))
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim().to_owned())
    }
}

/// The agent drains in adaptive mode (so the foreground probe's figures exist) at most
/// `ceiling` receipts a second, reporting on the status queue.
fn settings(ceiling: u32) -> String {
    format!(
        "[throttle]\nmode = \"adaptive\"\nrows_per_second = {ceiling}\nburst = {ceiling}\n\
         [batch]\nmax_rows = 50\nmax_wait_ms = 20"
    )
}

/// Uploads `n` receipts in chunks of 50, then 20 of them again (duplicates) and one with other
/// content (a conflict, dead-lettered): every outcome the dashboard shows happens.
async fn backlog(env: &TestEnv, seed: u64, n: usize) -> anyhow::Result<usize> {
    let ingest = env
        .start_ingest(&[("SLUICE_MAX_RECEIPTS_PER_CHUNK", "50")])
        .await?;
    let receipts = Generator::new(seed).receipts(n);
    let (code, answer) = ingest.upload_json(&receipts).await?;
    anyhow::ensure!(code == 202, "upload: {code} {answer}");
    let (code, answer) = ingest.upload_json(&receipts[..20]).await?;
    anyhow::ensure!(code == 202, "duplicates: {code} {answer}");
    let mut conflicting = receipts[30].clone();
    conflicting["total"] = serde_json::json!("4321.00");
    conflicting["items"] = serde_json::json!([{
        "description": "Corrected line", "quantity": "1", "unit_price": "4321.00", "amount": "4321.00"
    }]);
    let (code, answer) = ingest.upload_json(&[conflicting]).await?;
    anyhow::ensure!(code == 202, "conflict: {code} {answer}");
    Ok(n)
}

/// The agent's live JSON.
async fn live(agent: &AgentProcess) -> Option<Value> {
    let (code, body) = agent.get("/v1/status").await?;
    (code == 200).then(|| serde_json::from_str(&body).ok())?
}

fn queue_total(v: &Value) -> Option<u64> {
    let q = &v["queue"];
    Some(q["visible"].as_u64()? + q["in_flight"].as_u64()? + q["delayed"].as_u64()?)
}

/// `sluice-agent status --json` for `agent`.
async fn status_json(env: &TestEnv, agent: &AgentProcess) -> anyhow::Result<Value> {
    let config = agent.config().to_str().unwrap_or_default().to_owned();
    let out = env
        .agent_cli(&["status", "--json", "--config", &config])
        .await?;
    anyhow::ensure!(
        out.status.success(),
        "status: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(serde_json::from_slice(&out.stdout)?)
}

// ---------------------------------------------------------------------------------------------
// Prometheus

/// Prometheus on a free loopback port, scraping the agent every second, with the alert rules.
struct Prometheus {
    _process: ChildProcess,
    url: String,
    http: reqwest::Client,
}

impl Prometheus {
    async fn start(binary: &Path, dir: &Path, agent: std::net::SocketAddr) -> anyhow::Result<Self> {
        let addr = free_local_addr()?;
        let rules = repo_root().join("deploy/prometheus/sluice-alerts.yml");
        let config = dir.join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
                 rule_files:\n  - {rules:?}\n\
                 scrape_configs:\n  - job_name: sluice-agent\n    static_configs:\n      - targets: [\"{agent}\"]\n"
            ),
        )?;
        let data = dir.join("prometheus-data");
        std::fs::create_dir_all(&data)?;
        let args: Vec<String> = vec![
            format!("--config.file={}", config.display()),
            format!("--storage.tsdb.path={}", data.display()),
            format!("--web.listen-address={addr}"),
        ];
        let args: Vec<&OsStr> = args.iter().map(OsStr::new).collect();
        let process = ChildProcess::spawn(
            binary,
            &args,
            &Launch {
                log: dir.join("prometheus.log"),
                ..Launch::default()
            },
        )?;
        let http = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(10))
            .build()?;
        let url = format!("http://{addr}");
        let ready = format!("{url}/-/ready");
        wait_for(Duration::from_secs(60), "Prometheus ready", || async {
            let r = http.get(&ready).send().await.ok()?;
            r.status().is_success().then_some(())
        })
        .await
        .with_context(|| process.log_text())?;
        Ok(Self {
            _process: process,
            url,
            http,
        })
    }

    /// `GET /api/v1/query?query=…`: the result vector.
    async fn query(&self, expr: &str) -> anyhow::Result<Vec<Value>> {
        let answer: Value = self
            .http
            .get(format!("{}/api/v1/query", self.url))
            .query(&[("query", expr)])
            .send()
            .await?
            .json()
            .await?;
        anyhow::ensure!(answer["status"] == "success", "{expr}: {answer}");
        Ok(answer["data"]["result"]
            .as_array()
            .cloned()
            .unwrap_or_default())
    }

    /// The single value of a query that sums to one series.
    async fn value(&self, expr: &str) -> Option<f64> {
        let r = self.query(expr).await.ok()?;
        r.first()?["value"][1].as_str()?.parse().ok()
    }
}

/// Every panel's queries, with Grafana's variables replaced as Grafana would for "All".
fn dashboard_queries() -> anyhow::Result<Vec<(String, String)>> {
    let path = repo_root().join("deploy/grafana/sluice.json");
    let dashboard: Value = serde_json::from_str(&std::fs::read_to_string(&path)?)?;
    let mut out = Vec::new();
    for panel in dashboard["panels"].as_array().into_iter().flatten() {
        for target in panel["targets"].as_array().into_iter().flatten() {
            let expr = target["expr"].as_str().unwrap_or_default();
            let expr = expr
                .replace("$__rate_interval", "1m")
                .replace("$instance", ".*");
            out.push((panel["title"].as_str().unwrap_or("?").to_owned(), expr));
        }
    }
    Ok(out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_dashboard_panel_returns_data_from_a_real_prometheus_and_agrees_with_the_agent(
) -> anyhow::Result<()> {
    let prometheus = match tool("prometheus") {
        Ok(p) => p,
        Err(why) => {
            println!("SKIPPED: the dashboard's queries were not evaluated: {why}");
            return Ok(());
        }
    };
    let env = TestEnv::new().await?;
    env.create_status_queue().await?;
    let n = backlog(&env, 3401, 1_500).await?;
    let mut agent = env.launch_reporting_agent("agent", &settings(300)).await?;
    let prom = Prometheus::start(&prometheus, &env.dir(), agent.addr()).await?;

    // Scraped while it drains.
    wait_for(
        TIMEOUT,
        "Prometheus scraping rows being written",
        || async {
            let v = prom.value("sum(sluice_rows_written_total)").await?;
            (v > 0.0).then_some(())
        },
    )
    .await?;
    env.wait_drained(n as i64, TIMEOUT).await?;
    // The figures settle (the conflict dead-lettered), and the last scrape has them.
    let settled = wait_for(
        TIMEOUT,
        "the agent's counters settled and scraped",
        || async {
            let m = agent.metrics().await?;
            let written = m.counter("sluice_rows_written_total");
            let dead = m.counter("sluice_receipts_dead_lettered_total");
            if written < n as f64 || dead < 1.0 {
                return None;
            }
            let scraped = prom.value("sum(sluice_rows_written_total)").await?;
            let scraped_dead = prom
                .value("sum(sluice_receipts_dead_lettered_total)")
                .await?;
            (scraped == written && scraped_dead == dead).then_some(m)
        },
    )
    .await?;

    // Every query of every panel returns data.
    let queries = dashboard_queries()?;
    assert!(queries.len() >= 25, "{} queries", queries.len());
    let mut empty = Vec::new();
    for (title, expr) in &queries {
        let result = prom.query(expr).await?;
        if result.is_empty() {
            empty.push(format!("{title}: {expr}"));
        }
    }
    assert!(
        empty.is_empty(),
        "panels without data:\n{}",
        empty.join("\n")
    );

    // And they agree with the agent's own /metrics (the counters stopped moving).
    for name in [
        "sluice_rows_written_total",
        "sluice_receipts_duplicate_total",
        "sluice_receipts_conflict_total",
        "sluice_receipts_dead_lettered_total",
        "sluice_receipts_received_total",
    ] {
        let scraped = prom.value(&format!("sum({name})")).await;
        assert_eq!(scraped, Some(settled.counter(name)), "{name}");
    }
    assert_eq!(settled.counter("sluice_rows_written_total"), n as f64);
    assert_eq!(settled.counter("sluice_receipts_duplicate_total"), 20.0);
    assert_eq!(settled.counter("sluice_receipts_conflict_total"), 1.0);
    assert_eq!(env.count_receipts().await?, n as i64);
    let rate = prom.value("sum(sluice_rate_rows_per_second)").await;
    let agent_rate = agent.metric("sluice_rate_rows_per_second", &[]).await;
    assert!(
        rate.is_some() && agent_rate.is_some(),
        "{rate:?} {agent_rate:?}"
    );
    let configured = prom
        .value("sum(sluice_rate_configured_rows_per_second)")
        .await;
    assert_eq!(configured, Some(300.0));

    // Prometheus loaded the alert rules, each evaluating without error.
    let answer: Value = prom
        .http
        .get(format!("{}/api/v1/rules", prom.url))
        .send()
        .await?
        .json()
        .await?;
    let rules: Vec<&Value> = answer["data"]["groups"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|g| g["rules"].as_array().into_iter().flatten())
        .collect();
    assert_eq!(rules.len(), 6, "{answer}");
    for r in rules {
        assert_eq!(r["health"], "ok", "{r}");
        let link = r["annotations"]["dashboard"].as_str().unwrap_or_default();
        assert!(link.starts_with("/d/sluice-agent/"), "{r}");
    }

    agent.terminate(STOP_TIMEOUT).await?;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Chromium

/// One headless Chromium load of the agent's page: its DOM after the scripts ran for
/// `budget_ms` of virtual time, a screenshot of it, and what it said on the console.
struct Load {
    dom: String,
    console: Vec<String>,
    png: Vec<u8>,
}

async fn load(chromium: &Path, url: &str, dir: &Path, name: &str) -> anyhow::Result<Load> {
    let profile = dir.join(format!("chromium-{name}"));
    let shot = dir.join(format!("{name}.png"));
    let run = |extra: Vec<String>| {
        let mut args = vec![
            "--headless".to_owned(),
            "--no-sandbox".to_owned(),
            "--disable-gpu".to_owned(),
            "--hide-scrollbars".to_owned(),
            "--no-first-run".to_owned(),
            format!("--user-data-dir={}", profile.display()),
            "--window-size=1400,680".to_owned(),
            "--virtual-time-budget=4000".to_owned(),
            "--enable-logging=stderr".to_owned(),
            "--v=0".to_owned(),
        ];
        args.extend(extra);
        args.push(url.to_owned());
        let out = tokio::process::Command::new(chromium)
            .args(args)
            .kill_on_drop(true)
            .output();
        async move {
            tokio::time::timeout(Duration::from_secs(120), out)
                .await
                .context("chromium did not finish")?
                .context("running chromium")
        }
    };
    let dumped = run(vec!["--dump-dom".to_owned()]).await?;
    let shot_out = run(vec![format!("--screenshot={}", shot.display())]).await?;
    let mut console = Vec::new();
    for out in [&dumped, &shot_out] {
        for line in String::from_utf8_lossy(&out.stderr).lines() {
            if line.contains("CONSOLE") || line.contains("Uncaught") {
                console.push(line.to_owned());
            }
        }
    }
    Ok(Load {
        dom: String::from_utf8_lossy(&dumped.stdout).into_owned(),
        console,
        png: std::fs::read(&shot).with_context(|| format!("reading {}", shot.display()))?,
    })
}

impl Load {
    /// The value of attribute `attr` on the element carrying `data-figure="name"` (or the
    /// element with `id`, for `#id`).
    fn attr(&self, element: &str, attr: &str) -> Option<String> {
        let marker = match element.strip_prefix('#') {
            Some(id) => format!("id=\"{id}\""),
            None => format!("data-figure=\"{element}\""),
        };
        let at = self.dom.find(&marker)?;
        let start = self.dom[..at].rfind('<')?;
        let end = at + self.dom[at..].find('>')?;
        let tag = &self.dom[start..end];
        let key = format!(" {attr}=\"");
        let from = tag.find(&key)? + key.len();
        let len = tag[from..].find('"')?;
        Some(tag[from..from + len].replace("&amp;", "&"))
    }

    fn figure(&self, name: &str) -> Option<String> {
        self.attr(name, "data-value").filter(|v| !v.is_empty())
    }

    fn number(&self, element: &str, attr: &str) -> Option<f64> {
        self.attr(element, attr)?.parse().ok()
    }
}

/// `page` is `before` or `after`, or between them: what the page showed was true within the
/// time of one refresh around it.
fn within(what: &str, page: Option<f64>, before: Option<f64>, after: Option<f64>) {
    match (page, before, after) {
        (Some(p), Some(b), Some(a)) => {
            let (lo, hi) = if a < b { (a, b) } else { (b, a) };
            let eps = 1e-9 * hi.abs().max(1.0);
            assert!(
                p >= lo - eps && p <= hi + eps,
                "{what}: the page shows {p}, status said {b} then {a}"
            );
        }
        (p, b, a) => assert!(
            p == b || p == a,
            "{what}: the page shows {p:?}, status said {b:?} then {a:?}"
        ),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_live_page_follows_a_drain_in_a_real_browser_and_shows_what_status_shows(
) -> anyhow::Result<()> {
    let chromium = match tool("chromium") {
        Ok(p) => p,
        Err(why) => {
            println!("SKIPPED: the live page was not driven in a browser: {why}");
            return Ok(());
        }
    };
    let env = TestEnv::new().await?;
    env.create_status_queue().await?;
    let n = backlog(&env, 3402, 3_000).await?;
    let mut agent = env.launch_reporting_agent("agent", &settings(150)).await?;
    let url = format!("http://{}/", agent.addr());
    let dir = env.dir();

    // Draining: the monitor has read the queue and receipts are being stored.
    wait_for(TIMEOUT, "the agent draining, its queue read", || async {
        let v = live(&agent).await?;
        let total = queue_total(&v)?;
        (total > 20 && v["rows_written"].as_u64()? > 0).then_some(())
    })
    .await?;
    let first = load(&chromium, &url, &dir, "live-page-1").await?;
    let status_after_first = status_json(&env, &agent).await?;
    assert!(first.console.is_empty(), "console: {:#?}", first.console);
    let depth_1 = first
        .number("#chart-depth", "data-last")
        .context("the depth chart has a last point")?;
    assert!(
        first.number("#chart-depth", "data-points").unwrap_or(0.0) >= 2.0,
        "{}",
        first.dom
    );
    // The queue only shrinks: what the page showed was at least what status read after it.
    let shown = first
        .figure("queue_total")
        .and_then(|v| v.parse::<f64>().ok());
    let after = queue_total(&status_after_first).map(|t| t as f64);
    assert!(
        shown.is_some_and(|s| after.is_some_and(|a| s >= a)),
        "page {shown:?}, status after {after:?}"
    );
    // The reason in words, and the limit as status says it (adaptive: it may move between).
    assert!(first.figure("reason").is_some(), "{}", first.dom);
    assert!(first.dom.contains("id=\"reason-words\""));

    // Later in the drain the depth chart has moved.
    wait_for(TIMEOUT, "the queue shrinking", || async {
        let total = queue_total(&live(&agent).await?)? as f64;
        (total < depth_1).then_some(())
    })
    .await?;
    let second = load(&chromium, &url, &dir, "live-page-2").await?;
    assert!(second.console.is_empty(), "console: {:#?}", second.console);
    let depth_2 = second
        .number("#chart-depth", "data-last")
        .context("the depth chart has a last point")?;
    assert!(depth_2 < depth_1, "depth {depth_1} then {depth_2}");
    assert_ne!(first.png, second.png, "the screenshots differ");
    assert_ne!(
        first.attr("#chart-depth", "data-points"),
        None,
        "the chart was drawn"
    );
    if std::env::var_os("SLUICE_WRITE_SCREENSHOTS").is_some() {
        let to = repo_root().join("docs/images/live-page.png");
        std::fs::create_dir_all(to.parent().unwrap_or(Path::new(".")))?;
        std::fs::write(&to, &second.png)?;
    }

    // Drained and settled: the page's figures equal `status --json`'s, read just before and
    // just after it.
    env.wait_drained(n as i64, TIMEOUT).await?;
    wait_for(TIMEOUT, "the agent's queue figures at zero", || async {
        let v = live(&agent).await?;
        (queue_total(&v)? == 0 && v["oldest_received_message_age_seconds"] == 0.0).then_some(())
    })
    .await?;
    let before = status_json(&env, &agent).await?;
    let page = load(&chromium, &url, &dir, "live-page-3").await?;
    let after = status_json(&env, &agent).await?;
    assert!(page.console.is_empty(), "console: {:#?}", page.console);
    let f = |v: &Value, p: &str| v.pointer(p).and_then(Value::as_f64);
    let figures = [
        ("queue_total", "data-value", "/queue/visible"),
        ("#queue", "data-visible", "/queue/visible"),
        ("#queue", "data-in-flight", "/queue/in_flight"),
        ("#queue", "data-delayed", "/queue/delayed"),
        ("dlq_total", "data-value", "/dlq/visible"),
        (
            "oldest_seconds",
            "data-value",
            "/oldest_message_age_seconds",
        ),
        ("limit", "data-value", "/rate/limit_rows_per_second"),
        (
            "#rate",
            "data-configured",
            "/rate/configured_rows_per_second",
        ),
        ("#backlog", "data-per-message", "/receipts_per_message"),
        ("backlog", "data-value", "/backlog_receipts_estimate"),
        ("drain_at_limit", "data-value", "/drain_seconds_at_limit"),
        ("#agents-line", "data-share", "/agent/rate_share"),
        (
            "unreported_chunks",
            "data-value",
            "/agent/status_reports/unreported_chunks",
        ),
    ];
    for (element, attr, pointer) in figures {
        within(
            &format!("{element} {attr} vs {pointer}"),
            page.number(element, attr),
            f(&before, pointer),
            f(&after, pointer),
        );
    }
    // The DLQ holds the conflict; every queue state is 0 on the main queue.
    assert_eq!(page.figure("queue_total").as_deref(), Some("0"));
    assert!(page.number("dlq_total", "data-value").unwrap_or(0.0) >= 1.0);
    let text = |v: &Value, p: &str| {
        v.pointer(p)
            .map(|x| x.to_string().trim_matches('"').to_owned())
    };
    for (name, pointer) in [
        ("ready", "/agent/ready"),
        ("reason", "/agent/throttle/reason"),
    ] {
        let shown = page.figure(name);
        assert!(
            shown == text(&before, pointer) || shown == text(&after, pointer),
            "{name}: page {shown:?}, status {:?} / {:?}",
            text(&before, pointer),
            text(&after, pointer)
        );
    }
    let live_agents = |v: &Value| {
        v["agents"]
            .as_array()
            .map(|a| a.iter().filter(|x| x["live"] == true).count() as f64)
    };
    within(
        "agents live",
        page.number("agents_live", "data-value"),
        live_agents(&before),
        live_agents(&after),
    );
    agent.terminate(STOP_TIMEOUT).await?;
    Ok(())
}
