//! The shape of a job's window state: what a snapshot of it must match to be restored into a
//! pipeline, and how a pipeline change affects it.
//!
//! Every stateful step — the window and its aggregations — writes its [`StateShape`] into its
//! snapshots. A worker restores a snapshot only into a pipeline of a shape it can take
//! ([`classify`]); the operator classifies an upgrade the same way before it stops anything.
//!
//! | change | class | what happens to the state |
//! |---|---|---|
//! | nothing stateful (filters, maps before the key, the sink) | compatible | restored as is |
//! | aggregations reordered | compatible | restored by name |
//! | an aggregation added | migratable | it starts empty at the upgrade: rows of windows open then carry it over the records since |
//! | an aggregation removed | migratable | its state is dropped |
//! | an aggregation's function or argument changed | incompatible | refused, unless `upgrade.discardIncompatibleState` |
//! | the window's kind or size, the key, or the stage (the repartition added or removed) | incompatible | refused, unless `upgrade.discardIncompatibleState` |

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::pipeline::{Pipeline, Step, WindowKind};

/// The shape of the window step's state.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct StateShape {
    /// The spec path of the window step, such as `spec.pipeline[2]`.
    pub step: String,
    /// Whether the window runs in the shuffle stage (after a repartition).
    pub shuffled: bool,
    /// The key expression's source text.
    pub key: String,
    /// The window, as `tumbling 60000ms`, `hopping 60000ms/10000ms` or `session 30000ms`.
    pub window: String,
    /// The aggregations, in order.
    pub aggregates: Vec<AggregateShape>,
}

/// One aggregation of a window: its result field, function and argument.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct AggregateShape {
    /// The result field.
    pub name: String,
    /// The function and its argument, as written: `sum(amount)`, `count()`.
    pub function: String,
}

impl fmt::Display for StateShape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let aggregates: Vec<String> = self
            .aggregates
            .iter()
            .map(|a| format!("{}: {}", a.name, a.function))
            .collect();
        write!(
            f,
            "{} window keyed by {:?}{} with {{{}}}",
            self.window,
            self.key,
            if self.shuffled {
                " after the repartition"
            } else {
                ""
            },
            aggregates.join(", ")
        )
    }
}

/// The shape of `pipeline`'s window state; `None` for a pipeline without a window.
pub fn state_shape(pipeline: &Pipeline) -> Option<StateShape> {
    let mut key = None;
    for (i, step) in pipeline.steps.iter().enumerate() {
        match step {
            Step::KeyBy { expression, .. } => key = Some(expression.source().to_owned()),
            Step::Window { kind, aggregates } => {
                let ms = |d: std::time::Duration| d.as_millis();
                let window = match kind {
                    WindowKind::Tumbling { size } => format!("tumbling {}ms", ms(*size)),
                    WindowKind::Hopping { size, slide } => {
                        format!("hopping {}ms/{}ms", ms(*size), ms(*slide))
                    }
                    WindowKind::Session { gap } => format!("session {}ms", ms(*gap)),
                };
                return Some(StateShape {
                    step: format!("spec.pipeline[{i}]"),
                    shuffled: pipeline.shuffle_after.is_some_and(|s| s < i),
                    key: key.unwrap_or_default(),
                    window,
                    aggregates: aggregates
                        .iter()
                        .map(|a| AggregateShape {
                            name: a.name.clone(),
                            function: format!(
                                "{}({})",
                                a.function.as_str(),
                                a.argument.as_ref().map_or("", |e| e.source())
                            ),
                        })
                        .collect(),
                });
            }
            _ => {}
        }
    }
    None
}

/// How a snapshot of one shape restores into a pipeline of another.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ShapeChange {
    /// Restored as is (aggregations matched by name).
    Compatible,
    /// Restored, with aggregations `added` starting empty and `removed` dropped.
    Migratable {
        /// Aggregations that start empty at the upgrade.
        added: Vec<String>,
        /// Aggregations whose state is dropped.
        removed: Vec<String>,
    },
    /// Cannot be restored: `reason` says why.
    Incompatible {
        /// What differs, for the user.
        reason: String,
    },
}

