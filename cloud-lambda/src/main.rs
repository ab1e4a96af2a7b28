//! `sluice-ingest`: the ingest API, and its uploader.
//!
//! * `sluice-ingest [--listen ADDR]`: on Lambda (`AWS_LAMBDA_RUNTIME_API` set) it serves the
//!   router through `lambda_http::run`, or with `SLUICE_LAMBDA_HANDLER=status` the status
//!   queue's SQS events; elsewhere it listens on `--listen` until SIGTERM/SIGINT, folding the
//!   status queue in the background when `SLUICE_STATUS_QUEUE_URL` is set.
//! * `sluice-ingest upload FILE.ndjson --api URL [--photos DIR] [--wait]`: sends a large file
//!   through an API (with `--photos`, each receipt's photo from `DIR` too, resumable through a
//!   journal), and with `--wait` follows its batches until they are stored, naming refused lines.
//!
//! * `sluice-ingest webhook-key --owner OWNER`: prints one owner's webhook signing key and its
//!   `kid`, derived from the master secret (`SLUICE_WEBHOOK_SECRET_ARN`, read from Secrets
//!   Manager, or `SLUICE_WEBHOOK_SECRET`), for the operator to give that owner's receiver.
//!   Exit 64 without a usable setting, 69 when the secret cannot be read.
//!
//! Exit codes of `upload`: 0 all accepted (with `--wait`: all stored), 1 something refused
//! (or a photo not stored), 2 bad flags, 64 bad `--api`, 65 a line's photo cannot be sent
//! (nothing was sent), 66 unreadable file or photo directory, 73 the journal cannot be opened;
//! with `--wait` also 69 no status endpoint (404 for every batch), 75 `--wait-timeout` passed,
//! 130 Ctrl-C.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use clap::{Parser, Subcommand};
use std::sync::Arc;

use sluice_cloud::config::Handler;
use sluice_cloud::photos::PhotoService;
use sluice_cloud::records::Records;
use sluice_cloud::report::StatusService;
use sluice_cloud::upload::outcome::{self, WaitReport};
use sluice_cloud::upload::wait::{self, WaitOptions};
use sluice_cloud::upload::{self, Progress, UploadOptions, UploadReport};
use sluice_cloud::IngestConfig;

/// Exit code for an invalid configuration (EX_USAGE).
const EXIT_CONFIG: u8 = 64;
/// Exit code for photos that cannot be sent (EX_DATAERR): nothing was sent.
const EXIT_DATA: u8 = 65;
/// Exit code for an upload file that cannot be read (EX_NOINPUT).
const EXIT_NO_INPUT: u8 = 66;
/// Exit code for a journal that cannot be opened (EX_CANTCREAT).
const EXIT_CANT_CREATE: u8 = 73;
/// Exit code for a webhook secret that cannot be read (EX_UNAVAILABLE).
const EXIT_UNAVAILABLE: u8 = 69;

#[derive(Debug, Parser)]
#[command(
    name = "sluice-ingest",
    version,
    about = "Sluice ingest API (POST /v1/batches), and an uploader for it."
)]
struct Cli {
    /// Address to listen on when not running on Lambda.
    #[arg(long, env = "SLUICE_LISTEN", default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Upload an NDJSON file (one receipt per line) in parallel requests; prints the batch ids.
    Upload(UploadArgs),
    /// Print one owner's webhook signing key and its key id (kid), derived from the master
    /// secret: SLUICE_WEBHOOK_SECRET_ARN (read from Secrets Manager with the standard AWS
    /// credentials) or SLUICE_WEBHOOK_SECRET.
    WebhookKey(WebhookKeyArgs),
}

#[derive(Debug, clap::Args)]
struct WebhookKeyArgs {
    /// The owner, as the API records it: the JWT `sub`, or the IAM caller's ARN.
    #[arg(long)]
    owner: String,
}

