//! The typed pipeline: what a validated `spec.pipeline` means.
//!
//! [`crate::validation`] turns the loose wire form ([`crate::streamjob::PipelineStep`]) into
//! these types; the worker's engine compiles them. Expressions stay CEL source text here (the
//! engine compiles them once at start); this module only parses them to check them and to learn
//! which fields they read.

use std::{collections::BTreeSet, fmt, time::Duration};

use cel::common::ast::{EntryExpr, Expr, IdedExpr};

/// The CEL functions and methods Oxbow expressions may call: the CEL standard definitions.
/// Operators (`_+_`, `!_`, ...) and macros (`has`, `all`, `exists`, `exists_one`, `map`,
/// `filter`, which the parser expands) are always allowed.
pub const FUNCTIONS: &[&str] = &[
    "size",
    "contains",
    "startsWith",
    "endsWith",
    "matches",
    "int",
    "uint",
    "double",
    "string",
    "bytes",
    "bool",
    "dyn",
    "type",
    "timestamp",
    "duration",
    "getDate",
    "getDayOfMonth",
    "getDayOfWeek",
    "getDayOfYear",
    "getFullYear",
    "getHours",
    "getMilliseconds",
    "getMinutes",
    "getMonth",
    "getSeconds",
];

/// A parsed CEL expression: its source, and what it reads and calls.
#[derive(Clone, PartialEq, Eq)]
pub struct Expression {
    source: String,
    variables: BTreeSet<String>,
    functions: BTreeSet<String>,
}

impl Expression {
    /// Parses `source` as CEL. The error is the parser's message.
    pub fn parse(source: &str) -> Result<Self, String> {
        if source.trim().is_empty() {
            return Err("the expression is empty".to_owned());
        }
        let program = cel::Program::compile(source).map_err(|e| e.to_string())?;
        let mut expression = Expression {
            source: source.to_owned(),
            variables: BTreeSet::new(),
            functions: BTreeSet::new(),
        };
        let mut bound = Vec::new();
        collect(program.expression(), &mut bound, &mut expression);
        Ok(expression)
    }

    /// The source text.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Top-level names the expression reads (record fields), excluding comprehension variables.
    pub fn variables(&self) -> impl Iterator<Item = &str> {
        self.variables.iter().map(String::as_str)
    }

    /// Named functions and methods the expression calls, excluding operators.
    pub fn functions(&self) -> impl Iterator<Item = &str> {
        self.functions.iter().map(String::as_str)
    }

    /// The field name when the expression is nothing but a top-level field (`account`).
    pub fn as_field(&self) -> Option<&str> {
        let s = self.source.trim();
        let is_ident = s
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        is_ident.then_some(s)
    }
}

impl fmt::Debug for Expression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Expression({:?})", self.source)
    }
}

/// The top-level names a parsed expression reads, excluding comprehension variables.
pub fn free_variables(expr: &IdedExpr) -> BTreeSet<String> {
    let mut out = Expression {
        source: String::new(),
        variables: BTreeSet::new(),
        functions: BTreeSet::new(),
    };
    collect(expr, &mut Vec::new(), &mut out);
    out.variables
}

fn collect(expr: &IdedExpr, bound: &mut Vec<String>, out: &mut Expression) {
    match &expr.expr {
        Expr::Unspecified | Expr::Literal(_) => {}
        Expr::Ident(name) => {
            if !name.starts_with('@') && !bound.iter().any(|b| b == name) {
                out.variables.insert(name.clone());
            }
        }
        Expr::Select(select) => collect(&select.operand, bound, out),
        Expr::Call(call) => {
            let is_operator = call.func_name.starts_with('_')
                || call.func_name.starts_with('!')
                || call.func_name.starts_with('-')
                || call.func_name.starts_with('@');
            if !is_operator {
                out.functions.insert(call.func_name.clone());
            }
            if let Some(target) = &call.target {
                collect(target, bound, out);
            }
            for arg in &call.args {
                collect(arg, bound, out);
            }
        }
        Expr::List(list) => {
            for element in &list.elements {
                collect(element, bound, out);
            }
        }
        Expr::Map(map) => {
            for entry in &map.entries {
                match &entry.expr {
                    EntryExpr::StructField(field) => collect(&field.value, bound, out),
                    EntryExpr::MapEntry(entry) => {
                        collect(&entry.key, bound, out);
                        collect(&entry.value, bound, out);
                    }
                }
            }
        }
        Expr::Struct(structure) => {
            for entry in &structure.entries {
                if let EntryExpr::StructField(field) = &entry.expr {
                    collect(&field.value, bound, out);
                }
            }
        }
        Expr::Comprehension(comprehension) => {
            collect(&comprehension.iter_range, bound, out);
            let before = bound.len();
            bound.push(comprehension.iter_var.clone());
            bound.extend(comprehension.iter_var2.clone());
            bound.push(comprehension.accu_var.clone());
            collect(&comprehension.accu_init, bound, out);
            collect(&comprehension.loop_cond, bound, out);
            collect(&comprehension.loop_step, bound, out);
            collect(&comprehension.result, bound, out);
            bound.truncate(before);
        }
    }
}

