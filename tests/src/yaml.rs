//! Rendered Kubernetes YAML as JSON values: the documents of a stream, and what tests read
//! from an object (kind, name, namespace, labels and selectors).

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Value, json};

/// The objects of a multi-document YAML stream; panics with the document that does not parse.
pub fn documents(yaml: &str) -> Vec<Value> {
    let mut docs = Vec::new();
    let mut current = String::new();
    let mut flush = |text: &mut String| {
        let doc: Value = serde_norway::from_str(text).unwrap_or_else(|e| panic!("{e}:\n{text}"));
        if !doc.is_null() {
            docs.push(doc);
        }
        text.clear();
    };
    for line in yaml.lines() {
        if line == "---" {
            flush(&mut current);
        } else {
            current.push_str(line);
            current.push('\n');
        }
    }
    flush(&mut current);
    docs
}

/// `kind`, or "".
pub fn kind_of(doc: &Value) -> &str {
    doc["kind"].as_str().unwrap_or_default()
}

/// `metadata.name`, or "".
pub fn name_of(doc: &Value) -> &str {
    doc["metadata"]["name"].as_str().unwrap_or_default()
}

/// `metadata.namespace`, or "".
pub fn namespace_of(doc: &Value) -> &str {
    doc["metadata"]["namespace"].as_str().unwrap_or_default()
}

/// The objects of `kind`.
pub fn of_kind<'a>(docs: &'a [Value], kind: &str) -> Vec<&'a Value> {
    docs.iter().filter(|d| kind_of(d) == kind).collect()
}

/// The objects of `kind` named `name`, in whatever namespaces.
pub fn named<'a>(docs: &'a [Value], kind: &str, name: &str) -> Vec<&'a Value> {
    docs.iter()
        .filter(|d| kind_of(d) == kind && name_of(d) == name)
        .collect()
}

/// The namespaces `docs` are in.
pub fn namespaces_of<'a>(docs: &[&'a Value]) -> BTreeSet<&'a str> {
    docs.iter().map(|d| namespace_of(d)).collect()
}

/// The one object of `kind`; panics unless there is exactly one.
pub fn one_of_kind<'a>(docs: &'a [Value], kind: &str) -> &'a Value {
    let found = of_kind(docs, kind);
    assert_eq!(found.len(), 1, "one {kind} expected, found {}", found.len());
    found[0]
}

/// Whether `selector`'s non-empty `matchLabels` all hold in `labels`.
pub fn labels_match(selector: &Value, labels: &BTreeMap<String, String>) -> bool {
    selector["matchLabels"].as_object().is_some_and(|m| {
        !m.is_empty()
            && m.iter()
                .all(|(k, v)| labels.get(k).map(String::as_str) == v.as_str())
    })
}

/// A `labels` map as strings.
pub fn value_labels(labels: &Value) -> BTreeMap<String, String> {
    labels
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
                .collect()
        })
        .unwrap_or_default()
}

/// `value` with every number as a float, so that `1` and `1.0` compare equal.
pub fn numbers_as_floats(value: &Value) -> Value {
    match value {
        Value::Number(n) => json!(n.as_f64()),
        Value::Array(items) => Value::Array(items.iter().map(numbers_as_floats).collect()),
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| (k.clone(), numbers_as_floats(v)))
                .collect(),
        ),
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STREAM: &str = "---\n# Source: a\napiVersion: v1\nkind: ServiceAccount\nmetadata:\n  \
                          name: w\n  namespace: a\n---\nkind: ServiceAccount\nmetadata:\n  \
                          name: w\n  namespace: b\n---\n---\nkind: Role\nmetadata: {name: r}\n";

    #[test]
    fn reads_each_document_and_skips_empty_ones() {
        let docs = documents(STREAM);
        assert_eq!(docs.len(), 3);
        assert_eq!(of_kind(&docs, "ServiceAccount").len(), 2);
        assert_eq!(name_of(one_of_kind(&docs, "Role")), "r");
        assert_eq!(namespace_of(one_of_kind(&docs, "Role")), "");
        let accounts = named(&docs, "ServiceAccount", "w");
        assert_eq!(namespaces_of(&accounts), BTreeSet::from(["a", "b"]));
    }

    #[test]
    #[should_panic(expected = "one Deployment expected, found 0")]
    fn one_of_kind_wants_exactly_one() {
        one_of_kind(&documents(STREAM), "Deployment");
    }

    #[test]
    fn a_selector_matches_labels_that_include_all_of_it() {
        let labels = value_labels(&json!({"app": "oxbow", "tier": "operator"}));
        assert!(labels_match(
            &json!({"matchLabels": {"app": "oxbow"}}),
            &labels
        ));
        assert!(!labels_match(
            &json!({"matchLabels": {"app": "other"}}),
            &labels
        ));
        assert!(!labels_match(&json!({"matchLabels": {}}), &labels), "empty");
        assert!(!labels_match(&json!({}), &labels));
    }

    #[test]
    fn integers_and_floats_compare_equal() {
        assert_eq!(
            numbers_as_floats(&json!({"min": [1], "x": "1"})),
            numbers_as_floats(&json!({"min": [1.0], "x": "1"}))
        );
    }
}
