//! Building the SQS client: one place decides which settings come from the AWS chain and
//! which from Sluice's configuration.

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

/// An SQS client with fixed credentials that reads nothing from the environment, for a local
/// SQS-API server (the test harness, the demo). Built without `.await`.
pub fn sqs_client_with_credentials(
    region: &str,
    endpoint: &str,
    credentials: Credentials,
) -> Client {
    let conf = aws_sdk_sqs::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new(region.to_owned()))
        .endpoint_url(endpoint)
        .credentials_provider(credentials)
        .build();
    Client::from_conf(conf)
}
