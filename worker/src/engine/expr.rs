//! CEL expressions compiled to closures.
//!
//! Expressions keep CEL's syntax and semantics (parsed by the `cel` crate), but the hot path
//! does not run its interpreter per record: [`Expr::compile`] turns the parsed expression into a
//! tree of closures over the row's slots. What the compiler does not cover (comprehensions,
//! timestamps, regular expressions, ...) runs on the `cel` interpreter, which is also the
//! reference the compiled form is tested against.

use std::{collections::BTreeMap, collections::HashMap, fmt, sync::Arc};

use cel::common::ast::{EntryExpr, Expr as Ast, IdedExpr, LiteralValue};

use super::value::Value;

/// A row: one value per slot, `None` where the record lacks the field.
pub type Row = [Option<Value>];

/// Why an expression failed on a record. The record goes to the dead-letter topic.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum EvalError {
    /// The record lacks a field the expression reads.
    #[error("no such field {0:?}")]
    NoSuchField(Arc<str>),
    /// A map lacks a key the expression reads.
    #[error("no such key {0:?}")]
    NoSuchKey(String),
    /// An operator or function applied to types it does not take.
    #[error("no such overload: {op} applied to {types}")]
    NoOverload {
        /// The operator or function.
        op: &'static str,
        /// The argument types.
        types: String,
    },
    /// Integer overflow.
    #[error("integer overflow in {0}")]
    Overflow(&'static str),
    /// Division or modulo by zero.
    #[error("division by zero")]
    DivisionByZero,
    /// A list index outside the list.
    #[error("index {0} out of range")]
    IndexOutOfRange(i64),
    /// A value that does not convert.
    #[error("cannot convert {0}")]
    Conversion(String),
    /// An error from the CEL interpreter.
    #[error("{0}")]
    Interpreter(String),
}

fn no_overload(op: &'static str, args: &[&Value]) -> EvalError {
    EvalError::NoOverload {
        op,
        types: args
            .iter()
            .map(|v| v.type_name())
            .collect::<Vec<_>>()
            .join(", "),
    }
}

type Node = Box<dyn Fn(&Row) -> Result<Value, EvalError> + Send + Sync>;

/// A compiled expression.
pub struct Expr {
    node: Node,
    source: Arc<str>,
    compiled: bool,
}

impl fmt::Debug for Expr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Expr({:?}, compiled: {})", self.source, self.compiled)
    }
}

impl Expr {
    /// Compiles `source` against `slots` (the field name of each row slot). Variables outside
    /// `slots` are an error.
    pub fn compile(source: &str, slots: &[Arc<str>]) -> Result<Self, String> {
        let program = cel::Program::compile(source).map_err(|e| e.to_string())?;
        check_variables(program.expression(), slots)?;
        match compile_node(program.expression(), slots) {
            Some(node) => Ok(Expr {
                node,
                source: Arc::from(source),
                compiled: true,
            }),
            None => Ok(Self::interpreter(program, source, slots)),
        }
    }

    /// The `cel` interpreter for `source`: the reference semantics.
    pub fn interpret(source: &str, slots: &[Arc<str>]) -> Result<Self, String> {
        let program = cel::Program::compile(source).map_err(|e| e.to_string())?;
        check_variables(program.expression(), slots)?;
        Ok(Self::interpreter(program, source, slots))
    }

    fn interpreter(program: cel::Program, source: &str, slots: &[Arc<str>]) -> Self {
        let env = Arc::new(cel::Env::stdlib());
        let slots: Vec<Arc<str>> = slots.to_vec();
        let node: Node = Box::new(move |row: &Row| {
            let mut context = cel::Context::with_env(env.clone());
            for (name, value) in slots.iter().zip(row) {
                if let Some(value) = value {
                    context.add_variable_from_value(name.to_string(), to_cel(value));
                }
            }
            match program.execute(&context) {
                Ok(value) => from_cel(value),
                Err(e) => Err(EvalError::Interpreter(e.to_string())),
            }
        });
        Expr {
            node,
            source: Arc::from(source),
            compiled: false,
        }
    }

    /// Evaluates on a row.
    #[inline]
    pub fn eval(&self, row: &Row) -> Result<Value, EvalError> {
        (self.node)(row)
    }

