//! The local SQS-API server's side of the harness: a client with throwaway credentials, and a
//! queue with its dead-letter queue and redrive policy, as the tests and the demo create them.

use std::time::Duration;

use anyhow::Context as _;
use aws_sdk_sqs::types::QueueAttributeName;

/// An SQS client for the local server, with throwaway credentials.
pub fn sqs_client(endpoint: &str) -> aws_sdk_sqs::Client {
    aws_sdk_sqs::Client::from_conf(sluice_aws::local_sqs(endpoint).build())
}

/// The URLs of a queue and of its dead-letter queue.
#[derive(Debug, Clone)]
pub struct QueuePair {
    pub queue_url: String,
    pub dlq_url: String,
}

/// Creates queue `name` and its dead-letter queue `{name}-dlq`. The DLQ keeps messages for 14
/// days (SQS's longest); the queue hides a received message for `visibility_timeout_seconds`
/// and moves it to the DLQ when it is received for the `max_receive_count`-th time.
pub async fn create_queue_pair(
    sqs: &aws_sdk_sqs::Client,
    name: &str,
    visibility_timeout_seconds: u32,
    max_receive_count: u32,
) -> anyhow::Result<QueuePair> {
    let dlq_name = format!("{name}-dlq");
    let dlq_url = create_queue(
        sqs,
        &dlq_name,
        &[(
            QueueAttributeName::MessageRetentionPeriod,
            "1209600".to_owned(),
        )],
    )
    .await?;
    let dlq_arn = sqs
        .get_queue_attributes()
        .queue_url(&dlq_url)
        .attribute_names(QueueAttributeName::QueueArn)
        .send()
        .await
        .map_err(|e| sqs_error(&format!("reading the ARN of {dlq_name}"), e))?
        .attributes
        .and_then(|a| a.get(&QueueAttributeName::QueueArn).cloned())
        .with_context(|| format!("{dlq_name} has no ARN"))?;
    let redrive = serde_json::json!({
        "deadLetterTargetArn": dlq_arn,
        "maxReceiveCount": max_receive_count.to_string(),
    });
    let queue_url = create_queue(
        sqs,
        name,
        &[
            (
                QueueAttributeName::VisibilityTimeout,
                visibility_timeout_seconds.to_string(),
            ),
            (QueueAttributeName::RedrivePolicy, redrive.to_string()),
        ],
    )
    .await?;
    Ok(QueuePair { queue_url, dlq_url })
}

/// Creates a queue, retrying briefly if the server still remembers a queue of that name.
async fn create_queue(
    sqs: &aws_sdk_sqs::Client,
    name: &str,
    attributes: &[(QueueAttributeName, String)],
) -> anyhow::Result<String> {
    let mut tries = 0;
    loop {
        tries += 1;
        let mut req = sqs.create_queue().queue_name(name);
        for (k, v) in attributes {
            req = req.attributes(k.clone(), v);
        }
        match req.send().await {
            Ok(out) => {
                return out
                    .queue_url
                    .with_context(|| format!("queue {name} has no URL"))
            }
            Err(_) if tries < 5 => {
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            Err(e) => return Err(sqs_error(&format!("creating queue {name}"), e)),
        }
    }
}

/// An SQS error with its whole chain of causes (the SDK's own `Display` shows only the top).
fn sqs_error<E: std::error::Error>(what: &str, e: E) -> anyhow::Error {
    anyhow::anyhow!("{what}: {}", aws_sdk_sqs::error::DisplayErrorContext(e))
}
