//! Aggregation accumulators of window steps.

use indexmap::IndexSet;
use oxbow_crds::pipeline::AggregateFunction;
use serde::{Deserialize, Serialize};

use super::{expr::EvalError, value::Value};

/// The running state of one aggregation in one window for one key.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Acc {
    /// `count()`.
    Count(u64),
    /// `sum` before its first value.
    SumEmpty,
    /// `sum` of ints.
    SumInt(i64),
    /// `sum` of uints.
    SumUInt(u64),
    /// `sum` of doubles, or of mixed numbers.
    SumDouble(f64),
    /// `min`.
    Min(Option<Box<Value>>),
    /// `max`.
    Max(Option<Box<Value>>),
    /// `avg`: sum and number of values so far.
    Avg(Box<(f64, u64)>),
    /// `first`: the value with the earliest event time.
    First(Option<Box<(i64, Value)>>),
    /// `last`: the value with the latest event time.
    Last(Option<Box<(i64, Value)>>),
    /// `count_distinct`.
    Distinct(Box<IndexSet<Value>>),
}

impl Acc {
    /// An empty accumulator for `function`.
    pub fn new(function: AggregateFunction) -> Self {
        match function {
            AggregateFunction::Count => Acc::Count(0),
            AggregateFunction::Sum => Acc::SumEmpty,
            AggregateFunction::Min => Acc::Min(None),
            AggregateFunction::Max => Acc::Max(None),
            AggregateFunction::Avg => Acc::Avg(Box::new((0.0, 0))),
            AggregateFunction::First => Acc::First(None),
            AggregateFunction::Last => Acc::Last(None),
            AggregateFunction::CountDistinct => Acc::Distinct(Box::default()),
        }
    }

    /// Checks that `value` can be added, so that a record either updates every aggregation of
    /// its window or none.
    pub fn check(&self, value: &Value) -> Result<(), EvalError> {
        let numeric = |op| match value {
            Value::Int(_) | Value::UInt(_) | Value::Double(_) => Ok(()),
            other => Err(EvalError::NoOverload {
                op,
                types: other.type_name().to_owned(),
            }),
        };
        match (self, value) {
            (Acc::Count(_) | Acc::First(_) | Acc::Last(_) | Acc::Distinct(_), _) => Ok(()),
            (Acc::SumInt(a), Value::Int(b)) => a
                .checked_add(*b)
                .map(|_| ())
                .ok_or(EvalError::Overflow("sum")),
            (Acc::SumUInt(a), Value::UInt(b)) => a
                .checked_add(*b)
                .map(|_| ())
                .ok_or(EvalError::Overflow("sum")),
            (Acc::SumInt(_) | Acc::SumUInt(_) | Acc::SumDouble(_) | Acc::SumEmpty, _) => {
                numeric("sum")
            }
            (Acc::Avg(_), _) => numeric("avg"),
            (Acc::Min(Some(m)) | Acc::Max(Some(m)), v) => {
                m.compare(v)
                    .map(|_| ())
                    .ok_or_else(|| EvalError::NoOverload {
                        op: "min/max",
                        types: format!("{}, {}", m.type_name(), v.type_name()),
                    })
            }
            (Acc::Min(None) | Acc::Max(None), _) => Ok(()),
        }
    }

    /// Adds a value checked by [`Acc::check`], seen at event time `ts`.
    pub fn add(&mut self, value: &Value, ts: i64) {
        match self {
            Acc::Count(n) => *n += 1,
            Acc::SumEmpty => {
                *self = match value {
                    Value::Int(i) => Acc::SumInt(*i),
                    Value::UInt(u) => Acc::SumUInt(*u),
                    other => Acc::SumDouble(other.as_f64().unwrap_or(0.0)),
                }
            }
            Acc::SumInt(a) => match value {
                Value::Int(b) => *a = a.saturating_add(*b),
                other => *self = Acc::SumDouble(*a as f64 + other.as_f64().unwrap_or(0.0)),
            },
            Acc::SumUInt(a) => match value {
                Value::UInt(b) => *a = a.saturating_add(*b),
                other => *self = Acc::SumDouble(*a as f64 + other.as_f64().unwrap_or(0.0)),
            },
            Acc::SumDouble(a) => *a += value.as_f64().unwrap_or(0.0),
            Acc::Avg(avg) => {
                avg.0 += value.as_f64().unwrap_or(0.0);
                avg.1 += 1;
            }
            Acc::Min(m) => {
                if m.as_ref()
                    .is_none_or(|m| value.compare(m).is_some_and(|o| o.is_lt()))
                {
                    *m = Some(Box::new(value.clone()));
                }
            }
            Acc::Max(m) => {
                if m.as_ref()
                    .is_none_or(|m| value.compare(m).is_some_and(|o| o.is_gt()))
                {
                    *m = Some(Box::new(value.clone()));
                }
            }
            Acc::First(f) => {
                if f.as_ref().is_none_or(|first| ts < first.0) {
                    *f = Some(Box::new((ts, value.clone())));
                }
            }
            Acc::Last(l) => {
                if l.as_ref().is_none_or(|last| ts >= last.0) {
                    *l = Some(Box::new((ts, value.clone())));
                }
            }
            Acc::Distinct(set) => {
                set.insert(value.clone());
            }
        }
    }

