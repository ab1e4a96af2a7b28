//! The adapters to the two external systems. Only [`sqs`] calls the AWS SDK and only [`store`]
//! runs SQL; everything else calls their named methods.

pub(crate) mod sqs;
pub(crate) mod store;
