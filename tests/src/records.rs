//! The ingest's upload records (DynamoDB) in tests: each test's own table on the local
//! DynamoDB-API server (moto serves it on the SQS endpoint), and a client to read it.

use sluice_cloud::records::Records;

use crate::TestEnv;

/// A DynamoDB client for the local server, with throwaway credentials; reads nothing from the
/// environment.
pub fn dynamodb_client(endpoint: &str) -> aws_sdk_dynamodb::Client {
    aws_sdk_dynamodb::Client::from_conf(sluice_aws::local_dynamodb(endpoint).build())
}

impl TestEnv {
    /// This test's upload records table name (`SLUICE_STATUS_TABLE`).
    pub fn status_table(&self) -> String {
        format!("{}-uploads", self.name)
    }

    /// The upload records for an ingest configured with `table` on `endpoint`, the table
    /// created when missing (as `sluice-ingest` does with `SLUICE_DYNAMODB_ENDPOINT`).
    pub(crate) async fn records(&self, table: &str, endpoint: &str) -> anyhow::Result<Records> {
        let records = Records::new(dynamodb_client(endpoint), table.to_owned());
        records.create_if_missing().await?;
        Ok(records)
    }

    /// The recorded item of `batch_id`: attribute name → value as text (`None`: no item).
    pub async fn upload_record(
        &self,
        batch_id: &str,
    ) -> anyhow::Result<Option<std::collections::BTreeMap<String, String>>> {
        use aws_sdk_dynamodb::types::AttributeValue;
        let out = dynamodb_client(&self.servers.sqs_endpoint)
            .get_item()
            .table_name(self.status_table())
            .key("batch_id", AttributeValue::S(batch_id.to_owned()))
            .consistent_read(true)
            .send()
            .await?;
        Ok(out.item.map(|item| {
            item.into_iter()
                .map(|(k, v)| {
                    let text = match v {
                        AttributeValue::S(s) | AttributeValue::N(s) => s,
                        other => format!("{other:?}"),
                    };
                    (k, text)
                })
                .collect()
        }))
    }
}
