//! Keyed event-time windows: tumbling, hopping and session.
//!
//! A window `[start, end)` fires once the task's stream time reaches `end + grace`; a record
//! whose every window has fired is late. Windows that fire together come out by key order. A session spans `[first event, last event + gap)`;
//! records less than `gap` apart share a session. Output order is deterministic (by window end, then by
//! key arrival order), so a task restored from a snapshot emits exactly what the original would.

use std::collections::BTreeMap;

use indexmap::IndexMap;
use oxbow_crds::pipeline::{AggregateFunction, WindowKind};
use serde::{Deserialize, Serialize};
use smallvec::SmallVec;
use std::collections::HashMap;

use super::{aggregate::Acc, expr::EvalError, value::Value};

/// Window shape in milliseconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shape {
    /// `[k·size, (k+1)·size)`.
    Tumbling(i64),
    /// Windows of `size` starting at multiples of `slide`.
    Hopping {
        /// Length.
        size: i64,
        /// Start interval.
        slide: i64,
    },
    /// Sessions closed by `gap` of inactivity.
    Session(i64),
}

impl Shape {
    /// The shape of a validated window.
    pub fn from_kind(kind: WindowKind) -> Self {
        let ms = |d: std::time::Duration| i64::try_from(d.as_millis()).unwrap_or(i64::MAX).max(1);
        match kind {
            WindowKind::Tumbling { size } => Shape::Tumbling(ms(size)),
            WindowKind::Hopping { size, slide } => Shape::Hopping {
                size: ms(size),
                slide: ms(slide),
            },
            WindowKind::Session { gap } => Shape::Session(ms(gap)),
        }
    }
}

/// A fired window row.
#[derive(Clone, Debug, PartialEq)]
pub struct Fired {
    /// The key.
    pub key: Value,
    /// Window start, epoch ms.
    pub start: i64,
    /// Window end (exclusive), epoch ms.
    pub end: i64,
    /// One result per aggregation.
    pub results: Vec<Value>,
}

/// A session of one key.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Session {
    /// Creation order; orders the firing of sessions that end together.
    pub seq: u64,
    /// Earliest event time.
    pub start: i64,
    /// Latest event time plus the gap.
    pub end: i64,
    /// Accumulators.
    pub accs: Vec<Acc>,
}

/// The windows of one task.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Windows {
    /// Tumbling and hopping windows by start, then key.
    panes: BTreeMap<i64, HashMap<Value, Accs, KeyHasher>>,
    /// Open sessions per key, sorted by start.
    sessions: IndexMap<Value, Vec<Session>, KeyHasher>,
    /// Sessions by (end, seq), for firing in end order; derived from `sessions`.
    #[serde(skip)]
    session_timers: BTreeMap<(i64, u64), Value>,
    /// Next session sequence number.
    next_seq: u64,
    /// Entries held, for state size.
    entries: usize,
}

/// Why a record was not added to its windows.
#[derive(Debug, Clone, PartialEq)]
pub enum Rejected {
    /// Every window of the record has fired.
    Late,
    /// An aggregation refused the values.
    Eval(EvalError),
}

/// The accumulators of one key in one window, inline for up to two aggregations so that a
/// window update touches one cache line or two instead of chasing a pointer.
type Accs = SmallVec<[Acc; 2]>;

/// Hashing of keys: fast, seeded per process. Nothing observable depends on it: fired windows
/// are sorted by key, and sessions keep insertion order.
type KeyHasher = foldhash::fast::RandomState;

/// Two window states are equal when they hold the same windows; the firing index is derived.
impl PartialEq for Windows {
    fn eq(&self, other: &Self) -> bool {
        self.panes == other.panes
            && self.sessions == other.sessions
            && self.entries == other.entries
    }
}

impl Windows {
    /// No open windows.
    pub fn new() -> Self {
        Windows {
            panes: BTreeMap::new(),
            sessions: IndexMap::default(),
            session_timers: BTreeMap::new(),
            next_seq: 0,
            entries: 0,
        }
    }

