//! On Lambda (`SLUICE_LAMBDA_HANDLER=photos`): the photo events queue's SQS event source,
//! answered with partial batch responses (a malformed event reaches the queue's DLQ), and any
//! other invocation (the template's schedule, an EventBridge rule) runs the sweep of photos
//! past their deadline.

use lambda_http::aws_lambda_events::sqs::{SqsBatchResponse, SqsEvent};
use lambda_http::{service_fn, LambdaEvent};
use serde_json::Value;

use super::PhotoService;

/// Serves events until the runtime stops.
pub async fn run(service: PhotoService) -> anyhow::Result<()> {
    let service = &service;
    lambda_http::lambda_runtime::run(service_fn(move |event: LambdaEvent<Value>| async move {
        handle(service, event.payload).await
    }))
    .await
    .map_err(|e| anyhow::anyhow!("Lambda runtime: {e}"))
}

/// An SQS event (it has `Records` from `aws:sqs`) is checked; anything else sweeps.
pub async fn handle(service: &PhotoService, payload: Value) -> Result<Value, lambda_http::Error> {
    let from_sqs = payload["Records"]
        .as_array()
        .and_then(|r| r.first())
        .is_some_and(|r| r["eventSource"] == "aws:sqs");
    if !from_sqs {
        let looked = service.sweep().await?;
        return Ok(serde_json::json!({ "swept": looked }));
    }
    let event: SqsEvent = serde_json::from_value(payload)?;
    Ok(serde_json::to_value(handle_event(service, event).await)?)
}

/// Checks every record; the ones not consumed are the batch item failures.
pub async fn handle_event(service: &PhotoService, event: SqsEvent) -> SqsBatchResponse {
    let work = event.records.iter().map(|m| async move {
        let id = m.message_id.clone().unwrap_or_default();
        match service
            .handle_message(m.body.as_deref().unwrap_or_default())
            .await
        {
            Ok(()) => None,
            Err(e) => {
                super::log_failure(&id, &e);
                Some(id)
            }
        }
    });
    let failed = futures_util::future::join_all(work).await;
    crate::io::sqs::batch_response(failed.into_iter().flatten())
}
