//! The DynamoDB adapter: the only module of the ingest that calls the DynamoDB SDK. One table
//! keyed by a string partition key: UpdateItem and GetItem on one item, and, for local
//! DynamoDB-API servers, creating the table.
//!
//! What an update sets and on which condition stays with the caller (`crate::records` and
//! `crate::report::store`); here it is sent, and the answer sorted: done, refused by its
//! condition, or failed.

use std::collections::HashMap;

use aws_sdk_dynamodb::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, KeySchemaElement, KeyType, ReturnValue, ScalarAttributeType,
    TimeToLiveSpecification,
};

pub use aws_sdk_dynamodb::types::AttributeValue;
pub use aws_sdk_dynamodb::Client;

/// One item: attribute name → value.
pub type Item = HashMap<String, AttributeValue>;

/// One table and the name of its partition key.
#[derive(Debug, Clone)]
pub struct Table {
    client: Client,
    name: String,
    key: &'static str,
}

/// One UpdateItem: its expression, its condition, and the names and values they use.
#[derive(Debug, Default)]
pub struct Update {
    expression: String,
    condition: Option<String>,
    names: HashMap<String, String>,
    values: HashMap<String, AttributeValue>,
    return_new: bool,
}

impl Update {
    /// The update expression (`SET …`, `ADD …`, `REMOVE …`).
    pub fn expression(mut self, expression: impl Into<String>) -> Self {
        self.expression = expression.into();
        self
    }

    /// The condition the item must meet, else [`UpdateError::Condition`].
    pub fn condition(mut self, condition: impl Into<String>) -> Self {
        self.condition = Some(condition.into());
        self
    }

    /// `alias` (`#x`) stands for the attribute `name`.
    pub fn name(mut self, alias: &str, name: &str) -> Self {
        self.names.insert(alias.to_owned(), name.to_owned());
        self
    }

    /// `placeholder` (`:x`) stands for `value`.
    pub fn value(mut self, placeholder: &str, value: AttributeValue) -> Self {
        self.values.insert(placeholder.to_owned(), value);
        self
    }

    /// Answer the item as updated.
    pub fn returning_new(mut self) -> Self {
        self.return_new = true;
        self
    }
}

/// Why an UpdateItem changed nothing.
#[derive(Debug, thiserror::Error)]
pub enum UpdateError {
    /// Its condition did not hold: an answer, not a failure.
    #[error("ConditionalCheckFailedException: the condition did not hold")]
    Condition,
    /// DynamoDB did not answer (the SDK's full text, for the log only).
    #[error("{0}")]
    Failed(String),
}

/// The SDK's error with its chain of causes (its own `Display` shows only the top).
fn full_text<E: std::error::Error + 'static, R: std::fmt::Debug>(e: &SdkError<E, R>) -> String {
    DisplayErrorContext(e).to_string()
}

impl Table {
    pub fn new(client: Client, name: String, key: &'static str) -> Self {
        Table { client, name, key }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The key of the item whose partition key is `key`.
    fn key(&self, key: &str) -> Item {
        HashMap::from([(self.key.to_owned(), AttributeValue::S(key.to_owned()))])
    }

    /// UpdateItem on the item of `key`; the item as updated when [`Update::returning_new`].
    pub async fn update(&self, key: &str, update: Update) -> Result<Option<Item>, UpdateError> {
        let Update {
            expression,
            condition,
            names,
            values,
            return_new,
        } = update;
        let sent = self
            .client
            .update_item()
            .table_name(&self.name)
            .set_key(Some(self.key(key)))
            .update_expression(expression)
            .set_condition_expression(condition)
            .set_expression_attribute_names((!names.is_empty()).then_some(names))
            .set_expression_attribute_values((!values.is_empty()).then_some(values))
            .set_return_values(return_new.then_some(ReturnValue::AllNew))
            .send()
            .await;
        match sent {
            Ok(out) => Ok(out.attributes),
            Err(e) if e.code() == Some("ConditionalCheckFailedException") => {
                Err(UpdateError::Condition)
            }
            Err(e) => Err(UpdateError::Failed(full_text(&e))),
        }
    }

    /// GetItem of `key`, a consistent read. The error is the SDK's full text.
    pub async fn get(&self, key: &str) -> Result<Option<Item>, String> {
        let out = self
            .client
            .get_item()
            .table_name(&self.name)
            .set_key(Some(self.key(key)))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| full_text(&e))?;
        Ok(out.item)
    }

    /// DescribeTable: whether the table exists.
    pub async fn exists(&self) -> Result<bool, String> {
        match self
            .client
            .describe_table()
            .table_name(&self.name)
            .send()
            .await
        {
            Ok(_) => Ok(true),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_resource_not_found_exception()) =>
            {
                Ok(false)
            }
            Err(e) => Err(full_text(&e)),
        }
    }

    /// CreateTable: on-demand, keyed by the string partition key.
    pub async fn create(&self) -> Result<(), String> {
        let key = KeySchemaElement::builder()
            .attribute_name(self.key)
            .key_type(KeyType::Hash)
            .build()
            .map_err(|e| e.to_string())?;
        let attr = AttributeDefinition::builder()
            .attribute_name(self.key)
            .attribute_type(ScalarAttributeType::S)
            .build()
            .map_err(|e| e.to_string())?;
        self.client
            .create_table()
            .table_name(&self.name)
            .billing_mode(BillingMode::PayPerRequest)
            .key_schema(key)
            .attribute_definitions(attr)
            .send()
            .await
            .map_err(|e| full_text(&e))?;
        Ok(())
    }

    /// UpdateTimeToLive: items expire at the Unix second their `attribute` holds.
    pub async fn enable_ttl(&self, attribute: &str) -> Result<(), String> {
        let ttl = TimeToLiveSpecification::builder()
            .enabled(true)
            .attribute_name(attribute)
            .build()
            .map_err(|e| e.to_string())?;
        self.client
            .update_time_to_live()
            .table_name(&self.name)
            .time_to_live_specification(ttl)
            .send()
            .await
            .map_err(|e| full_text(&e))?;
        Ok(())
    }
}