#[derive(Debug, clap::Args)]
struct UploadArgs {
    /// The NDJSON file.
    file: PathBuf,
    /// Base URL of the API, e.g. https://abc123.execute-api.eu-west-1.amazonaws.com
    #[arg(long)]
    api: String,
    /// Bearer token (or SLUICE_API_TOKEN).
    #[arg(long, env = "SLUICE_API_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Receipts per request [default: 5000, 500 with --photos (the 202 answer lists an upload
    /// URL per photo, and each request's photos are sent before its URLs expire)].
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=50_000))]
    receipts_per_request: Option<u32>,
    /// Requests in flight at once.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=64))]
    parallel: u16,
    /// Send bodies uncompressed.
    #[arg(long)]
    no_gzip: bool,
    /// Print the report as JSON on stdout (with --wait, the batches' final statuses too).
    #[arg(long)]
    json: bool,
    /// After uploading, follow the batches on GET /v1/batches/{id} until they are stored,
    /// then name the refused receipts by file line.
    #[arg(long)]
    wait: bool,
    /// How long --wait follows before giving up (exit 75): 90, 90s, 15m, 2h. Default 30m.
    #[arg(long, requires = "wait", value_parser = wait::parse_timeout)]
    wait_timeout: Option<std::time::Duration>,
    /// Upload each receipt's photo from DIR: the file its line's `photo` field names (relative
    /// to DIR; the field is not sent), else DIR/<receipt_id>.<jpg|jpeg|png|webp|heic|pdf>.
    /// Receipts without a file are sent without a photo.
    #[arg(long, value_name = "DIR")]
    photos: Option<PathBuf>,
    /// Photo uploads in flight at once.
    #[arg(long, requires = "photos", default_value_t = 8, value_parser = clap::value_parser!(u16).range(1..=128))]
    photo_parallel: u16,
    /// The resume journal (one line per photo stored; a re-run skips those) [default:
    /// DIR/.sluice-upload.journal].
    #[arg(long, requires = "photos", value_name = "FILE")]
    journal: Option<PathBuf>,
    /// Refuse the upload (before sending anything) if a receipt has no photo file.
    #[arg(long, requires = "photos")]
    require_photos: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("sluice-ingest: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match cli.command {
        Some(Command::Upload(args)) => return runtime.block_on(upload(args)),
        Some(Command::WebhookKey(args)) => return runtime.block_on(webhook_key(args)),
        None => {}
    }
    let cfg = match IngestConfig::from_env() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("sluice-ingest: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    match runtime.block_on(serve(cli.listen, cfg)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sluice-ingest: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// On Lambda: one JSON object per line (CloudWatch), never colour codes. Locally: text,
/// coloured only on a terminal and without `NO_COLOR`.
fn init_logging() {
    use std::io::IsTerminal as _;
    let filter = tracing_subscriber::EnvFilter::try_from_env("SLUICE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if std::env::var_os("AWS_LAMBDA_RUNTIME_API").is_some() {
        builder.json().flatten_event(true).with_ansi(false).init();
    } else {
        let colour = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
        builder.with_ansi(colour).init();
    }
}

async fn serve(listen: SocketAddr, cfg: IngestConfig) -> anyhow::Result<()> {
    // The standard AWS chain, with `SLUICE_SQS_ENDPOINT` applied.
    let client = sluice_aws::sqs_client(None, cfg.sqs_endpoint.as_deref()).await;
    tracing::info!(version = env!("CARGO_PKG_VERSION"), config = ?cfg, "sluice-ingest starting.");
    let records = match &cfg.status_table {
        Some(table) => {
            let endpoint = cfg.dynamodb_endpoint.as_deref();
            let sdk = sluice_aws::shared_config(None, endpoint).await;
            let records = Records::new(aws_sdk_dynamodb::Client::new(&sdk), table.clone())
                .with_ttl_days(cfg.status_ttl_days);
            if endpoint.is_some() {
                records.create_if_missing().await?;
            }
            Some(records)
        }
        None => {
            tracing::warn!("SLUICE_STATUS_TABLE is not set: an Idempotency-Key reused with another body cannot be refused (422); each body gets its own batch id instead.");
            None
        }
    };
    let on_lambda = std::env::var_os("AWS_LAMBDA_RUNTIME_API").is_some();
    let status = match &records {
        Some(records) => Some(StatusService::new(&cfg, records.clone(), client.clone())?),
        None => None,
    };
    let photos = match (&records, &cfg.photo_bucket) {
        (Some(records), Some(_)) => {
            let s3 = sluice_cloud::photos::s3_client(&cfg).await;
            Some(PhotoService::new(
                &cfg,
                records.clone(),
                s3,
                client.clone(),
            )?)
        }
        _ => None,
    };
    match (&photos, &cfg.photo_events_queue_url) {
        (Some(photos), _) if on_lambda && cfg.handler == Handler::Photos => {
            return sluice_cloud::photos::lambda::run(photos.clone()).await;
        }
        (Some(photos), Some(queue)) if !on_lambda => {
            let every = std::time::Duration::from_secs(cfg.photo_sweep_seconds);
            let task =
                sluice_cloud::photos::consumer::run(Arc::new(photos.clone()), queue.clone(), every);
            tokio::spawn(task);
        }
        _ => {}
    }
    match (status, &cfg.status_queue_url) {
        (Some(status), _) if on_lambda && cfg.handler == Handler::Status => {
            return sluice_cloud::report::lambda::run(status).await;
        }
        (Some(status), Some(queue)) if !on_lambda => {
            let task = sluice_cloud::report::consumer::run(Arc::new(status), queue.clone());
            tokio::spawn(task);
        }
        _ => {}
    }
    let mut state = sluice_cloud::state(cfg, client, records);
    if let Some(photos) = photos {
        state = state.with_photos(photos);
    }
    let app = sluice_cloud::app(state);
    if on_lambda {
        return lambda_http::run(app)
            .await
            .map_err(|e| anyhow::anyhow!("Lambda runtime: {e}"));
    }
    let listener = tokio::net::TcpListener::bind(listen).await?;
    tracing::info!(addr = %listener.local_addr()?, "Listening.");
    axum::serve(listener, app)
        .with_graceful_shutdown(stop_signal())
        .await?;
    tracing::info!("Stopped.");
    Ok(())
}

/// `webhook-key`: the owner's key on stdout as `kid=…` and `key=…` lines.
async fn webhook_key(args: WebhookKeyArgs) -> ExitCode {
    use sluice_cloud::report::webhook::MasterSecret;
    let get = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    let owner = args.owner.trim();
    if owner.is_empty() {
        eprintln!(
            "sluice-ingest: --owner is empty (the JWT `sub` or IAM caller ARN the API records)"
        );
        return ExitCode::from(EXIT_CONFIG);
    }
    let master = match (
        get("SLUICE_WEBHOOK_SECRET_ARN"),
        get("SLUICE_WEBHOOK_SECRET"),
    ) {
        (Some(_), Some(_)) => {
            eprintln!("sluice-ingest: SLUICE_WEBHOOK_SECRET and SLUICE_WEBHOOK_SECRET_ARN are both set: set one");
            return ExitCode::from(EXIT_CONFIG);
        }
        (Some(arn), None) => {
            if let Err(why) = sluice_cloud::config::check_secret_arn(&arn) {
                eprintln!("sluice-ingest: SLUICE_WEBHOOK_SECRET_ARN: {why}");
                return ExitCode::from(EXIT_CONFIG);
            }
            MasterSecret::from_arn(arn)
        }
        (None, Some(value)) => MasterSecret::given(value),
        (None, None) => {
            eprintln!("sluice-ingest: set SLUICE_WEBHOOK_SECRET_ARN (or SLUICE_WEBHOOK_SECRET) to the webhooks' master secret");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    match master.key_for(Some(owner)).await {
        Ok(key) => {
            println!("kid={}", key.kid());
            println!("key={}", key.secret().expose());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("sluice-ingest: {e}");
            ExitCode::from(EXIT_UNAVAILABLE)
        }
    }
}

/// SIGTERM or SIGINT: requests in progress finish, new connections are refused.
async fn stop_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, "Cannot listen for SIGTERM; stopping on Ctrl-C only.");
            let _ = tokio::signal::ctrl_c().await;
        }
    }
    tracing::info!("Stop signal received; finishing requests in progress.");
}