    /// Evaluates a condition.
    #[inline]
    pub fn eval_bool(&self, row: &Row) -> Result<bool, EvalError> {
        match self.eval(row)? {
            Value::Bool(b) => Ok(b),
            other => Err(EvalError::NoOverload {
                op: "condition",
                types: other.type_name().to_owned(),
            }),
        }
    }

    /// The source text.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Whether the closure compiler covers it (otherwise the interpreter runs it).
    pub fn is_compiled(&self) -> bool {
        self.compiled
    }
}

fn check_variables(expr: &IdedExpr, slots: &[Arc<str>]) -> Result<(), String> {
    for v in oxbow_crds::pipeline::free_variables(expr) {
        if !slots.iter().any(|s| **s == *v) {
            return Err(format!("unknown field {v:?}"));
        }
    }
    Ok(())
}

fn literal(value: &LiteralValue) -> Value {
    match value {
        LiteralValue::Boolean(b) => Value::Bool(*b.inner()),
        LiteralValue::Bytes(b) => Value::Bytes(Arc::from(b.inner())),
        LiteralValue::Double(d) => Value::Double(*d.inner()),
        LiteralValue::Int(i) => Value::Int(*i.inner()),
        LiteralValue::Null => Value::Null,
        LiteralValue::String(s) => Value::String(Arc::from(s.inner())),
        LiteralValue::UInt(u) => Value::UInt(*u.inner()),
    }
}

/// Compiles a node, or `None` when the compiler does not cover it.
fn compile_node(expr: &IdedExpr, slots: &[Arc<str>]) -> Option<Node> {
    Some(match &expr.expr {
        Ast::Literal(l) => {
            let v = literal(l);
            Box::new(move |_| Ok(v.clone()))
        }
        Ast::Ident(name) => {
            let slot = slots.iter().position(|s| **s == **name)?;
            let name: Arc<str> = Arc::from(name.as_str());
            Box::new(move |row| match row.get(slot) {
                Some(Some(v)) => Ok(v.clone()),
                _ => Err(EvalError::NoSuchField(name.clone())),
            })
        }
        Ast::Select(select) => {
            let operand = compile_node(&select.operand, slots)?;
            let field = select.field.clone();
            if select.test {
                Box::new(move |row| match operand(row)? {
                    Value::Map(m) => Ok(Value::Bool(m.contains_key(&field))),
                    other => Err(no_overload("has", &[&other])),
                })
            } else {
                Box::new(move |row| match operand(row)? {
                    Value::Map(m) => m
                        .get(&field)
                        .cloned()
                        .ok_or_else(|| EvalError::NoSuchKey(field.clone())),
                    other => Err(no_overload("select", &[&other])),
                })
            }
        }
        Ast::List(list) => {
            if !list.optional_indices.is_empty() {
                return None;
            }
            let items: Vec<Node> = list
                .elements
                .iter()
                .map(|e| compile_node(e, slots))
                .collect::<Option<_>>()?;
            Box::new(move |row| {
                let values = items
                    .iter()
                    .map(|n| n(row))
                    .collect::<Result<Vec<_>, _>>()?;
                Ok(Value::List(Arc::new(values)))
            })
        }
        Ast::Map(map) => {
            let mut entries = Vec::new();
            for entry in &map.entries {
                let EntryExpr::MapEntry(e) = &entry.expr else {
                    return None;
                };
                if e.optional {
                    return None;
                }
                entries.push((compile_node(&e.key, slots)?, compile_node(&e.value, slots)?));
            }
            Box::new(move |row| {
                let mut out = BTreeMap::new();
                for (k, v) in &entries {
                    match k(row)? {
                        Value::String(s) => {
                            out.insert(s.to_string(), v(row)?);
                        }
                        other => return Err(no_overload("map key", &[&other])),
                    }
                }
                Ok(Value::Map(Arc::new(out)))
            })
        }
        Ast::Call(call) => {
            return compile_call(&call.func_name, call.target.as_deref(), &call.args, slots);
        }
        Ast::Comprehension(_) | Ast::Struct(_) | Ast::Unspecified => return None,
    })
}