impl ShapeChange {
    /// How the description ([`fmt::Display`]) of an incompatible change starts.
    pub const INCOMPATIBLE: &'static str = "incompatible";
}

impl fmt::Display for ShapeChange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ShapeChange::Compatible => {
                f.write_str("compatible: the window state is restored as is")
            }
            ShapeChange::Migratable { added, removed } => {
                f.write_str("migratable:")?;
                if !added.is_empty() {
                    write!(f, " {} start(s) empty at the upgrade", added.join(", "))?;
                }
                if !removed.is_empty() {
                    if !added.is_empty() {
                        f.write_str(";")?;
                    }
                    write!(f, " the state of {} is dropped", removed.join(", "))?;
                }
                Ok(())
            }
            ShapeChange::Incompatible { reason } => {
                write!(f, "{}: {reason}", ShapeChange::INCOMPATIBLE)
            }
        }
    }
}

/// How state of shape `old` restores into `new` (see the module's table).
pub fn classify(old: &StateShape, new: &StateShape) -> ShapeChange {
    let incompatible = |reason: String| ShapeChange::Incompatible { reason };
    if old.shuffled != new.shuffled {
        return incompatible(format!(
            "{}: the window moved {} the repartition stage, so its state is partitioned differently",
            new.step,
            if new.shuffled { "into" } else { "out of" }
        ));
    }
    if old.key != new.key {
        return incompatible(format!(
            "{}: the key changed from {:?} to {:?}",
            new.step, old.key, new.key
        ));
    }
    if old.window != new.window {
        return incompatible(format!(
            "{}: the window changed from {} to {}",
            new.step, old.window, new.window
        ));
    }
    for a in &new.aggregates {
        if let Some(o) = old.aggregates.iter().find(|o| o.name == a.name)
            && o.function != a.function
        {
            return incompatible(format!(
                "{}.aggregate.{}: changed from {} to {}",
                new.step, a.name, o.function, a.function
            ));
        }
    }
    let names = |shape: &StateShape| -> Vec<String> {
        shape.aggregates.iter().map(|a| a.name.clone()).collect()
    };
    let (old_names, new_names) = (names(old), names(new));
    let added: Vec<String> = new_names
        .iter()
        .filter(|n| !old_names.contains(n))
        .cloned()
        .collect();
    let removed: Vec<String> = old_names
        .iter()
        .filter(|n| !new_names.contains(n))
        .cloned()
        .collect();
    if added.is_empty() && removed.is_empty() {
        ShapeChange::Compatible
    } else {
        ShapeChange::Migratable { added, removed }
    }
}

