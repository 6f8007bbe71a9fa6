//! A task: the pipeline applied to one input partition, with that partition's state.
//!
//! Synchronous and free of I/O: the runtime hands it records and processing time, and takes
//! results and dead letters out. Its state — open windows, stream time — snapshots to bytes
//! and restores into a task that then behaves exactly like the original.
//!
//! ## Event time
//!
//! A task's *stream time* decides which windows fire (those ending at or before stream time
//! minus `grace`) and which records are late. It only moves forward.
//!
//! - A task that reads a source partition advances it to the largest event time it has seen.
//! - A task of the shuffle stage reads records that many upstream source partitions wrote, on
//!   workers that may be down or behind. Its stream time is the **minimum** of its upstreams'
//!   progress ([`Upstream`]): each record carries its upstream's stream time, and every
//!   upstream also broadcasts its progress to every shuffle partition. Until every expected
//!   upstream has reported, the stream time does not move. Upstreams that report themselves
//!   idle are left out of the minimum (when all are idle, the largest of their stream times
//!   counts).
//! - **Idleness** is measured by the process that runs the task, never carried in a snapshot:
//!   the runtime calls [`Task::caught_up`] once the consumer has read to the partition's end,
//!   and any record stops the clock. A partition is idle once it has been caught up, with no
//!   record, for `idleTimeout`; only then does [`Task::on_idle`] advance a source task's stream
//!   time with processing time. A restored task, or one with a backlog, is never idle — so a
//!   downtime, however long, never moves event time.

use std::{collections::BTreeMap, sync::Arc};

use oxbow_crds::{
    pipeline::{AggregateFunction, Step, WINDOW_END_FIELD, WINDOW_START_FIELD},
    state_shape::{ShapeChange, StateShape, classify},
    streamjob::{Format, TimeFormat},
    validation::ValidatedSpec,
};
use serde::{Deserialize, Serialize};

use super::{
    codec::{self, DecodeError},
    expr::{EvalError, Expr},
    snapshot::{self, SnapshotError},
    value::Value,
    window::{Fired, Rejected, Shape, Windows},
};

/// A record read from Kafka.
#[derive(Clone, Copy, Debug, Default)]
pub struct InputRecord<'a> {
    /// Kafka key.
    pub key: Option<&'a [u8]>,
    /// Kafka value.
    pub value: Option<&'a [u8]>,
    /// Kafka timestamp, epoch ms.
    pub timestamp_ms: Option<i64>,
    /// Partition it was read from.
    pub partition: i32,
    /// Offset in its partition.
    pub offset: i64,
    /// For a record of the shuffle stage: the progress of the source partition that wrote it.
    pub upstream: Option<Upstream<'a>>,
}

/// The event-time progress of an upstream source partition, as a shuffle-stage task hears it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Upstream<'a> {
    /// The source partition, `<topic>/<partition>`.
    pub id: &'a str,
    /// Its stream time when it wrote the record, if it had one.
    pub stream_time: Option<i64>,
    /// It has been idle (caught up, no record) for `idleTimeout`.
    pub idle: bool,
}

/// What a shuffle-stage task keeps of an upstream's progress.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpstreamProgress {
    /// The largest stream time the upstream reported.
    pub stream_time: Option<i64>,
    /// Its last report said it is idle.
    pub idle: bool,
}

/// A result to produce to the sink.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutputRecord {
    /// Kafka key.
    pub key: Option<Vec<u8>>,
    /// Kafka value.
    pub value: Vec<u8>,
    /// Kafka timestamp: the event time (window end for window rows).
    pub timestamp_ms: i64,
}

/// Why a record was dead-lettered.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum DeadLetterReason {
    /// The value could not be decoded.
    Decode,
    /// No usable event time.
    EventTime,
    /// An expression or aggregation failed.
    Eval,
    /// It arrived after its windows fired.
    Late,
}

impl DeadLetterReason {
    /// Every reason.
    pub const ALL: [DeadLetterReason; 4] = [Self::Decode, Self::EventTime, Self::Eval, Self::Late];

