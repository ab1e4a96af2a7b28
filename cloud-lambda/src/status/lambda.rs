//! On Lambda (`SLUICE_LAMBDA_HANDLER=status`): the status queue's SQS event source, answered
//! with partial batch responses, so a message that was not consumed (malformed, or a failed
//! DynamoDB call) returns to the queue alone and a malformed one reaches its DLQ.

use lambda_http::aws_lambda_events::sqs::{BatchItemFailure, SqsBatchResponse, SqsEvent};
use lambda_http::{service_fn, LambdaEvent};

use super::webhook::KIND_ATTRIBUTE;
use super::StatusService;

/// Serves SQS events until the runtime stops.
pub async fn run(service: StatusService) -> anyhow::Result<()> {
    let service = &service;
    lambda_http::lambda_runtime::run(service_fn(move |event: LambdaEvent<SqsEvent>| async move {
        Ok::<_, lambda_http::Error>(handle_event(service, event.payload).await)
    }))
    .await
    .map_err(|e| anyhow::anyhow!("Lambda runtime: {e}"))
}

/// Consumes every record; the ones not consumed are the batch item failures.
pub async fn handle_event(service: &StatusService, event: SqsEvent) -> SqsBatchResponse {
    let work = event.records.iter().map(|m| async move {
        let id = m.message_id.clone().unwrap_or_default();
        let kind = m
            .message_attributes
            .get(KIND_ATTRIBUTE)
            .and_then(|a| a.string_value.as_deref());
        match service
            .handle(kind, m.body.as_deref().unwrap_or_default())
            .await
        {
            Ok(()) => None,
            Err(e) => {
                StatusService::log_failure(&id, &e);
                Some(id)
            }
        }
    });
    let failed = futures_util::future::join_all(work).await;
    let mut response = SqsBatchResponse::default();
    response.batch_item_failures = failed
        .into_iter()
        .flatten()
        .map(|id| {
            let mut f = BatchItemFailure::default();
            f.item_identifier = id;
            f
        })
        .collect();
    response
}