/// A validated pipeline.
#[derive(Clone, Debug, PartialEq)]
pub struct Pipeline {
    /// The steps, in order.
    pub steps: Vec<Step>,
    /// Index of the `keyBy` step after which records go through the job's repartition topic,
    /// when the source is not already partitioned by that key.
    pub shuffle_after: Option<usize>,
}

impl Pipeline {
    /// Whether the pipeline needs the internal repartition topic.
    pub fn needs_shuffle(&self) -> bool {
        self.shuffle_after.is_some()
    }
}

/// One validated step.
#[derive(Clone, Debug, PartialEq)]
pub enum Step {
    /// Keep records for which the expression is true.
    Filter(Expression),
    /// Replace each record by these fields.
    Map(Vec<(String, Expression)>),
    /// Key records by the expression; the key is carried in the output as `field`.
    KeyBy {
        /// The key expression.
        expression: Expression,
        /// Name of the key in window output rows: the field itself, or `key`.
        field: String,
    },
    /// Event-time windows with aggregations.
    Window {
        /// Window shape.
        kind: WindowKind,
        /// Aggregations, in output order.
        aggregates: Vec<Aggregate>,
    },
}

/// Window shapes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WindowKind {
    /// Non-overlapping windows of `size`.
    Tumbling {
        /// Window length.
        size: Duration,
    },
    /// Windows of `size` starting every `slide`.
    Hopping {
        /// Window length.
        size: Duration,
        /// Interval between starts.
        slide: Duration,
    },
    /// Per-key sessions closed by a `gap` of inactivity.
    Session {
        /// Inactivity gap.
        gap: Duration,
    },
}

/// Output fields that every window row carries.
pub const WINDOW_START_FIELD: &str = "window_start";
/// Output fields that every window row carries.
pub const WINDOW_END_FIELD: &str = "window_end";

/// One aggregation of a window step.
#[derive(Clone, Debug, PartialEq)]
pub struct Aggregate {
    /// Output field.
    pub name: String,
    /// The aggregation function.
    pub function: AggregateFunction,
    /// Its argument (none for `count()`).
    pub argument: Option<Expression>,
}

/// Aggregation functions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AggregateFunction {
    /// Number of records.
    Count,
    /// Sum of the argument.
    Sum,
    /// Smallest value of the argument.
    Min,
    /// Largest value of the argument.
    Max,
    /// Mean of the argument.
    Avg,
    /// Argument of the earliest record (by event time).
    First,
    /// Argument of the latest record (by event time).
    Last,
    /// Number of distinct values of the argument.
    CountDistinct,
}

impl AggregateFunction {
    /// Every function, with its name in a StreamJob.
    pub const ALL: [(&'static str, AggregateFunction); 8] = [
        ("count", AggregateFunction::Count),
        ("sum", AggregateFunction::Sum),
        ("min", AggregateFunction::Min),
        ("max", AggregateFunction::Max),
        ("avg", AggregateFunction::Avg),
        ("first", AggregateFunction::First),
        ("last", AggregateFunction::Last),
        ("count_distinct", AggregateFunction::CountDistinct),
    ];

    /// Whether the function takes an argument.
    /// The function's name as a spec writes it: `count`, `sum`, `count_distinct`...
    pub fn as_str(self) -> &'static str {
        Self::ALL
            .iter()
            .find(|(_, f)| *f == self)
            .map_or("", |(name, _)| name)
    }