    /// The reason as a header value and metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            DeadLetterReason::Decode => "decode",
            DeadLetterReason::EventTime => "event-time",
            DeadLetterReason::Eval => "eval",
            DeadLetterReason::Late => "late",
        }
    }
}

/// A record that could not be processed, with the error for its headers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeadLetter {
    /// Original key.
    pub key: Option<Vec<u8>>,
    /// Original value.
    pub value: Option<Vec<u8>>,
    /// Offset of the original record.
    pub offset: i64,
    /// Why.
    pub reason: DeadLetterReason,
    /// The spec path of the failing step, as in `spec.pipeline[2].filter`.
    pub step: Arc<str>,
    /// The error.
    pub message: String,
}

/// What processing produced.
#[derive(Debug, Default)]
pub struct Output {
    /// Results for the sink.
    pub records: Vec<OutputRecord>,
    /// Records for the dead-letter topic.
    pub dead_letters: Vec<DeadLetter>,
}

impl Output {
    /// Empties both lists, keeping their capacity.
    pub fn clear(&mut self) {
        self.records.clear();
        self.dead_letters.clear();
    }
}

/// Counters of one task.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskCounters {
    /// Records processed.
    pub records_in: u64,
    /// Results emitted.
    pub records_out: u64,
    /// Dead letters by reason, in [`DeadLetterReason::ALL`] order.
    pub dead_lettered: [u64; 4],
}

enum Op {
    Filter { expr: Expr, path: Arc<str> },
    Map { exprs: Vec<Expr>, path: Arc<str> },
}

struct WindowOp {
    shape: Shape,
    key: Expr,
    key_path: Arc<str>,
    functions: Vec<AggregateFunction>,
    args: Vec<Option<Expr>>,
    path: Arc<str>,
}

/// A pipeline compiled for execution; shared by all tasks of a worker.
pub struct CompiledPipeline {
    /// The shape of the window state this stage holds (see [`oxbow_crds::state_shape`]).
    state_shape: Option<StateShape>,
    format: Format,
    source_slots: Vec<Arc<str>>,
    event_time_slot: Option<usize>,
    time_format: TimeFormat,
    grace: i64,
    idle_timeout: i64,
    before: Vec<Op>,
    window: Option<WindowOp>,
    after: Vec<Op>,
    output_slots: Vec<Arc<str>>,
    sink_format: Format,
    sink_key: Option<Expr>,
    /// Results are the source values unchanged (filter-only pipelines).
    passthrough: bool,
}

impl std::fmt::Debug for CompiledPipeline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CompiledPipeline")
            .field("source_slots", &self.source_slots)
            .field("output_slots", &self.output_slots)
            .field("windowed", &self.window.is_some())
            .finish()
    }
}

/// Why a pipeline could not be compiled (a validated spec always compiles; this guards the
/// boundary).
#[derive(Debug, thiserror::Error)]
#[error("failed to compile {path}: {message}")]
pub struct CompileError {
    /// Spec path.
    pub path: String,
    /// What went wrong.
    pub message: String,
}