async fn upload(args: UploadArgs) -> ExitCode {
    use std::io::IsTerminal as _;
    let token = args.token.filter(|t| !t.is_empty());
    let photos = args.photos.clone().map(|dir| upload::PhotoOptions {
        journal: args.journal.clone(),
        parallel: usize::from(args.photo_parallel),
        require: args.require_photos,
        ..upload::PhotoOptions::new(dir)
    });
    let default_per_request = if photos.is_some() { 500 } else { 5_000 };
    let opts = UploadOptions {
        api: args.api.clone(),
        token: token.clone(),
        receipts_per_request: args.receipts_per_request.unwrap_or(default_per_request) as usize,
        parallel: usize::from(args.parallel),
        gzip: !args.no_gzip,
        photos,
        ..UploadOptions::default()
    };
    let started = Instant::now();
    let with_photos = opts.photos.is_some();
    // With photos: a redrawn line on a terminal only (several a second), nothing otherwise.
    let tty = std::io::stderr().is_terminal();
    let last_drawn = std::sync::Mutex::new(None::<Instant>);
    let result = upload::upload_file(&args.file, &opts, move |p: Progress| {
        if !with_photos {
            eprint!(
                "\rsluice-ingest: {} receipts in {} requests sent ({} retries), {:.1} s",
                p.receipts_done,
                p.requests_done,
                p.retries,
                started.elapsed().as_secs_f64()
            );
            return;
        }
        let mut last = last_drawn.lock().unwrap_or_else(|e| e.into_inner());
        let finished = p.photos_done == p.photos_total;
        if !tty || (!finished && last.is_some_and(|at| at.elapsed().as_millis() < 200)) {
            return;
        }
        *last = Some(Instant::now());
        eprint!(
            "\rsluice-ingest: {}\x1b[K",
            upload::photo_progress_line(&p, started.elapsed())
        );
    })
    .await;
    let report = match result {
        Ok(r) => r,
        Err(e) => {
            eprintln!("sluice-ingest: {e}");
            return ExitCode::from(match e {
                upload::UploadError::Read { .. } | upload::UploadError::PhotoDir { .. } => {
                    EXIT_NO_INPUT
                }
                upload::UploadError::Photos { .. } => EXIT_DATA,
                upload::UploadError::Journal { .. } => EXIT_CANT_CREATE,
                _ => EXIT_CONFIG,
            });
        }
    };
    if !with_photos || tty {
        eprintln!();
    }
    let waited = match args.wait {
        true => {
            let opts = WaitOptions {
                api: args.api.clone(),
                token,
                timeout: args.wait_timeout.unwrap_or(wait::DEFAULT_WAIT_TIMEOUT),
                ..WaitOptions::default()
            };
            match follow(&args.file, &report, &opts).await {
                Ok(w) => Some(w),
                Err(e) => {
                    eprintln!("sluice-ingest: {e}");
                    return ExitCode::from(EXIT_CONFIG);
                }
            }
        }
        false => None,
    };
    if args.json {
        #[derive(serde::Serialize)]
        struct Json<'a> {
            #[serde(flatten)]
            upload: &'a UploadReport,
            #[serde(skip_serializing_if = "Option::is_none")]
            wait: Option<&'a WaitReport>,
        }
        let json = Json {
            upload: &report,
            wait: waited.as_ref(),
        };
        println!(
            "{}",
            serde_json::to_string_pretty(&json).unwrap_or_default()
        );
    } else {
        for r in &report.requests {
            match (&r.batch_id, &r.error) {
                (Some(id), _) => println!(
                    "lines {}…: {} receipts accepted as batch {id}",
                    r.first_line, r.receipts
                ),
                (None, Some(e)) => println!(
                    "lines {}…: {} receipts REFUSED after {} attempt(s): {e}",
                    r.first_line, r.receipts, r.attempts
                ),
                (None, None) => {}
            }
        }
    }
    if let Some(p) = &report.photos {
        if !args.json {
            for f in &p.failed {
                println!(
                    "line {}: photo {} NOT STORED: {}",
                    f.line,
                    f.file.display(),
                    f.error
                );
            }
        }
        eprintln!(
            "sluice-ingest: {}",
            upload::describe_photos(p, started.elapsed())
        );
    }
    eprintln!(
        "sluice-ingest: {} receipts accepted, {} refused, in {:.1} s",
        report.accepted,
        report.refused,
        started.elapsed().as_secs_f64()
    );
    if let Some(w) = &waited {
        if !args.json {
            for r in &w.refused {
                println!("{}", outcome::describe_refused(r));
            }
            for u in &w.unlisted {
                println!(
                    "batch {}: {} more refused receipts (the status names the first {})",
                    u.batch_id,
                    u.count,
                    sluice_protocol::report::MAX_REJECTIONS
                );
            }
        }
        if let Some(e) = &w.last_error {
            eprintln!("sluice-ingest: the status endpoint's last error: {e}");
        }
        eprintln!(
            "sluice-ingest: {}",
            outcome::describe_totals(&w.totals, w.end)
        );
        let failed_photos = report.photos.as_ref().map_or(0, |p| p.failed.len());
        return ExitCode::from(outcome::exit_code(
            report.refused + failed_photos,
            w.end,
            &w.totals,
        ));
    }
    if report.ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// `--wait`: follows the batches with a progress line on stderr (redrawn on a terminal, a
