//! What a ReceiveMessage call hands back, out of the SDK's types: [`Received`] (the one
//! conversion from the SDK's `Message`) and its message [`Attributes`].

use std::collections::HashMap;

use aws_sdk_sqs::types::{Message, MessageAttributeValue, MessageSystemAttributeName};
use sluice_protocol::envelope::ENCODING_ATTRIBUTE;

use super::{Handle, RawMessage};

/// A message's attributes as SQS holds them (kept whole, so a message sent again carries the
/// same ones).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Attributes(HashMap<String, MessageAttributeValue>);

impl Attributes {
    /// String attributes from name-value pairs.
    pub fn strings(pairs: &[(&str, &str)]) -> Self {
        Self(
            pairs
                .iter()
                .filter_map(|(k, v)| {
                    let value = MessageAttributeValue::builder()
                        .data_type("String")
                        .string_value(*v)
                        .build()
                        .ok()?;
                    Some(((*k).to_owned(), value))
                })
                .collect(),
        )
    }

    /// The string value of attribute `name`.
    pub fn string(&self, name: &str) -> Option<&str> {
        self.0.get(name).and_then(|v| v.string_value())
    }

    /// These attributes without the ones named.
    pub fn without(&self, names: &[&str]) -> Self {
        Self(
            self.0
                .iter()
                .filter(|(k, _)| !names.contains(&k.as_str()))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        )
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// For the SDK's request builders.
    pub(super) fn into_sdk(self) -> Option<HashMap<String, MessageAttributeValue>> {
        (!self.0.is_empty()).then_some(self.0)
    }
}

/// A message as received, with everything the agent asks SQS for.
#[derive(Debug, Clone)]
pub struct Received {
    pub handle: Handle,
    pub body: String,
    pub attributes: Attributes,
    /// SQS's ApproximateReceiveCount, this receive included.
    pub receive_count: Option<u32>,
    /// Milliseconds since the epoch when it was sent.
    pub sent_timestamp_ms: Option<u64>,
}

impl Received {
    /// `None` (with a warning) for a message without id or receipt handle.
    pub(super) fn from_sdk(m: Message) -> Option<Self> {
        let system = m.attributes.unwrap_or_default();
        let (Some(message_id), Some(receipt_handle)) = (m.message_id, m.receipt_handle) else {
            tracing::warn!("SQS returned a message without id or receipt handle; skipped.");
            return None;
        };
        Some(Self {
            handle: Handle {
                message_id,
                receipt_handle,
            },
            body: m.body.unwrap_or_default(),
            attributes: Attributes(m.message_attributes.unwrap_or_default()),
            receive_count: system
                .get(&MessageSystemAttributeName::ApproximateReceiveCount)
                .and_then(|v| v.parse().ok()),
            sent_timestamp_ms: system
                .get(&MessageSystemAttributeName::SentTimestamp)
                .and_then(|v| v.parse().ok()),
        })
    }
}

impl From<Received> for RawMessage {
    fn from(m: Received) -> Self {
        RawMessage {
            encoding: m.attributes.string(ENCODING_ATTRIBUTE).map(str::to_owned),
            receive_count: m.receive_count.unwrap_or(1),
            handle: m.handle,
            body: m.body,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(system: &[(MessageSystemAttributeName, &str)]) -> Message {
        let mut b = Message::builder()
            .message_id("m-1")
            .receipt_handle("r-1")
            .body("body")
            .message_attributes(
                ENCODING_ATTRIBUTE,
                MessageAttributeValue::builder()
                    .data_type("String")
                    .string_value("gzip+base64")
                    .build()
                    .expect("valid attribute"),
            );
        for (k, v) in system {
            b = b.attributes(k.clone(), *v);
        }
        b.build()
    }

    #[test]
    fn a_received_message_keeps_its_counts_and_attributes() {
        let m = Received::from_sdk(message(&[
            (MessageSystemAttributeName::ApproximateReceiveCount, "3"),
            (MessageSystemAttributeName::SentTimestamp, "1700000000000"),
        ]))
        .expect("has id and handle");
        assert_eq!(m.receive_count, Some(3));
        assert_eq!(m.sent_timestamp_ms, Some(1_700_000_000_000));
        assert_eq!(m.attributes.string(ENCODING_ATTRIBUTE), Some("gzip+base64"));
        let raw = RawMessage::from(m);
        assert_eq!(raw.encoding.as_deref(), Some("gzip+base64"));
        assert_eq!(raw.receive_count, 3);
        assert_eq!(raw.handle.message_id, "m-1");
    }

    #[test]
    fn the_pipeline_counts_a_message_without_receive_count_as_a_first_delivery() {
        let m = Received::from_sdk(message(&[])).expect("has id and handle");
        assert_eq!(m.receive_count, None);
        assert_eq!(RawMessage::from(m).receive_count, 1);
        assert!(Received::from_sdk(Message::builder().body("x").build()).is_none());
    }

    #[test]
    fn attributes_can_be_dropped_by_name() {
        let a = Attributes::strings(&[("keep", "1"), ("drop", "2")]);
        let kept = a.without(&["drop"]);
        assert_eq!(kept.string("keep"), Some("1"));
        assert_eq!(kept.string("drop"), None);
        assert!(a.without(&["keep", "drop"]).is_empty());
    }
}