    pub fn takes_argument(self) -> bool {
        self != AggregateFunction::Count
    }
}

/// Parses an aggregation such as `sum(amount)` or `count()`.
pub fn parse_aggregate(name: &str, text: &str) -> Result<Aggregate, String> {
    let text = text.trim();
    let names = || {
        AggregateFunction::ALL
            .iter()
            .map(|(n, _)| *n)
            .collect::<Vec<_>>()
            .join(", ")
    };
    let (function_name, rest) = text.split_once('(').ok_or_else(|| {
        format!(
            "{text:?} is not an aggregation; write one of {}, as in sum(amount) or count()",
            names()
        )
    })?;
    let argument_text = rest
        .strip_suffix(')')
        .ok_or_else(|| format!("{text:?} is missing its closing parenthesis"))?
        .trim();
    let function_name = function_name.trim();
    let function = AggregateFunction::ALL
        .iter()
        .find(|(n, _)| *n == function_name)
        .map(|(_, f)| *f)
        .ok_or_else(|| {
            format!(
                "unknown aggregation {function_name:?}; use one of {}",
                names()
            )
        })?;
    let argument = match (function.takes_argument(), argument_text.is_empty()) {
        (false, true) => None,
        (false, false) => return Err(format!("{function_name}() takes no argument")),
        (true, true) => {
            return Err(format!(
                "{function_name}(...) needs an argument, as in {function_name}(amount)"
            ));
        }
        (true, false) => Some(
            Expression::parse(argument_text)
                .map_err(|e| format!("the argument of {function_name} is not valid CEL: {e}"))?,
        ),
    };
    Ok(Aggregate {
        name: name.to_owned(),
        function,
        argument,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_variables_but_not_comprehension_variables() {
        let e = Expression::parse("items.exists(i, i.price > limit) && has(user.id)").unwrap();
        assert_eq!(
            e.variables().collect::<Vec<_>>(),
            ["items", "limit", "user"]
        );
        let e = Expression::parse("size(name) > 3 && name.startsWith('a')").unwrap();
        assert_eq!(e.functions().collect::<Vec<_>>(), ["size", "startsWith"]);
    }

    #[test]
    fn recognises_plain_fields() {
        assert_eq!(
            Expression::parse("account").unwrap().as_field(),
            Some("account")
        );
        assert_eq!(
            Expression::parse(" user_id ").unwrap().as_field(),
            Some("user_id")
        );
        assert_eq!(Expression::parse("user.id").unwrap().as_field(), None);
        assert_eq!(Expression::parse("string(a)").unwrap().as_field(), None);
    }

    #[test]
    fn rejects_bad_expressions() {
        assert!(Expression::parse("").is_err());
        assert!(Expression::parse("amount >").is_err());
        assert!(Expression::parse("(a").is_err());
    }

    #[test]
    fn parses_aggregations() {
        let a = parse_aggregate("total", "sum(double(amount))").unwrap();
        assert_eq!(a.function, AggregateFunction::Sum);
        assert_eq!(a.argument.unwrap().source(), "double(amount)");
        let a = parse_aggregate("n", " count( ) ").unwrap();
        assert_eq!((a.function, a.argument), (AggregateFunction::Count, None));
        let a = parse_aggregate("users", "count_distinct(user)").unwrap();
        assert_eq!(a.function, AggregateFunction::CountDistinct);
    }

    #[test]
    fn explains_bad_aggregations() {
        assert!(
            parse_aggregate("x", "median(a)")
                .unwrap_err()
                .contains("unknown aggregation")
        );
        assert!(
            parse_aggregate("x", "sum()")
                .unwrap_err()
                .contains("needs an argument")
        );
        assert!(
            parse_aggregate("x", "count(a)")
                .unwrap_err()
                .contains("takes no argument")
        );
        assert!(
            parse_aggregate("x", "sum(a")
                .unwrap_err()
                .contains("closing parenthesis")
        );
        assert!(
            parse_aggregate("x", "total")
                .unwrap_err()
                .contains("not an aggregation")
        );
        assert!(
            parse_aggregate("x", "sum(a >)")
                .unwrap_err()
                .contains("not valid CEL")
        );
    }
}