fn ms(d: std::time::Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

impl CompiledPipeline {
    /// Compiles a validated spec's pipeline.
    pub fn compile(
        spec: &ValidatedSpec,
        format: Format,
        sink_format: Format,
    ) -> Result<Self, CompileError> {
        let steps = &spec.pipeline.steps;
        let window_at = steps.iter().position(|s| matches!(s, Step::Window { .. }));
        let first_reshape = steps
            .iter()
            .position(|s| matches!(s, Step::Map(_) | Step::Window { .. }));

        // Source slots: every field read before the row is reshaped, plus the event-time field.
        let mut source_slots: Vec<Arc<str>> = Vec::new();
        let add_slot = |slots: &mut Vec<Arc<str>>, name: &str| {
            if !slots.iter().any(|s| **s == *name) {
                slots.push(Arc::from(name));
            }
        };
        match format {
            Format::Json => {
                for step in &steps[..first_reshape.map_or(steps.len(), |i| i + 1)] {
                    for e in step_expressions(step) {
                        for v in e.variables() {
                            add_slot(&mut source_slots, v);
                        }
                    }
                }
                if window_at.is_none()
                    && first_reshape.is_none()
                    && let Some(k) = &spec.sink_key
                {
                    for v in k.variables() {
                        add_slot(&mut source_slots, v);
                    }
                }
                if let Some(f) = &spec.event_time.field {
                    add_slot(&mut source_slots, f);
                }
            }
            Format::String | Format::Bytes => source_slots.push(Arc::from("value")),
        }
        let event_time_slot = spec
            .event_time
            .field
            .as_ref()
            .and_then(|f| source_slots.iter().position(|s| **s == **f));

        let mut slots = source_slots.clone();
        let mut before = Vec::new();
        let mut after = Vec::new();
        let mut window = None;
        let mut key: Option<(Expr, Arc<str>, String)> = None;
        for (i, step) in steps.iter().enumerate() {
            let path =
                |suffix: &str| -> Arc<str> { Arc::from(format!("spec.pipeline[{i}].{suffix}")) };
            let compile = |source: &str, slots: &[Arc<str>], path: &Arc<str>| {
                Expr::compile(source, slots).map_err(|message| CompileError {
                    path: path.to_string(),
                    message,
                })
            };
            let ops = if window.is_some() {
                &mut after
            } else {
                &mut before
            };
            match step {
                Step::Filter(e) => {
                    let path = path("filter");
                    ops.push(Op::Filter {
                        expr: compile(e.source(), &slots, &path)?,
                        path,
                    });
                }
                Step::Map(fields) => {
                    let path = path("map");
                    let exprs = fields
                        .iter()
                        .map(|(_, e)| compile(e.source(), &slots, &path))
                        .collect::<Result<Vec<_>, _>>()?;
                    ops.push(Op::Map { exprs, path });
                    slots = fields
                        .iter()
                        .map(|(name, _)| Arc::from(name.as_str()))
                        .collect();
                }
                Step::KeyBy { expression, field } => {
                    let path = path("keyBy");
                    key = Some((
                        compile(expression.source(), &slots, &path)?,
                        path,
                        field.clone(),
                    ));
                }
                Step::Window { kind, aggregates } => {
                    let path = path("aggregate");
                    let Some((key_expr, key_path, key_field)) = key.take() else {
                        return Err(CompileError {
                            path: path.to_string(),
                            message: "a window needs a keyBy before it".into(),
                        });
                    };
                    let args = aggregates
                        .iter()
                        .map(|a| {
                            a.argument
                                .as_ref()
                                .map(|e| compile(e.source(), &slots, &path))
                                .transpose()
                        })
                        .collect::<Result<Vec<_>, _>>()?;
                    window = Some(WindowOp {
                        shape: Shape::from_kind(*kind),
                        key: key_expr,
                        key_path,
                        functions: aggregates.iter().map(|a| a.function).collect(),
                        args,
                        path,
                    });
                    slots = std::iter::once(key_field.as_str())
                        .chain(aggregates.iter().map(|a| a.name.as_str()))
                        .chain([WINDOW_START_FIELD, WINDOW_END_FIELD])
                        .map(Arc::from)
                        .collect();
                }
            }
        }
        let sink_key = spec
            .sink_key
            .as_ref()
            .map(|k| {
                Expr::compile(k.source(), &slots).map_err(|message| CompileError {
                    path: "spec.sink.key".into(),
                    message,
                })
            })
            .transpose()?;
        Ok(CompiledPipeline {
            state_shape: None,
            format,
            passthrough: first_reshape.is_none() && sink_format == format,
            source_slots,
            event_time_slot,
            time_format: spec.event_time.format,
            grace: ms(spec.event_time.grace),
            idle_timeout: ms(spec.event_time.idle_timeout),
            before,
            window,
            after,
            output_slots: slots,
            sink_format,
            sink_key,
        })
    }

    /// This stage holding the window state of `shape` (the whole pipeline's, which knows the
    /// window's step and stage).
    pub fn with_state_shape(mut self, shape: Option<StateShape>) -> Self {
        self.state_shape = shape;
        self
    }

    /// The shape of the window state this stage holds, if it holds any.
    pub fn state_shape(&self) -> Option<&StateShape> {
        self.state_shape.as_ref()
    }

    /// The fields of result rows.
    pub fn output_fields(&self) -> &[Arc<str>] {
        &self.output_slots
    }
}

fn step_expressions(step: &Step) -> Vec<&oxbow_crds::pipeline::Expression> {
    match step {
        Step::Filter(e) => vec![e],
        Step::Map(fields) => fields.iter().map(|(_, e)| e).collect(),
        Step::KeyBy { expression, .. } => vec![expression],
        Step::Window { aggregates, .. } => aggregates
            .iter()
            .filter_map(|a| a.argument.as_ref())
            .collect(),
    }
}

/// The state of a task that snapshots capture (format version 3).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct TaskState {
    /// The shape of the window state below, to check against the pipeline it restores into.
    pub shape: Option<StateShape>,
    /// The task's event-time clock (see the module docs): largest event time seen (or
    /// advanced to while idle), or for the shuffle stage the minimum of the upstreams'.
    pub stream_time: Option<i64>,
    /// Open windows.
    pub windows: Windows,
    /// Counters.
    pub counters: TaskCounters,
    /// Shuffle stage: each upstream source partition's progress, by `<topic>/<partition>`.
    pub upstreams: BTreeMap<String, UpstreamProgress>,
}

