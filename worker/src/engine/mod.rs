//! The pipeline engine: decode -> filters, maps, keyed event-time windows -> encode, with
//! per-task state that snapshots to bytes. Synchronous and free of I/O, so that it can be
//! tested and benchmarked on its own; the runtime feeds it Kafka records.

pub mod aggregate;
pub mod codec;
pub mod expr;
pub mod snapshot;
pub mod stages;
pub mod task;
pub mod value;
pub mod window;

pub use task::{
    CompiledPipeline, DeadLetter, DeadLetterReason, InputRecord, Output, OutputRecord, Task,
    Upstream,
};
pub use value::Value;
