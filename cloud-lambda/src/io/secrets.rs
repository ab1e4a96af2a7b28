//! Secrets Manager: the webhook master secret, read at run time by the function that signs
//! (`SLUICE_WEBHOOK_SECRET_ARN`), never put in an environment.

pub use aws_sdk_secretsmanager::Client;

/// A client from the standard AWS chain (environment, profile, role); a local server is named
/// the SDK's way, `AWS_ENDPOINT_URL_SECRETS_MANAGER` (or `AWS_ENDPOINT_URL`).
pub async fn client() -> Client {
    Client::new(&sluice_aws::shared_config(None, None).await)
}

/// The plain-string value of the secret `arn` (its current version). The error names the
/// ARN and the SDK's error, for the log only.
pub async fn secret_string(client: &Client, arn: &str) -> Result<String, String> {
    let out = client
        .get_secret_value()
        .secret_id(arn)
        .send()
        .await
        .map_err(|e| {
            let e = aws_sdk_secretsmanager::error::DisplayErrorContext(e);
            format!("Secrets Manager GetSecretValue of {arn} failed: {e}")
        })?;
    out.secret_string
        .ok_or_else(|| format!("the secret {arn} holds no string (a binary secret?); store the webhook secret as a plain string"))
}
