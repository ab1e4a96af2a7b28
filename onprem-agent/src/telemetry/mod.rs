//! What the agent says about itself: the metric names every layer records under ([`names`])
//! and the log lines ([`init`]). It sits at the ground floor beside `config`: every layer
//! imports it, it imports nothing above `config`.
//!
//! | module | job |
//! |---|---|
//! | [`names`] | metric names, with their units and what they count |
//! | `logging` | the subscriber: JSON for journald or text, scrubbed of the database password |

mod logging;
pub mod names;

pub use logging::init;