    /// Merges `other` (of a later or overlapping session) into `self`.
    pub fn merge(&mut self, other: Acc) {
        match (self, other) {
            (Acc::Count(a), Acc::Count(b)) => *a += b,
            (_, Acc::SumEmpty) => {}
            (a @ Acc::SumEmpty, b) => *a = b,
            (Acc::SumInt(a), Acc::SumInt(b)) => *a = a.saturating_add(b),
            (Acc::SumUInt(a), Acc::SumUInt(b)) => *a = a.saturating_add(b),
            (a @ (Acc::SumInt(_) | Acc::SumUInt(_) | Acc::SumDouble(_)), b) => {
                *a = Acc::SumDouble(a.sum_f64() + b.sum_f64());
            }
            (Acc::Avg(a), Acc::Avg(b)) => {
                a.0 += b.0;
                a.1 += b.1;
            }
            (a @ Acc::Min(_), Acc::Min(Some(v))) | (a @ Acc::Max(_), Acc::Max(Some(v))) => {
                a.add(&v, 0)
            }
            (a @ Acc::First(_), Acc::First(Some(b))) | (a @ Acc::Last(_), Acc::Last(Some(b))) => {
                a.add(&b.1, b.0)
            }
            (Acc::Distinct(a), Acc::Distinct(b)) => a.extend(*b),
            _ => {}
        }
    }

    fn sum_f64(&self) -> f64 {
        match self {
            Acc::SumInt(i) => *i as f64,
            Acc::SumUInt(u) => *u as f64,
            Acc::SumDouble(d) => *d,
            _ => 0.0,
        }
    }

    /// The aggregation's result.
    pub fn result(&self) -> Value {
        match self {
            Acc::Count(n) => Value::Int(i64::try_from(*n).unwrap_or(i64::MAX)),
            Acc::SumEmpty => Value::Int(0),
            Acc::SumInt(i) => Value::Int(*i),
            Acc::SumUInt(u) => Value::UInt(*u),
            Acc::SumDouble(d) => Value::Double(*d),
            Acc::Avg(avg) if avg.1 == 0 => Value::Null,
            Acc::Avg(avg) => Value::Double(avg.0 / avg.1 as f64),
            Acc::Min(v) | Acc::Max(v) => v.as_deref().cloned().unwrap_or(Value::Null),
            Acc::First(v) | Acc::Last(v) => v.as_ref().map(|b| b.1.clone()).unwrap_or(Value::Null),
            Acc::Distinct(set) => Value::Int(set.len() as i64),
        }
    }

    /// Approximate heap bytes held.
    pub fn size_bytes(&self) -> usize {
        match self {
            Acc::Distinct(set) => set.len() * 48,
            Acc::Min(Some(_)) | Acc::Max(Some(_)) | Acc::First(Some(_)) | Acc::Last(Some(_)) => 48,
            _ => 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use AggregateFunction::*;

    fn run(function: AggregateFunction, values: &[(i64, Value)]) -> Value {
        let mut acc = Acc::new(function);
        for (ts, v) in values {
            acc.check(v).unwrap();
            acc.add(v, *ts);
        }
        acc.result()
    }

    #[test]
    fn every_function_computes_its_result() {
        let values: Vec<(i64, Value)> = [(3, 5), (1, 2), (2, 9), (5, 2)]
            .iter()
            .map(|(t, v)| (*t, Value::Int(*v)))
            .collect();
        assert_eq!(run(Count, &values), Value::Int(4));
        assert_eq!(run(Sum, &values), Value::Int(18));
        assert_eq!(run(Min, &values), Value::Int(2));
        assert_eq!(run(Max, &values), Value::Int(9));
        assert_eq!(run(Avg, &values), Value::Double(4.5));
        assert_eq!(
            run(First, &values),
            Value::Int(2),
            "earliest event time wins"
        );
        assert_eq!(run(Last, &values), Value::Int(2), "latest event time wins");
        assert_eq!(run(CountDistinct, &values), Value::Int(3));
        assert_eq!(run(Sum, &[]), Value::Int(0));
        assert_eq!(run(Avg, &[]), Value::Null);
        assert_eq!(run(Max, &[]), Value::Null);
    }

    #[test]
    fn an_accumulator_fits_in_sixteen_bytes() {
        // Two of them sit inline in each window entry; see `window::Accs`.
        assert_eq!(std::mem::size_of::<Acc>(), 16);
    }

    #[test]
    fn mixed_numbers_sum_as_doubles() {
        assert_eq!(
            run(Sum, &[(0, Value::Int(1)), (0, Value::Double(0.5))]),
            Value::Double(1.5)
        );
    }

    #[test]
    fn overflow_and_type_errors_are_caught_before_adding() {
        let mut acc = Acc::new(Sum);
        acc.add(&Value::Int(i64::MAX), 0);
        assert_eq!(acc.check(&Value::Int(1)), Err(EvalError::Overflow("sum")));
        assert!(acc.check(&Value::string("x")).is_err());
        let mut min = Acc::new(Min);
        min.add(&Value::Int(1), 0);
        assert!(min.check(&Value::string("a")).is_err());
    }

    #[test]
    fn merging_equals_adding_everything_to_one() {
        for function in AggregateFunction::ALL.map(|(_, f)| f) {
            let (left, right) = (
                [(1, Value::Int(4)), (2, Value::Int(7))],
                [(0, Value::Int(1)), (3, Value::Int(7))],
            );
            let mut merged = Acc::new(function);
            let mut other = Acc::new(function);
            for (t, v) in &left {
                merged.add(v, *t);
            }
            for (t, v) in &right {
                other.add(v, *t);
            }
            merged.merge(other);
            let all: Vec<_> = left.iter().chain(right.iter()).cloned().collect();
            assert_eq!(merged.result(), run(function, &all), "{function:?}");
        }
    }
}
