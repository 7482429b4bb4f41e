//! The evaluation stage: handlers run over what the sources found.
//!
//! - [`prepare`]: every handler of a config fetched, loaded, and asked what
//!   it needs for its resource's config.
//! - [`resource`]: one resource's incremental state — its device table and
//!   the handler's verdicts — so one event costs about one device's evaluation.
//! - [`stage`]: the thread that owns every resource, takes events from the
//!   sources, coalesces them and evaluates what they touched.
//! - [`lifecycle`]: config reloads, handler updates and pending handlers.
//! - [`report`]: what the stage tells the inventory ([`Update`]).
//!
//! It imports the sources, the handler runtime and the loader; nothing of the
//! stages after it.

mod lifecycle;
mod prepare;
mod report;
mod resource;
mod stage;

pub use prepare::{Fetched, Prepared, fetch, prepare};
pub use report::{EvaluationInfo, ResourceSpec, Update};
pub use resource::{ResourceEval, evaluate_once};
pub use stage::{Coalescing, Evaluator, Input, StageParts};