/// The state as snapshot format version 2 held it: no shape.
#[derive(Deserialize)]
struct TaskStateV2 {
    stream_time: Option<i64>,
    windows: Windows,
    counters: TaskCounters,
    upstreams: BTreeMap<String, UpstreamProgress>,
}

impl From<TaskStateV2> for TaskState {
    fn from(v2: TaskStateV2) -> Self {
        TaskState {
            shape: None,
            stream_time: v2.stream_time,
            windows: v2.windows,
            counters: v2.counters,
            upstreams: v2.upstreams,
        }
    }
}

/// The state as snapshot format version 1 held it.
#[derive(Deserialize)]
struct TaskStateV1 {
    stream_time: Option<i64>,
    /// The processing time of the last record: dropped, idleness is this process's to measure.
    #[allow(dead_code)]
    last_activity: Option<(i64, i64)>,
    windows: Windows,
    counters: TaskCounters,
}

impl From<TaskStateV1> for TaskState {
    fn from(v1: TaskStateV1) -> Self {
        TaskState {
            shape: None,
            stream_time: v1.stream_time,
            windows: v1.windows,
            counters: v1.counters,
            upstreams: BTreeMap::new(),
        }
    }
}

/// Since when a caught-up partition has had no record, in this process's processing time, and
/// its stream time then.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct IdleClock {
    since_ms: i64,
    stream_time: Option<i64>,
}

/// What identifies a task's state for snapshot reuse: records taken, stream time, open
/// windows, upstream progress.
pub type Revision = (u64, Option<i64>, usize, i64);

/// One partition's pipeline with its state.
pub struct Task {
    pipeline: Arc<CompiledPipeline>,
    state: TaskState,
    /// Running while the partition is caught up and no record arrived; never restored.
    idle: Option<IdleClock>,
    /// Shuffle stage: the upstream source partitions whose progress bounds the stream time.
    expected_upstreams: Option<Arc<[String]>>,
    row: Vec<Option<Value>>,
    scratch: Vec<Option<Value>>,
    args: Vec<Option<Value>>,
    fired: Vec<Fired>,
}

impl std::fmt::Debug for Task {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Task").field("state", &self.state).finish()
    }
}

impl Task {
    /// A task with empty state.
    pub fn new(pipeline: Arc<CompiledPipeline>) -> Self {
        let state = TaskState {
            shape: pipeline.state_shape.clone(),
            ..TaskState::default()
        };
        Self::with_state(pipeline, state)
    }

    fn with_state(pipeline: Arc<CompiledPipeline>, state: TaskState) -> Self {
        Task {
            pipeline,
            state,
            idle: None,
            expected_upstreams: None,
            row: Vec::new(),
            scratch: Vec::new(),
            args: Vec::new(),
            fired: Vec::new(),
        }
    }

