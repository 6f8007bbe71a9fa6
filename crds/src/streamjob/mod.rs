//! The `StreamJob` custom resource (`oxbow.dev/v1alpha1`).

#[cfg(test)]
mod cel_tests;
mod conditions;
mod spec;
mod status;

pub use conditions::{ConditionType, DesiredCondition, find_condition, set_condition};
pub use spec::*;
pub use status::*;
