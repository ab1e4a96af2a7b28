//! The adapters to the external systems of the cloud side. Only [`sqs`], [`dynamodb`], [`s3`]
//! and [`secrets`] (Secrets Manager) call the AWS SDK; everything else calls their named methods.
//! Another system (an object store) gets a module of its own beside them.

pub(crate) mod dynamodb;
pub(crate) mod s3;
pub(crate) mod secrets;
pub(crate) mod sqs;
