//! Building clients: one place decides which settings come from the AWS chain and which from
//! Sluice's configuration, and how a client of a local AWS-API server (the test harness, the
//! demo) is set up.

use aws_config::{BehaviorVersion, Region};
use aws_sdk_sqs::config::Credentials;
use aws_sdk_sqs::Client;

/// The SQS client with credentials, region and settings from the standard AWS chain
/// (environment, profile, instance or task role); `region` and `endpoint` (an SQS-API server
/// other than AWS's) override the chain's when given.
pub async fn sqs_client(region: Option<&str>, endpoint: Option<&str>) -> Client {
    Client::new(&shared_config(region, endpoint).await)
}

/// The standard AWS chain's settings with `region` and `endpoint` overriding it, for any
/// service's client (the ingest's DynamoDB client is built from it too).
pub async fn shared_config(region: Option<&str>, endpoint: Option<&str>) -> aws_config::SdkConfig {
    let mut loader = aws_config::defaults(BehaviorVersion::latest());
    if let Some(region) = region {
        loader = loader.region(Region::new(region.to_owned()));
    }
    if let Some(endpoint) = endpoint {
        loader = loader.endpoint_url(endpoint);
    }
    loader.load().await
}

/// The region of a local server's clients (a local server takes any).
const LOCAL_REGION: &str = "us-east-1";

/// A local server's settings for the service crate `$sdk`: `LOCAL_REGION`, `$endpoint`,
/// throwaway credentials; nothing read from the environment.
macro_rules! local_config {
    ($sdk:ident, $endpoint:expr) => {
        $sdk::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new(LOCAL_REGION))
            .endpoint_url($endpoint)
            .credentials_provider(Credentials::new("test", "test", None, None, "sluice-test"))
    };
}

/// The settings of an SQS client for a local SQS-API server at `endpoint`, with fixed
/// credentials and nothing read from the environment. Add what a caller needs (for example
/// `RetryConfig::disabled()`), then `.build()`; built without `.await`.
pub fn local_sqs(endpoint: &str) -> aws_sdk_sqs::config::Builder {
    local_config!(aws_sdk_sqs, endpoint)
}

/// [`local_sqs`] for DynamoDB: a local DynamoDB-API server at `endpoint`.
pub fn local_dynamodb(endpoint: &str) -> aws_sdk_dynamodb::config::Builder {
    local_config!(aws_sdk_dynamodb, endpoint)
}
