//! Pollers: long-poll SQS, decode each message, and pass it on to the batcher.
//!
//! A poller receives only while the database is up, receiving is not paused (every write
//! refused), and the in-flight budget (receipts and decoded bytes, see `budget`) has room; each
//! decoded message then waits for its share. Only the receive itself races against shutdown, and
//! a receive cut short still gets a moment to answer so that what it brings is released; a
//! message already received is either passed on or released (visibility 0), never dropped
//! silently. Once shutdown begins no receive starts, and releases wait for the ones on their
//! way (see [`super::receiving`]), so a release is never taken again by this agent. An
//! undecodable message goes to the dead-letter queue with its reason; one in an envelope
//! version this agent does not read is released with a delay instead (see
//! [`super::unknown_version`]).

use std::sync::Arc;
use std::time::{Duration, Instant};

use sluice_protocol::envelope::{self, DecodeError};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::io::sqs::{Handle, Queue, RawMessage};
use crate::pipeline::backoff::outage_backoff;
use crate::pipeline::budget::Budget;
use crate::pipeline::delivery::Delivery;
use crate::pipeline::health::Health;
use crate::pipeline::inflight::InFlight;
use crate::pipeline::liveness::Liveness;
use crate::pipeline::receiving::Receiving;
use crate::pipeline::unknown_version::{VersionWatch, RELEASE_DELAY};
use crate::telemetry::names as m;

/// What a poller needs.
#[derive(Debug, Clone)]
pub struct PollerContext {
    pub queue: Queue,
    pub inflight: Arc<InFlight>,
    pub health: Health,
    pub budget: Budget,
    pub wait_seconds: u8,
    pub visibility_timeout_seconds: u32,
    /// Where each round of the loop is reported to the systemd watchdog.
    pub liveness: Liveness,
    /// Envelope versions seen that this agent does not read.
    pub versions: Arc<VersionWatch>,
    /// This agent's receives on their way, which shutdown's releases wait for.
    pub receiving: Receiving,
}

pub async fn poll(ctx: PollerContext, out: mpsc::Sender<Delivery>, cancel: CancellationToken) {
    let mut delays = outage_backoff();
    loop {
        // Gates: database up and receiving not paused, room in the in-flight budget.
        if !ctx.health.may_receive() {
            // A database outage (or every write refused) is a legitimate reason not to
            // receive: the watchdog keeps being pinged while the writers retry.
            let _waiting = ctx.liveness.waiting();
            tokio::select! {
                biased;
                _ = cancel.cancelled() => return,
                _ = ctx.health.wait_may_receive() => {}
            }
        }
        // Biased, and checked once more: at shutdown the releases free the budget at once, and
        // an unbiased select would then start a receive half the time, which takes what was
        // just released (one more receive counted towards the DLQ) to release it again.
        tokio::select! {
            biased;
            _ = cancel.cancelled() => return,
            _ = ctx.budget.room() => {}
        }
        if cancel.is_cancelled() {
            return;
        }
        let on_the_way = ctx.receiving.start();
        let receive = ctx
            .queue
            .receive(ctx.wait_seconds, ctx.visibility_timeout_seconds);
        tokio::pin!(receive);
        let received = tokio::select! {
            biased;
            _ = cancel.cancelled() => {
                release_cut_off(&ctx, receive, on_the_way).await;
                return;
            }
            r = &mut receive => r,
        };
        drop(on_the_way);
        ctx.liveness.beat();
        ctx.versions.tick(&ctx.health, Instant::now());
        let messages = match received {
            Ok(ms) => {
                delays = outage_backoff();
                ms
            }
            Err(e) => {
                metrics::counter!(m::ERRORS, "kind" => "sqs_receive").increment(1);
                let delay = delays.next().unwrap_or(Duration::from_secs(30));
                tracing::warn!(queue = %ctx.queue.url(), error = %e, retry_in = ?delay, "Receive failed; backing off.");
                // An SQS outage is a legitimate wait too: a restart would not end it.
                let _waiting = ctx.liveness.waiting();
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    _ = tokio::time::sleep(delay) => continue,
                }
            }
        };
        if messages.is_empty() {
            continue;
        }
        metrics::counter!(m::MESSAGES_RECEIVED).increment(messages.len() as u64);
        // Track the whole receive at once: a message queued behind another that waits for
        // in-flight budget must get its visibility extended too, or it comes back and its
        // receive count climbs towards the DLQ (seen in a database outage).
        for msg in &messages {
            ctx.inflight.track(&msg.handle);
        }
        for msg in messages {
            if cancel.is_cancelled() {
                release_at_shutdown(&ctx, &msg.handle).await;
                continue;
            }
            handle_message(&ctx, msg, &out, &cancel).await;
        }
    }
}

