//! The operator commands beside `run`: `status` and `dlq`.

pub mod dlq;
pub mod status;