    /// Restores a task from [`Task::snapshot`] bytes (this format or an older one). Window
    /// state of another shape is restored when [`classify`] allows — aggregations matched by
    /// name, new ones empty, removed ones dropped — and refused, naming both shapes, when it
    /// is incompatible. The restored task has no idle clock: it is not idle until the runtime
    /// sees it caught up again.
    pub fn restore(pipeline: Arc<CompiledPipeline>, bytes: &[u8]) -> Result<Self, SnapshotError> {
        let (version, body) = snapshot::open(bytes)?;
        let mut state: TaskState = match version {
            1 => snapshot::decode_body::<TaskStateV1>(&body)?.into(),
            2 => snapshot::decode_body::<TaskStateV2>(&body)?.into(),
            _ => snapshot::decode_body(&body)?,
        };
        if let (Some(old), Some(new)) = (&state.shape, &pipeline.state_shape) {
            if let ShapeChange::Incompatible { reason } = classify(old, new) {
                return Err(SnapshotError::IncompatibleShape {
                    reason,
                    snapshot: old.to_string(),
                    pipeline: new.to_string(),
                });
            }
            // Aggregations by name: new ones start empty, removed ones are dropped.
            let from: Vec<Option<usize>> = new
                .aggregates
                .iter()
                .map(|a| old.aggregates.iter().position(|o| o.name == a.name))
                .collect();
            let moved = from.len() != old.aggregates.len()
                || from.iter().enumerate().any(|(i, f)| *f != Some(i));
            if let (true, Some(w)) = (moved, &pipeline.window) {
                state.windows.remap(&from, &w.functions);
            }
        }
        state.shape = pipeline.state_shape.clone();
        state.windows.rebuild();
        Ok(Self::with_state(pipeline, state))
    }

    /// Makes this a shuffle-stage task whose stream time is bounded by the progress of
    /// `upstreams` (`<topic>/<partition>` of every source partition of the job).
    pub fn with_upstreams(mut self, upstreams: Arc<[String]>) -> Self {
        self.expected_upstreams = Some(upstreams);
        self
    }

    /// The task's state as compact bytes.
    pub fn snapshot(&self) -> Result<Vec<u8>, SnapshotError> {
        snapshot::encode(&self.state)
    }

    /// The state (for status and tests).
    pub fn state(&self) -> &TaskState {
        &self.state
    }

    /// Whether the task holds state a restore needs: open windows, or the stream time that
    /// decides which records are late. Stateless pipelines never need a snapshot.
    pub fn needs_snapshot(&self) -> bool {
        self.pipeline.window.is_some()
            && (self.state.stream_time.is_some()
                || !self.state.windows.is_empty()
                || !self.state.upstreams.is_empty())
    }

    /// Changes whenever the snapshot would: records taken, stream time, windows open. Lets the
    /// runtime reuse the previous snapshot of a partition that did not move.
    pub fn revision(&self) -> Revision {
        (
            self.state.counters.records_in,
            self.state.stream_time,
            self.state.windows.len(),
            self.state
                .upstreams
                .values()
                .filter_map(|u| u.stream_time)
                .sum(),
        )
    }

    /// Approximate bytes of state held in memory.
    pub fn state_bytes(&self) -> usize {
        self.state.windows.size_bytes()
    }

    /// Processes one record.
    pub fn process(&mut self, record: &InputRecord<'_>, out: &mut Output) {
        self.state.counters.records_in += 1;
        self.idle = None;
        if let Err((reason, step, message)) = self.process_inner(record, out) {
            let i = DeadLetterReason::ALL
                .iter()
                .position(|r| *r == reason)
                .unwrap_or(0);
            self.state.counters.dead_lettered[i] += 1;
            out.dead_letters.push(DeadLetter {
                key: record.key.map(<[u8]>::to_vec),
                value: record.value.map(<[u8]>::to_vec),
                offset: record.offset,
                reason,
                step,
                message,
            });
        }
    }