async fn handle_message(
    ctx: &PollerContext,
    msg: RawMessage,
    out: &mpsc::Sender<Delivery>,
    cancel: &CancellationToken,
) {
    // One poller decodes at a time and keeps its turn until the message is admitted (or
    // dead-lettered): besides the budget, at most one message is decoded and not yet charged.
    let decoding = tokio::select! {
        biased;
        _ = cancel.cancelled() => { release_at_shutdown(ctx, &msg.handle).await; return; }
        turn = ctx.budget.decoding() => turn,
    };
    let envelope::Decoded { chunk, json_bytes } = match envelope::decode_measured(
        &msg.body,
        msg.encoding.as_deref(),
    ) {
        Ok(decoded) => decoded,
        Err(DecodeError::UnsupportedVersion(v)) => {
            ctx.versions.seen(v, &ctx.health, Instant::now());
            tracing::debug!(message_id = %msg.handle.message_id, version = v, delay = ?RELEASE_DELAY, "Unknown envelope version; released.");
            release_after(ctx, &msg.handle, RELEASE_DELAY).await;
            return;
        }
        Err(e) => {
            dead_letter_undecodable(ctx, &msg, &e.to_string()).await;
            return;
        }
    };
    let rows = chunk.receipts.len();
    metrics::counter!(m::RECEIPTS_RECEIVED).increment(rows as u64);
    tracing::debug!(message_id = %msg.handle.message_id, batch_id = %chunk.batch_id, chunk = chunk.chunk_index, rows, "Received chunk.");
    // Waiting here holds only this message (and the rest of its receive, whose visibility the
    // heartbeat keeps): what is admitted is settled by the writers without any budget.
    let share = tokio::select! {
        biased;
        _ = cancel.cancelled() => { release_at_shutdown(ctx, &msg.handle).await; return; }
        p = ctx.budget.admit(rows, json_bytes) => match p {
            Ok(p) => p,
            Err(_) => { release(ctx, &msg.handle).await; return; }
        },
    };
    drop(decoding);
    let delivery = Delivery {
        handle: msg.handle.clone(),
        chunk,
        share,
    };
    if out.send(delivery).await.is_err() {
        release(ctx, &msg.handle).await;
    }
}

/// Sends an undecodable message to the dead-letter queue with the reason, then deletes it.
/// Without a dead-letter queue (or if SQS refuses), the message is left alone: the queue's
/// redrive policy moves it after `maxReceiveCount` receives.
async fn dead_letter_undecodable(ctx: &PollerContext, msg: &RawMessage, reason: &str) {
    let reason = format!("undecodable message: {reason}");
    metrics::counter!(m::ERRORS, "kind" => "decode").increment(1);
    match ctx
        .queue
        .dead_letter(&msg.handle, &msg.body, msg.encoding.as_deref(), &reason)
        .await
    {
        Ok(()) => {
            tracing::warn!(message_id = %msg.handle.message_id, reason = %reason, "Message dead-lettered.");
            ctx.health.dead_letter_sent();
            metrics::counter!(m::MESSAGES_DEAD_LETTERED).increment(1);
            for (h, e) in ctx.queue.delete(std::slice::from_ref(&msg.handle)).await {
                tracing::warn!(message_id = %h.message_id, error = %e, "Could not delete a dead-lettered message; it will come back and be dead-lettered again.");
            }
        }
        Err(e) => {
            ctx.health.dead_letter_failed(&e);
            tracing::error!(message_id = %msg.handle.message_id, reason = %reason, error = %e, receive_count = msg.receive_count, "Undecodable message kept on the queue; its redrive policy will move it.");
        }
    }
    ctx.inflight.untrack([&msg.handle]);
}

/// How long a receive cut off by shutdown may still take to answer. SQS hides messages as it
/// answers, so an answer dropped on the way leaves them invisible for the whole visibility
/// timeout; one already on its way arrives within milliseconds. A long poll still waiting
/// after this has found nothing to hide.
const RECEIVE_GRACE: Duration = Duration::from_secs(2);

/// Lets a receive that shutdown cut off finish (for at most [`RECEIVE_GRACE`]) and releases
/// whatever it brings, so those messages are visible again at once.
async fn release_cut_off<E>(
    ctx: &PollerContext,
    receive: impl std::future::Future<Output = Result<Vec<RawMessage>, E>>,
    on_the_way: super::receiving::OnTheWay,
) {
    let answer = tokio::time::timeout(RECEIVE_GRACE, receive).await;
    drop(on_the_way);
    let Ok(Ok(messages)) = answer else {
        return;
    };
    for msg in &messages {
        release_at_shutdown(ctx, &msg.handle).await;
    }
    if !messages.is_empty() {
        tracing::debug!(
            messages = messages.len(),
            "Released what a receive cut off by shutdown brought."
        );
    }
}

async fn release(ctx: &PollerContext, handle: &Handle) {
    release_after(ctx, handle, Duration::ZERO).await;
}

/// [`release`] once no receive of this agent is on its way, so none takes it again.
async fn release_at_shutdown(ctx: &PollerContext, handle: &Handle) {
    ctx.receiving.settled().await;
    release(ctx, handle).await;
}

/// Hands the message back to the queue, visible again after `delay`.
async fn release_after(ctx: &PollerContext, handle: &Handle, delay: Duration) {
    ctx.inflight
        .release(&ctx.queue, std::slice::from_ref(handle), delay)
        .await;
}