fn compile_call(
    name: &str,
    target: Option<&IdedExpr>,
    args: &[IdedExpr],
    slots: &[Arc<str>],
) -> Option<Node> {
    if let Some(node) = field_versus_literal(name, target, args, slots) {
        return Some(node);
    }
    let mut operands: Vec<Node> = Vec::new();
    if let Some(t) = target {
        operands.push(compile_node(t, slots)?);
    }
    for a in args {
        operands.push(compile_node(a, slots)?);
    }
    let mut it = operands.into_iter();
    let (a, b, c) = (it.next(), it.next(), it.next());
    Some(match (name, a, b, c) {
        ("_&&_", Some(a), Some(b), None) => {
            Box::new(move |row| logic(a(row), || b(row), false, "&&"))
        }
        ("_||_", Some(a), Some(b), None) => {
            Box::new(move |row| logic(a(row), || b(row), true, "||"))
        }
        ("!_", Some(a), None, None) => Box::new(move |row| match a(row)? {
            Value::Bool(x) => Ok(Value::Bool(!x)),
            v => Err(no_overload("!", &[&v])),
        }),
        ("-_", Some(a), None, None) => Box::new(move |row| match a(row)? {
            Value::Int(x) => x
                .checked_neg()
                .map(Value::Int)
                .ok_or(EvalError::Overflow("-")),
            Value::Double(x) => Ok(Value::Double(-x)),
            v => Err(no_overload("-", &[&v])),
        }),
        ("_?_:_", Some(a), Some(b), Some(c)) => Box::new(move |row| match a(row)? {
            Value::Bool(true) => b(row),
            Value::Bool(false) => c(row),
            v => Err(no_overload("?:", &[&v])),
        }),
        ("_==_", Some(a), Some(b), None) => {
            Box::new(move |row| Ok(Value::Bool(a(row)?.cel_eq(&b(row)?))))
        }
        ("_!=_", Some(a), Some(b), None) => {
            Box::new(move |row| Ok(Value::Bool(!a(row)?.cel_eq(&b(row)?))))
        }
        ("_<_", Some(a), Some(b), None) => compare(a, b, "<", |o| o.is_lt()),
        ("_<=_", Some(a), Some(b), None) => compare(a, b, "<=", |o| o.is_le()),
        ("_>_", Some(a), Some(b), None) => compare(a, b, ">", |o| o.is_gt()),
        ("_>=_", Some(a), Some(b), None) => compare(a, b, ">=", |o| o.is_ge()),
        ("_+_", Some(a), Some(b), None) => Box::new(move |row| add(a(row)?, b(row)?)),
        ("_-_", Some(a), Some(b), None) => Box::new(move |row| arith(a(row)?, b(row)?, "-")),
        ("_*_", Some(a), Some(b), None) => Box::new(move |row| arith(a(row)?, b(row)?, "*")),
        ("_/_", Some(a), Some(b), None) => Box::new(move |row| arith(a(row)?, b(row)?, "/")),
        ("_%_", Some(a), Some(b), None) => Box::new(move |row| arith(a(row)?, b(row)?, "%")),
        ("_[_]", Some(a), Some(b), None) => Box::new(move |row| index(a(row)?, b(row)?)),
        ("@in", Some(a), Some(b), None) => Box::new(move |row| {
            let (item, container) = (a(row)?, b(row)?);
            match &container {
                Value::List(l) => Ok(Value::Bool(l.iter().any(|x| x.cel_eq(&item)))),
                Value::Map(m) => match &item {
                    Value::String(k) => Ok(Value::Bool(m.contains_key(&**k))),
                    _ => Ok(Value::Bool(false)),
                },
                _ => Err(no_overload("in", &[&item, &container])),
            }
        }),
        ("size", Some(a), None, None) => Box::new(move |row| match a(row)? {
            Value::String(s) => Ok(Value::Int(s.chars().count() as i64)),
            Value::Bytes(b) => Ok(Value::Int(b.len() as i64)),
            Value::List(l) => Ok(Value::Int(l.len() as i64)),
            Value::Map(m) => Ok(Value::Int(m.len() as i64)),
            v => Err(no_overload("size", &[&v])),
        }),
        ("contains", Some(a), Some(b), None) if target.is_some() => {
            string_test(a, b, "contains", |s, t| s.contains(t))
        }
        ("startsWith", Some(a), Some(b), None) if target.is_some() => {
            string_test(a, b, "startsWith", |s, t| s.starts_with(t))
        }
        ("endsWith", Some(a), Some(b), None) if target.is_some() => {
            string_test(a, b, "endsWith", |s, t| s.ends_with(t))
        }
        ("int", Some(a), None, None) if target.is_none() => Box::new(move |row| to_int(a(row)?)),
        ("uint", Some(a), None, None) if target.is_none() => Box::new(move |row| to_uint(a(row)?)),
        ("double", Some(a), None, None) if target.is_none() => {
            Box::new(move |row| to_double(a(row)?))
        }
        ("string", Some(a), None, None) if target.is_none() => {
            Box::new(move |row| to_string(a(row)?))
        }
        ("bool", Some(a), None, None) if target.is_none() => Box::new(move |row| match a(row)? {
            Value::Bool(b) => Ok(Value::Bool(b)),
            Value::String(s) if &*s == "true" => Ok(Value::Bool(true)),
            Value::String(s) if &*s == "false" => Ok(Value::Bool(false)),
            v => Err(EvalError::Conversion(format!("{} to bool", v.type_name()))),
        }),
        _ => return None,
    })
}