    /// Rebuilds derived indexes after deserialization.
    pub fn rebuild(&mut self) {
        self.session_timers.clear();
        for (key, sessions) in &self.sessions {
            for s in sessions {
                self.session_timers.insert((s.end, s.seq), key.clone());
            }
        }
    }

    /// Number of open (key, window) entries.
    /// Rebuilds every open window's accumulators for another set of aggregations: the `i`-th
    /// new one takes the accumulator at `from[i]`, or starts empty as `functions[i]`.
    pub fn remap(&mut self, from: &[Option<usize>], functions: &[AggregateFunction]) {
        let remap = |accs: &[Acc]| -> Vec<Acc> {
            from.iter()
                .zip(functions)
                .map(|(i, f)| match i.and_then(|i| accs.get(i)) {
                    Some(acc) => acc.clone(),
                    None => Acc::new(*f),
                })
                .collect()
        };
        for pane in self.panes.values_mut() {
            for accs in pane.values_mut() {
                *accs = remap(accs).into();
            }
        }
        for sessions in self.sessions.values_mut() {
            for s in sessions {
                s.accs = remap(&s.accs);
            }
        }
    }

    pub fn len(&self) -> usize {
        self.entries
    }

    /// Whether no window is open.
    pub fn is_empty(&self) -> bool {
        self.entries == 0
    }

    /// Adds a record with event time `ts`, key `key` and aggregation arguments `args` (one per
    /// aggregation, `None` for `count()`), given the watermark (`stream time - grace`) before
    /// this record. Windows ending at or before the watermark are closed.
    pub fn add(
        &mut self,
        shape: Shape,
        functions: &[AggregateFunction],
        key: &Value,
        ts: i64,
        args: &[Option<Value>],
        watermark: i64,
    ) -> Result<(), Rejected> {
        match shape {
            Shape::Tumbling(size) => {
                let start = ts - ts.rem_euclid(size);
                if start.saturating_add(size) <= watermark {
                    return Err(Rejected::Late);
                }
                self.add_to_pane(start, functions, key, ts, args)
            }
            Shape::Hopping { size, slide } => {
                let last = ts - ts.rem_euclid(slide);
                let starts: Vec<i64> = (0..)
                    .map(|k| last - k * slide)
                    .take_while(|s| *s > ts - size)
                    .filter(|s| s.saturating_add(size) > watermark)
                    .collect();
                if starts.is_empty() {
                    return Err(Rejected::Late);
                }
                // Check every window before changing any, so the record counts everywhere or nowhere.
                for start in &starts {
                    if let Some(accs) = self.panes.get(start).and_then(|p| p.get(key)) {
                        check(accs, args)?;
                    }
                }
                for start in starts.into_iter().rev() {
                    self.add_to_pane(start, functions, key, ts, args)?;
                }
                Ok(())
            }
            Shape::Session(gap) => self.add_to_session(gap, functions, key, ts, args, watermark),
        }
    }

    fn add_to_pane(
        &mut self,
        start: i64,
        functions: &[AggregateFunction],
        key: &Value,
        ts: i64,
        args: &[Option<Value>],
    ) -> Result<(), Rejected> {
        let pane = self.panes.entry(start).or_default();
        if let Some(accs) = pane.get_mut(key) {
            check(accs, args)?;
            apply(accs, args, ts);
            return Ok(());
        }
        let mut accs: Accs = functions.iter().map(|f| Acc::new(*f)).collect();
        check(&accs, args)?;
        apply(&mut accs, args, ts);
        pane.insert(key.clone(), accs);
        self.entries += 1;
        Ok(())
    }

