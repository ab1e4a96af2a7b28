//! The adapters to the external systems. Only [`sqs`] and [`photos`] call the AWS SDK and only [`store`]
//! runs SQL; everything else calls their named methods.

pub(crate) mod photos;
pub(crate) mod sqs;
pub(crate) mod store;