/// `field <op> literal` (or `literal <op> field`), the most common filter shape, compares the
/// row's value in place instead of cloning both sides.
fn field_versus_literal(
    name: &str,
    target: Option<&IdedExpr>,
    args: &[IdedExpr],
    slots: &[Arc<str>],
) -> Option<Node> {
    let (Some(op), None, [left, right]) = (comparison(name), target, args) else {
        return None;
    };
    let (field, lit, op) = match (&left.expr, &right.expr) {
        (Ast::Ident(f), Ast::Literal(l)) => (f, literal(l), op),
        (Ast::Literal(l), Ast::Ident(f)) => (f, literal(l), op.flipped()),
        _ => return None,
    };
    let slot = slots.iter().position(|s| **s == **field)?;
    let field: Arc<str> = Arc::from(field.as_str());
    Some(Box::new(move |row: &Row| {
        let Some(Some(v)) = row.get(slot) else {
            return Err(EvalError::NoSuchField(field.clone()));
        };
        op.apply(v, &lit)
    }))
}

#[derive(Clone, Copy)]
enum Comparison {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

fn comparison(name: &str) -> Option<Comparison> {
    Some(match name {
        "_==_" => Comparison::Eq,
        "_!=_" => Comparison::Ne,
        "_<_" => Comparison::Lt,
        "_<=_" => Comparison::Le,
        "_>_" => Comparison::Gt,
        "_>=_" => Comparison::Ge,
        _ => return None,
    })
}

impl Comparison {
    /// The same comparison with its operands swapped.
    fn flipped(self) -> Self {
        match self {
            Comparison::Lt => Comparison::Gt,
            Comparison::Le => Comparison::Ge,
            Comparison::Gt => Comparison::Lt,
            Comparison::Ge => Comparison::Le,
            same => same,
        }
    }

