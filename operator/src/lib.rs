//! The Oxbow operator: reconciles StreamJobs into StatefulSets of workers.
//!
//! The pure parts, with no client and no clock:
//!
//! - [`children`]: the desired StatefulSet, Service, ConfigMap, Secret and PodDisruptionBudget
//!   of a StreamJob.
//! - [`diff`]: how a spec change takes effect (ignorable, savepoint, rescale, restart, suspend
//!   or resume).
//! - [`plan`]: the upgrade, rescale and suspend state machine, and the status it leads to.

pub mod children;
pub mod controller;
pub mod diff;
pub mod metrics;
pub mod plan;
