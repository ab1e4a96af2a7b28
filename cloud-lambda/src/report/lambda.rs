//! On Lambda (`SLUICE_LAMBDA_HANDLER=status`): the status queue's SQS event source, answered
//! with partial batch responses, so a message that was not consumed (malformed, or a failed
//! DynamoDB call) returns to the queue alone and a malformed one reaches its DLQ.

use lambda_http::aws_lambda_events::sqs::{SqsBatchResponse, SqsEvent};
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
    crate::io::sqs::batch_response(failed.into_iter().flatten())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::records::Records;

    /// A service whose DynamoDB and SQS endpoints refuse connections.
    fn closed_service() -> StatusService {
        let cfg = crate::IngestConfig::from_lookup(|k| match k {
            "SLUICE_LAMBDA_HANDLER" => Some("status".into()),
            "SLUICE_STATUS_TABLE" => Some("uploads".into()),
            _ => None,
        })
        .expect("valid");
        let dynamodb = sluice_aws::local_dynamodb("http://127.0.0.1:1")
            .retry_config(aws_sdk_dynamodb::config::retry::RetryConfig::disabled())
            .build();
        let sqs = sluice_aws::local_sqs("http://127.0.0.1:1").build();
        StatusService::new(
            &cfg,
            Records::new(
                aws_sdk_dynamodb::Client::from_conf(dynamodb),
                "uploads".into(),
            ),
            aws_sdk_sqs::Client::from_conf(sqs),
        )
        .expect("service")
    }

    #[tokio::test]
    async fn messages_not_consumed_are_the_batch_item_failures() {
        let report = sluice_protocol::ChunkReport {
            batch_id: "0f8fad5b-d9cb-469f-a165-70867728950e".into(),
            chunk_index: 0,
            chunk_count: 1,
            receipts: 1,
            stored: 1,
            duplicates: 0,
            conflicts: 0,
            rejected: 0,
            rejections: vec![],
            committed_at_ms: 0,
        };
        let good = sluice_protocol::report::encode_reports(&[report], 1 << 20).remove(0);
        let event: SqsEvent = serde_json::from_value(serde_json::json!({"Records": [
            {"messageId": "m-bad", "body": "not base64 !"},
            {"messageId": "m-unknown", "body": "{}", "messageAttributes": {
                "sluice-kind": {"stringValue": "telemetry", "dataType": "String"}}},
            {"messageId": "m-db-down", "body": good},
        ]}))
        .expect("an SQS event");
        let response = handle_event(&closed_service(), event).await;
        let failed: Vec<&str> = response
            .batch_item_failures
            .iter()
            .map(|f| f.item_identifier.as_str())
            .collect();
        assert_eq!(failed, ["m-bad", "m-unknown", "m-db-down"]);
        let json = serde_json::to_value(&response).expect("serializable");
        assert_eq!(json["batchItemFailures"][0]["itemIdentifier"], "m-bad");
    }
}