    fn apply(self, x: &Value, y: &Value) -> Result<Value, EvalError> {
        let (op, test): (&'static str, fn(std::cmp::Ordering) -> bool) = match self {
            Comparison::Eq => return Ok(Value::Bool(x.cel_eq(y))),
            Comparison::Ne => return Ok(Value::Bool(!x.cel_eq(y))),
            Comparison::Lt => ("<", |o| o.is_lt()),
            Comparison::Le => ("<=", |o| o.is_le()),
            Comparison::Gt => (">", |o| o.is_gt()),
            Comparison::Ge => (">=", |o| o.is_ge()),
        };
        match x.compare(y) {
            Some(o) => Ok(Value::Bool(test(o))),
            None => Err(no_overload(op, &[x, y])),
        }
    }
}

/// CEL's commutative `&&` / `||`: a decisive operand wins over an error in the other.
fn logic(
    a: Result<Value, EvalError>,
    b: impl FnOnce() -> Result<Value, EvalError>,
    decisive: bool,
    op: &'static str,
) -> Result<Value, EvalError> {
    let check = |r: Result<Value, EvalError>| match r {
        Ok(Value::Bool(x)) => Ok(x),
        Ok(v) => Err(no_overload(op, &[&v])),
        Err(e) => Err(e),
    };
    let a = check(a);
    if a == Ok(decisive) {
        return Ok(Value::Bool(decisive));
    }
    let b = check(b());
    match (a, b) {
        (_, Ok(x)) if x == decisive => Ok(Value::Bool(decisive)),
        (Err(e), _) | (_, Err(e)) => Err(e),
        _ => Ok(Value::Bool(!decisive)),
    }
}

fn compare(a: Node, b: Node, op: &'static str, test: fn(std::cmp::Ordering) -> bool) -> Node {
    Box::new(move |row| {
        let (x, y) = (a(row)?, b(row)?);
        match x.compare(&y) {
            Some(o) => Ok(Value::Bool(test(o))),
            None => Err(no_overload(op, &[&x, &y])),
        }
    })
}

fn add(x: Value, y: Value) -> Result<Value, EvalError> {
    match (&x, &y) {
        (Value::String(a), Value::String(b)) => Ok(Value::String(Arc::from(format!("{a}{b}")))),
        (Value::List(a), Value::List(b)) => Ok(Value::List(Arc::new(
            a.iter().chain(b.iter()).cloned().collect(),
        ))),
        _ => arith(x, y, "+"),
    }
}

fn arith(x: Value, y: Value, op: &'static str) -> Result<Value, EvalError> {
    use Value::*;
    let overflow = || EvalError::Overflow(op);
    match (&x, &y) {
        (Int(a), Int(b)) => match op {
            "+" => a.checked_add(*b).map(Int).ok_or_else(overflow),
            "-" => a.checked_sub(*b).map(Int).ok_or_else(overflow),
            "*" => a.checked_mul(*b).map(Int).ok_or_else(overflow),
            "/" if *b == 0 => Err(EvalError::DivisionByZero),
            "/" => a.checked_div(*b).map(Int).ok_or_else(overflow),
            "%" if *b == 0 => Err(EvalError::DivisionByZero),
            _ => a.checked_rem(*b).map(Int).ok_or_else(overflow),
        },
        (UInt(a), UInt(b)) => match op {
            "+" => a.checked_add(*b).map(UInt).ok_or_else(overflow),
            "-" => a.checked_sub(*b).map(UInt).ok_or_else(overflow),
            "*" => a.checked_mul(*b).map(UInt).ok_or_else(overflow),
            "/" | "%" if *b == 0 => Err(EvalError::DivisionByZero),
            "/" => Ok(UInt(a / b)),
            _ => Ok(UInt(a % b)),
        },
        (Double(a), Double(b)) => match op {
            "+" => Ok(Double(a + b)),
            "-" => Ok(Double(a - b)),
            "*" => Ok(Double(a * b)),
            "/" => Ok(Double(a / b)),
            _ => Err(no_overload(op, &[&x, &y])),
        },
        _ => Err(no_overload(op, &[&x, &y])),
    }
}

fn index(container: Value, key: Value) -> Result<Value, EvalError> {
    match (&container, &key) {
        (Value::List(l), Value::Int(i)) => usize::try_from(*i)
            .ok()
            .and_then(|u| l.get(u))
            .cloned()
            .ok_or(EvalError::IndexOutOfRange(*i)),
        (Value::Map(m), Value::String(k)) => m
            .get(&**k)
            .cloned()
            .ok_or_else(|| EvalError::NoSuchKey(k.to_string())),
        _ => Err(no_overload("[]", &[&container, &key])),
    }
}

fn string_test(a: Node, b: Node, op: &'static str, test: fn(&str, &str) -> bool) -> Node {
    Box::new(move |row| match (a(row)?, b(row)?) {
        (Value::String(s), Value::String(t)) => Ok(Value::Bool(test(&s, &t))),
        (x, y) => Err(no_overload(op, &[&x, &y])),
    })
}

fn to_int(v: Value) -> Result<Value, EvalError> {
    match v {
        Value::Int(i) => Ok(Value::Int(i)),
        Value::UInt(u) => i64::try_from(u)
            .map(Value::Int)
            .map_err(|_| EvalError::Overflow("int")),
        Value::Double(d)
            if d.is_finite() && d > -9.223_372_036_854_776e18 && d < 9.223_372_036_854_776e18 =>
        {
            Ok(Value::Int(d as i64))
        }
        Value::Double(_) => Err(EvalError::Overflow("int")),
        Value::String(s) => s
            .parse()
            .map(Value::Int)
            .map_err(|_| EvalError::Conversion(format!("{s:?} to int"))),
        other => Err(EvalError::Conversion(format!(
            "{} to int",
            other.type_name()
        ))),
    }
}

fn to_uint(v: Value) -> Result<Value, EvalError> {
    match v {
        Value::UInt(u) => Ok(Value::UInt(u)),
        Value::Int(i) => u64::try_from(i)
            .map(Value::UInt)
            .map_err(|_| EvalError::Overflow("uint")),
        Value::Double(d) if (0.0..1.844_674_407_370_955_2e19).contains(&d) => {
            Ok(Value::UInt(d as u64))
        }
        Value::Double(_) => Err(EvalError::Overflow("uint")),
        Value::String(s) => s
            .parse()
            .map(Value::UInt)
            .map_err(|_| EvalError::Conversion(format!("{s:?} to uint"))),
        other => Err(EvalError::Conversion(format!(
            "{} to uint",
            other.type_name()
        ))),
    }
}

fn to_double(v: Value) -> Result<Value, EvalError> {
    match v {
        Value::Double(d) => Ok(Value::Double(d)),
        Value::Int(i) => Ok(Value::Double(i as f64)),
        Value::UInt(u) => Ok(Value::Double(u as f64)),
        Value::String(s) => s
            .parse()
            .map(Value::Double)
            .map_err(|_| EvalError::Conversion(format!("{s:?} to double"))),
        other => Err(EvalError::Conversion(format!(
            "{} to double",
            other.type_name()
        ))),
    }
}

fn to_string(v: Value) -> Result<Value, EvalError> {
    match v {
        Value::String(s) => Ok(Value::String(s)),
        Value::Int(_) | Value::UInt(_) | Value::Double(_) | Value::Bool(_) => {
            Ok(Value::string(&v.to_string()))
        }
        Value::Bytes(b) => std::str::from_utf8(&b)
            .map(Value::string)
            .map_err(|_| EvalError::Conversion("bytes that are not UTF-8 to string".to_owned())),
        other => Err(EvalError::Conversion(format!(
            "{} to string",
            other.type_name()
        ))),
    }
}

/// Our value as the interpreter's.
pub fn to_cel(v: &Value) -> cel::Value {
    match v {
        Value::Null => cel::Value::Null,
        Value::Bool(b) => cel::Value::Bool(*b),
        Value::Int(i) => cel::Value::Int(*i),
        Value::UInt(u) => cel::Value::UInt(*u),
        Value::Double(d) => cel::Value::Float(*d),
        Value::String(s) => cel::Value::String(Arc::new(s.to_string())),
        Value::Bytes(b) => cel::Value::Bytes(Arc::new(b.to_vec())),
        Value::List(l) => cel::Value::List(Arc::new(l.iter().map(to_cel).collect())),
        Value::Map(m) => {
            let map: HashMap<String, cel::Value> =
                m.iter().map(|(k, v)| (k.clone(), to_cel(v))).collect();
            cel::Value::from(map)
        }
    }
}

/// The interpreter's value as ours. Timestamps and durations become epoch milliseconds.
pub fn from_cel(v: cel::Value) -> Result<Value, EvalError> {
    Ok(match v {
        cel::Value::Null => Value::Null,
        cel::Value::Bool(b) => Value::Bool(b),
        cel::Value::Int(i) => Value::Int(i),
        cel::Value::UInt(u) => Value::UInt(u),
        cel::Value::Float(d) => Value::Double(d),
        cel::Value::String(s) => Value::string(&s),
        cel::Value::Bytes(b) => Value::Bytes(Arc::from(b.as_slice())),
        cel::Value::List(l) => Value::List(Arc::new(
            l.iter().cloned().map(from_cel).collect::<Result<_, _>>()?,
        )),
        cel::Value::Map(m) => {
            let mut out = BTreeMap::new();
            for (k, v) in m.map.iter() {
                let key = match k {
                    cel::objects::Key::String(s) => s.to_string(),
                    cel::objects::Key::Int(i) => i.to_string(),
                    cel::objects::Key::Uint(u) => u.to_string(),
                    cel::objects::Key::Bool(b) => b.to_string(),
                };
                out.insert(key, from_cel(v.clone())?);
            }
            Value::Map(Arc::new(out))
        }
        cel::Value::Timestamp(t) => Value::Int(t.timestamp_millis()),
        cel::Value::Duration(d) => Value::Int(d.num_milliseconds()),
        other => return Err(EvalError::Conversion(format!("{other:?}"))),
    })
}