/// plain line every 10 s otherwise), then looks the refused receipts up in the file.
async fn follow(
    file: &std::path::Path,
    report: &UploadReport,
    opts: &WaitOptions,
) -> Result<WaitReport, upload::UploadError> {
    use std::io::IsTerminal as _;
    let mut batches = outcome::batches_of(report);
    let tty = std::io::stderr().is_terminal();
    let started = Instant::now();
    let mut last_plain: Option<Instant> = None;
    let mut last_final = usize::MAX;
    let draw = |batches: &[outcome::FollowedBatch]| {
        let t = outcome::totals(batches);
        let line = outcome::progress_line(&t, 30);
        let elapsed = started.elapsed().as_secs_f64();
        if tty {
            eprint!("\rsluice-ingest: {line}, {elapsed:.0} s\x1b[K");
        } else if last_final != t.batches_final
            || last_plain.is_none_or(|at| at.elapsed() >= std::time::Duration::from_secs(10))
        {
            eprintln!("sluice-ingest: {line}, {elapsed:.0} s");
            last_plain = Some(Instant::now());
            last_final = t.batches_final;
        }
    };
    let stop = async {
        // Without a handler Ctrl-C kills outright; with one the summary is still printed.
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    let result = wait::follow(&mut batches, opts, draw, stop).await?;
    if tty {
        eprintln!();
    }
    let read = |source| upload::UploadError::Read {
        path: file.to_owned(),
        source,
    };
    let reader = std::io::BufReader::new(std::fs::File::open(file).map_err(read)?);
    let (refused, unlisted) = outcome::refused_lines(reader, &batches).map_err(read)?;
    Ok(WaitReport {
        end: result.end,
        totals: outcome::totals(&batches),
        batches,
        refused,
        unlisted,
        last_error: result.last_error,
    })
}