/// How the window state of a job running `old` restores into `new`: `None` when neither has a
/// window, incompatible when only one has.
pub fn classify_pipelines(old: &Pipeline, new: &Pipeline) -> Option<ShapeChange> {
    match (state_shape(old), state_shape(new)) {
        (None, None) => None,
        (Some(o), Some(n)) => Some(classify(&o, &n)),
        (Some(o), None) => Some(ShapeChange::Migratable {
            added: Vec::new(),
            removed: vec![o.step],
        }),
        (None, Some(n)) => Some(ShapeChange::Migratable {
            added: vec![n.step],
            removed: Vec::new(),
        }),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    /// The validated pipeline of a job with `steps` (YAML list items), partitioned by `k`
    /// unless `shuffled`.
    fn pipeline(steps: &str, shuffled: bool) -> Pipeline {
        let partitioned = if shuffled { "" } else { "partitionedBy: \"k\"" };
        let yaml = format!(
            "apiVersion: oxbow.dev/v1alpha1\nkind: StreamJob\nmetadata: {{name: t}}\nspec:\n  kafka: {{bootstrapServers: \"k:9092\"}}\n  source: {{topics: [in], eventTime: {{field: ts}}, {partitioned}}}\n  pipeline:\n{steps}\n  sink: {{topic: out}}\n  checkpoint: {{storage: \"file:///c\"}}\n"
        );
        let job = crate::parse_manifest(&yaml).unwrap();
        crate::validation::validate(&job.spec)
            .unwrap_or_else(|e| panic!("{e}"))
            .pipeline
    }

    fn windowed(window: &str, key: &str, aggregates: &str) -> String {
        format!(
            "    - filter: \"v > 0\"\n    - keyBy: \"{key}\"\n    - window: {window}\n      aggregate: {aggregates}"
        )
    }

    const BASE: &str = "{n: \"count()\", total: \"sum(v)\"}";

    #[test]
    fn changes_are_classified_as_the_table_says() {
        let base = pipeline(&windowed("{tumbling: 1m}", "k", BASE), false);
        let cases: [(&str, Pipeline, &str); 9] = [
            (
                "a filter changed",
                pipeline(
                    &windowed("{tumbling: 1m}", "k", BASE).replace("v > 0", "v > 1"),
                    false,
                ),
                "compatible: the window state is restored as is",
            ),
            (
                "aggregations reordered",
                pipeline(
                    &windowed("{tumbling: 1m}", "k", "{total: \"sum(v)\", n: \"count()\"}"),
                    false,
                ),
                "compatible: the window state is restored as is",
            ),
            (
                "max added",
                pipeline(
                    &windowed(
                        "{tumbling: 1m}",
                        "k",
                        "{n: \"count()\", total: \"sum(v)\", top: \"max(v)\"}",
                    ),
                    false,
                ),
                "migratable: top start(s) empty at the upgrade",
            ),
            (
                "total removed",
                pipeline(&windowed("{tumbling: 1m}", "k", "{n: \"count()\"}"), false),
                "migratable: the state of total is dropped",
            ),
            (
                "total's argument changed",
                pipeline(
                    &windowed("{tumbling: 1m}", "k", "{n: \"count()\", total: \"sum(w)\"}"),
                    false,
                ),
                "incompatible: spec.pipeline[2].aggregate.total: changed from sum(v) to sum(w)",
            ),
            (
                "the window's size changed",
                pipeline(&windowed("{tumbling: 2m}", "k", BASE), false),
                "incompatible: spec.pipeline[2]: the window changed from tumbling 60000ms to tumbling 120000ms",
            ),
            (
                "the window's kind changed",
                pipeline(&windowed("{session: {gap: 1m}}", "k", BASE), false),
                "incompatible: spec.pipeline[2]: the window changed from tumbling 60000ms to session 60000ms",
            ),
            (
                "the key changed",
                pipeline(&windowed("{tumbling: 1m}", "k + 1", BASE), true),
                "incompatible: spec.pipeline[2]: the window moved into the repartition stage, so its state is partitioned differently",
            ),
            (
                "the window removed",
                pipeline("    - filter: \"v > 0\"", false),
                "migratable: the state of spec.pipeline[2] is dropped",
            ),
        ];
        for (what, new, want) in cases {
            let got = classify_pipelines(&base, &new).unwrap().to_string();
            assert_eq!(got, want, "{what}");
        }
    }

    #[test]
    fn a_new_key_in_the_same_stage_is_incompatible() {
        let old = pipeline(&windowed("{tumbling: 1m}", "k", BASE), true);
        let new = pipeline(&windowed("{tumbling: 1m}", "v", BASE), true);
        assert_eq!(
            classify_pipelines(&old, &new).unwrap().to_string(),
            "incompatible: spec.pipeline[2]: the key changed from \"k\" to \"v\""
        );
        assert_eq!(
            classify_pipelines(&old, &old),
            Some(ShapeChange::Compatible)
        );
        let stateless = pipeline("    - filter: \"v > 0\"", false);
        assert_eq!(classify_pipelines(&stateless, &stateless), None);
    }

    #[test]
    fn a_shape_reads_as_its_step() {
        let shape = state_shape(&pipeline(
            &windowed("{hopping: {size: 1m, slide: 10s}}", "k", BASE),
            true,
        ))
        .unwrap();
        assert_eq!(shape.step, "spec.pipeline[2]");
        assert!(shape.shuffled);
        assert_eq!(
            shape.to_string(),
            "hopping 60000ms/10000ms window keyed by \"k\" after the repartition with {n: count(), total: sum(v)}"
        );
    }
}