    fn add_to_session(
        &mut self,
        gap: i64,
        functions: &[AggregateFunction],
        key: &Value,
        ts: i64,
        args: &[Option<Value>],
        watermark: i64,
    ) -> Result<(), Rejected> {
        // A session record is late once the watermark passed its own time: every session it
        // could have joined has fired.
        if ts < watermark {
            return Err(Rejected::Late);
        }
        let end = ts.saturating_add(gap);
        let sessions = self.sessions.entry(key.clone()).or_default();
        // Sessions this record joins: [ts, ts + gap) overlaps [start, end). Records closer than
        // `gap` share a session.
        let touching: Vec<usize> = sessions
            .iter()
            .enumerate()
            .filter(|(_, s)| s.start < end && ts < s.end)
            .map(|(i, _)| i)
            .collect();
        let mut merged = Session {
            seq: self.next_seq,
            start: ts,
            end,
            accs: functions.iter().map(|f| Acc::new(*f)).collect(),
        };
        for &i in &touching {
            check(&sessions[i].accs, args)?;
        }
        check(&merged.accs, args)?;
        for i in touching.into_iter().rev() {
            let s = sessions.remove(i);
            self.entries -= 1;
            self.session_timers.remove(&(s.end, s.seq));
            merged.start = merged.start.min(s.start);
            merged.end = merged.end.max(s.end);
            for (a, b) in merged.accs.iter_mut().zip(s.accs) {
                a.merge(b);
            }
        }
        apply(&mut merged.accs, args, ts);
        self.next_seq += 1;
        let at = sessions.partition_point(|s| s.start < merged.start);
        self.session_timers
            .insert((merged.end, merged.seq), key.clone());
        sessions.insert(at, merged);
        self.entries += 1;
        Ok(())
    }

    /// Removes and returns every window that ends at or before `watermark`, in end order.
    pub fn fire(&mut self, shape: Shape, watermark: i64, out: &mut Vec<Fired>) {
        match shape {
            Shape::Tumbling(size) | Shape::Hopping { size, .. } => {
                while let Some(entry) = self.panes.first_entry() {
                    let start = *entry.key();
                    if start.saturating_add(size) > watermark {
                        break;
                    }
                    let pane = entry.remove();
                    self.entries -= pane.len();
                    // Rows of one window come out sorted by key: the same order after a
                    // restore, whatever the hash table's layout.
                    let mut rows: Vec<(Value, Accs)> = pane.into_iter().collect();
                    rows.sort_unstable_by(|a, b| a.0.total_cmp(&b.0));
                    out.extend(rows.into_iter().map(|(key, accs)| Fired {
                        key,
                        start,
                        end: start.saturating_add(size),
                        results: accs.iter().map(Acc::result).collect(),
                    }));
                }
            }
            Shape::Session(_) => {
                while let Some(entry) = self.session_timers.first_entry() {
                    let (end, seq) = *entry.key();
                    if end > watermark {
                        break;
                    }
                    let key = entry.remove();
                    let Some(sessions) = self.sessions.get_mut(&key) else {
                        continue;
                    };
                    let Some(i) = sessions.iter().position(|s| s.seq == seq) else {
                        continue;
                    };
                    let s = sessions.remove(i);
                    self.entries -= 1;
                    if sessions.is_empty() {
                        self.sessions.shift_remove(&key);
                    }
                    out.push(Fired {
                        key,
                        start: s.start,
                        end: s.end,
                        results: s.accs.iter().map(Acc::result).collect(),
                    });
                }
            }
        }
    }

    /// Approximate bytes of state.
    pub fn size_bytes(&self) -> usize {
        let entry = |accs: &[Acc]| 64 + accs.iter().map(|a| 32 + a.size_bytes()).sum::<usize>();
        let panes: usize = self
            .panes
            .values()
            .flat_map(|p| p.values())
            .map(|a| entry(a))
            .sum();
        let sessions: usize = self
            .sessions
            .values()
            .flatten()
            .map(|s| entry(&s.accs))
            .sum();
        panes + sessions
    }
}

impl Default for Windows {
    fn default() -> Self {
        Self::new()
    }
}

fn check(accs: &[Acc], args: &[Option<Value>]) -> Result<(), Rejected> {
    for (acc, arg) in accs.iter().zip(args) {
        if let Some(v) = arg {
            acc.check(v).map_err(Rejected::Eval)?;
        }
    }
    Ok(())
}

fn apply(accs: &mut [Acc], args: &[Option<Value>], ts: i64) {
    for (acc, arg) in accs.iter_mut().zip(args) {
        match arg {
            Some(v) => acc.add(v, ts),
            None => acc.add(&Value::Null, ts),
        }
    }
}