    fn process_inner(
        &mut self,
        record: &InputRecord<'_>,
        out: &mut Output,
    ) -> Result<(), (DeadLetterReason, Arc<str>, String)> {
        let p = Arc::clone(&self.pipeline);
        let value = record.value.unwrap_or_default();
        let decode_err = |e: DecodeError| {
            (
                DeadLetterReason::Decode,
                Arc::from("spec.source.format"),
                e.to_string(),
            )
        };
        match p.format {
            Format::Json => codec::decode_json_into(value, &p.source_slots, &mut self.row)
                .map_err(decode_err)?,
            Format::String => {
                let s = std::str::from_utf8(value).map_err(|_| decode_err(DecodeError::Utf8))?;
                self.row.clear();
                self.row.push(Some(Value::string(s)));
            }
            Format::Bytes => {
                self.row.clear();
                self.row.push(Some(Value::Bytes(Arc::from(value))));
            }
        }
        let ts = self.event_time(record)?;
        let watermark_before = self
            .state
            .stream_time
            .map_or(i64::MIN, |s| s.saturating_sub(p.grace));
        if let Some(upstream) = &record.upstream {
            self.hear(upstream);
        }
        self.state.stream_time = match self.expected_upstreams {
            Some(_) => self.state.stream_time.max(self.upstream_time()),
            None => Some(self.state.stream_time.map_or(ts, |s| s.max(ts))),
        };

        let emitted = run_ops(&p.before, &mut self.row, &mut self.scratch)?;
        if emitted {
            match &p.window {
                None => {
                    let row = std::mem::take(&mut self.row);
                    self.emit(&row, ts, record.value, out);
                    self.row = row;
                }
                Some(w) => {
                    let key = w
                        .key
                        .eval(&self.row)
                        .map_err(|e| eval_err(&w.key_path, e))?;
                    self.args.clear();
                    for arg in &w.args {
                        let v = arg
                            .as_ref()
                            .map(|e| e.eval(&self.row))
                            .transpose()
                            .map_err(|e| eval_err(&w.path, e))?;
                        self.args.push(v);
                    }
                    match self.state.windows.add(
                        w.shape,
                        &w.functions,
                        &key,
                        ts,
                        &self.args,
                        watermark_before,
                    ) {
                        Ok(()) => {}
                        Err(Rejected::Late) => {
                            self.fire(out);
                            return Err((
                                DeadLetterReason::Late,
                                Arc::clone(&w.path),
                                format!(
                                    "event time {ts} is behind the watermark {watermark_before} (stream time minus grace); its windows have fired"
                                ),
                            ));
                        }
                        Err(Rejected::Eval(e)) => {
                            self.fire(out);
                            return Err(eval_err(&w.path, e));
                        }
                    }
                }
            }
        }
        self.fire(out);
        Ok(())
    }

    fn event_time(
        &self,
        record: &InputRecord<'_>,
    ) -> Result<i64, (DeadLetterReason, Arc<str>, String)> {
        let p = &self.pipeline;
        let err = |m: String| {
            (
                DeadLetterReason::EventTime,
                Arc::from("spec.source.eventTime.field"),
                m,
            )
        };
        let Some(slot) = p.event_time_slot else {
            return record.timestamp_ms.ok_or_else(|| {
                (
                    DeadLetterReason::EventTime,
                    Arc::from("spec.source.eventTime"),
                    "the record has no Kafka timestamp".to_owned(),
                )
            });
        };
        let value = self
            .row
            .get(slot)
            .and_then(Option::as_ref)
            .ok_or_else(|| err("the event-time field is missing".into()))?;
        let number = |scale: f64| -> Result<i64, _> {
            let v = value.as_f64().ok_or_else(|| {
                err(format!(
                    "the event-time field is a {}, not a number",
                    value.type_name()
                ))
            })?;
            let ms = (v * scale).floor();
            if ms.is_finite() && ms.abs() < 9.0e15 {
                Ok(ms as i64)
            } else {
                Err(err(format!("event time {v} is out of range")))
            }
        };
        match p.time_format {
            TimeFormat::EpochMillis => match value {
                Value::Int(i) => Ok(*i),
                _ => number(1.0),
            },
            TimeFormat::EpochSeconds => number(1000.0),
            TimeFormat::Rfc3339 => match value {
                Value::String(s) => chrono::DateTime::parse_from_rfc3339(s)
                    .map(|t| t.timestamp_millis())
                    .map_err(|e| err(format!("{s:?} is not an RFC 3339 timestamp: {e}"))),
                other => Err(err(format!(
                    "the event-time field is a {}, not an RFC 3339 string",
                    other.type_name()
                ))),
            },
        }
    }

    /// The runtime saw the partition caught up (its consumer at the partition's end) at
    /// processing time `now_ms`: starts the idle clock unless it runs already.
    pub fn caught_up(&mut self, now_ms: i64) {
        if self.idle.is_none() {
            self.idle = Some(IdleClock {
                since_ms: now_ms,
                stream_time: self.state.stream_time,
            });
        }
    }

    /// Whether the partition has been caught up, with no record, for `idleTimeout`.
    pub fn is_idle(&self, now_ms: i64) -> bool {
        self.idle
            .is_some_and(|c| now_ms.saturating_sub(c.since_ms) >= self.pipeline.idle_timeout)
    }

    /// Whether the idle clock runs: the partition was seen caught up and no record came since.
    pub fn is_caught_up(&self) -> bool {
        self.idle.is_some()
    }

    /// Once the partition is idle, advances a source task's stream time with processing time
    /// since it was caught up, so that its windows still fire. Does nothing for a partition
    /// that is not idle, nor for the shuffle stage (its upstreams' progress moves it).
    pub fn on_idle(&mut self, now_ms: i64, out: &mut Output) {
        if self.expected_upstreams.is_some() || !self.is_idle(now_ms) {
            return;
        }
        let Some(IdleClock {
            since_ms,
            stream_time: Some(then),
        }) = self.idle
        else {
            return;
        };
        let advanced = then.saturating_add(now_ms.saturating_sub(since_ms));
        if self.state.stream_time.is_none_or(|s| s < advanced) {
            self.state.stream_time = Some(advanced);
            self.fire(out);
        }
    }

    /// Shuffle stage: an upstream's progress arrived without a record (its periodic
    /// broadcast). Moves the stream time and fires what it closes.
    pub fn observe(&mut self, upstream: &Upstream<'_>, out: &mut Output) {
        self.hear(upstream);
        if self.expected_upstreams.is_some() {
            let moved = self.state.stream_time.max(self.upstream_time());
            if moved != self.state.stream_time {
                self.state.stream_time = moved;
                self.fire(out);
            }
        }
    }

    fn hear(&mut self, upstream: &Upstream<'_>) {
        let progress = self
            .state
            .upstreams
            .entry(upstream.id.to_owned())
            .or_default();
        progress.stream_time = progress.stream_time.max(upstream.stream_time);
        progress.idle = upstream.idle;
    }

    /// The minimum progress over the expected upstreams that are not idle (the largest of the
    /// idle ones when all are); `None` while one has not reported or has no stream time.
    fn upstream_time(&self) -> Option<i64> {
        let expected = self.expected_upstreams.as_deref()?;
        let (mut active, mut idle) = (None::<i64>, None::<i64>);
        for id in expected {
            let progress = self.state.upstreams.get(id)?;
            if progress.idle {
                idle = idle.max(progress.stream_time);
            } else {
                let t = progress.stream_time?;
                active = Some(active.map_or(t, |a| a.min(t)));
            }
        }
        active.or(idle)
    }

    /// Fires every open window (end of a bounded input).
    pub fn finish(&mut self, out: &mut Output) {
        if let Some(w) = &self.pipeline.window {
            self.state.windows.fire(w.shape, i64::MAX, &mut self.fired);
            self.emit_fired(out);
        }
    }

    fn fire(&mut self, out: &mut Output) {
        let p = Arc::clone(&self.pipeline);
        let (Some(w), Some(stream_time)) = (&p.window, self.state.stream_time) else {
            return;
        };
        self.state.windows.fire(
            w.shape,
            stream_time.saturating_sub(p.grace),
            &mut self.fired,
        );
        self.emit_fired(out);
    }

    fn emit_fired(&mut self, out: &mut Output) {
        let p = Arc::clone(&self.pipeline);
        let mut fired = std::mem::take(&mut self.fired);
        for f in fired.drain(..) {
            let end = f.end;
            let mut row: Vec<Option<Value>> = Vec::with_capacity(f.results.len() + 3);
            row.push(Some(f.key));
            row.extend(f.results.into_iter().map(Some));
            row.push(Some(Value::Int(f.start)));
            row.push(Some(Value::Int(end)));
            match run_ops(&p.after, &mut row, &mut self.scratch) {
                Ok(true) => self.emit(&row, end, None, out),
                Ok(false) => {}
                Err((reason, step, message)) => {
                    let i = DeadLetterReason::ALL
                        .iter()
                        .position(|r| *r == reason)
                        .unwrap_or(0);
                    self.state.counters.dead_lettered[i] += 1;
                    let mut value = Vec::new();
                    codec::write_json_object(
                        &mut value,
                        p.output_slots
                            .iter()
                            .map(|s| &**s)
                            .zip(row.iter().map(|v| v.as_ref().unwrap_or(&Value::Null))),
                    );
                    out.dead_letters.push(DeadLetter {
                        key: None,
                        value: Some(value),
                        offset: -1,
                        reason,
                        step,
                        message,
                    });
                }
            }
        }
        self.fired = fired;
    }

    fn emit(&mut self, row: &[Option<Value>], ts: i64, original: Option<&[u8]>, out: &mut Output) {
        let p = &self.pipeline;
        let key = match &p.sink_key {
            None => None,
            Some(k) => match k.eval(row) {
                Ok(Value::Bytes(b)) => Some(b.to_vec()),
                Ok(v) => Some(v.to_string().into_bytes()),
                Err(e) => {
                    self.state.counters.dead_lettered[2] += 1;
                    out.dead_letters.push(DeadLetter {
                        key: None,
                        value: original.map(<[u8]>::to_vec),
                        offset: -1,
                        reason: DeadLetterReason::Eval,
                        step: Arc::from("spec.sink.key"),
                        message: e.to_string(),
                    });
                    return;
                }
            },
        };
        let value = match (p.passthrough, original) {
            (true, Some(bytes)) => bytes.to_vec(),
            _ => encode_row(p.sink_format, &p.output_slots, row),
        };
        self.state.counters.records_out += 1;
        out.records.push(OutputRecord {
            key,
            value,
            timestamp_ms: ts,
        });
    }
}

fn eval_err(path: &Arc<str>, e: EvalError) -> (DeadLetterReason, Arc<str>, String) {
    (DeadLetterReason::Eval, Arc::clone(path), e.to_string())
}

/// Runs filters and maps; `Ok(false)` when a filter dropped the row.
fn run_ops(
    ops: &[Op],
    row: &mut Vec<Option<Value>>,
    scratch: &mut Vec<Option<Value>>,
) -> Result<bool, (DeadLetterReason, Arc<str>, String)> {
    for op in ops {
        match op {
            Op::Filter { expr, path } => {
                if !expr.eval_bool(row).map_err(|e| eval_err(path, e))? {
                    return Ok(false);
                }
            }
            Op::Map { exprs, path } => {
                scratch.clear();
                for e in exprs {
                    scratch.push(Some(e.eval(row).map_err(|err| eval_err(path, err))?));
                }
                std::mem::swap(row, scratch);
            }
        }
    }
    Ok(true)
}

fn encode_row(format: Format, names: &[Arc<str>], row: &[Option<Value>]) -> Vec<u8> {
    let mut out = Vec::with_capacity(64);
    match format {
        Format::Json => codec::write_json_object(
            &mut out,
            names
                .iter()
                .map(|n| &**n)
                .zip(row.iter().map(|v| v.as_ref().unwrap_or(&Value::Null))),
        ),
        Format::String | Format::Bytes => {
            let value = names
                .iter()
                .position(|n| &**n == "value")
                .and_then(|i| row.get(i))
                .and_then(Option::as_ref);
            match value {
                Some(Value::Bytes(b)) => out.extend_from_slice(b),
                Some(v) => out.extend_from_slice(v.to_string().as_bytes()),
                None => codec::write_json_object(
                    &mut out,
                    names
                        .iter()
                        .map(|n| &**n)
                        .zip(row.iter().map(|v| v.as_ref().unwrap_or(&Value::Null))),
                ),
            }
        }
    }
    out
}
