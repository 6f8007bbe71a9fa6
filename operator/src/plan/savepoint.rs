//! Where a savepoint stands across the workers asked for it.

use std::collections::BTreeMap;

use oxbow_crds::admin::{SavepointResult, SavepointState};

/// The combined state of savepoint `id` over a set of workers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Gathered {
    /// Every worker completed it, all into this directory.
    Completed(String),
    /// A worker failed it (or the workers disagree on the directory).
    Failed(String),
    /// Still under way; these workers have not answered for `id` yet.
    Pending(Vec<u32>),
}

/// Gathers the results for `id` from `ordinals`.
pub(crate) fn gather(
    results: &BTreeMap<u32, SavepointResult>,
    id: &str,
    ordinals: &[u32],
) -> Gathered {
    if ordinals.is_empty() {
        return Gathered::Failed("no worker runs, so no savepoint can be taken".to_owned());
    }
    let mut missing = Vec::new();
    let mut in_progress = false;
    let mut path: Option<&str> = None;
    for ordinal in ordinals {
        match results.get(ordinal).filter(|r| r.id == id) {
            None => missing.push(*ordinal),
            Some(r) => match r.state {
                SavepointState::Failed => {
                    let why = r.error.as_deref().unwrap_or("no reason given");
                    return Gathered::Failed(format!(
                        "worker {ordinal} failed savepoint {id}: {why}"
                    ));
                }
                SavepointState::InProgress => in_progress = true,
                SavepointState::Completed => match (path, r.path.as_deref()) {
                    (_, None) => {
                        return Gathered::Failed(format!(
                            "worker {ordinal} completed savepoint {id} without a path"
                        ));
                    }
                    (Some(p), Some(q)) if p != q => {
                        return Gathered::Failed(format!(
                            "workers wrote savepoint {id} to different directories ({p}, {q})"
                        ));
                    }
                    (_, Some(q)) => path = Some(q),
                },
            },
        }
    }
    match path {
        Some(p) if missing.is_empty() && !in_progress => Gathered::Completed(p.to_owned()),
        _ => Gathered::Pending(missing),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(id: &str, state: SavepointState, path: Option<&str>) -> SavepointResult {
        SavepointResult {
            id: id.to_owned(),
            state,
            path: path.map(str::to_owned),
            error: None,
        }
    }

    #[test]
    fn completed_only_when_every_worker_completed_into_one_directory() {
        let done = |p| result("s1", SavepointState::Completed, Some(p));
        let all = BTreeMap::from([(0, done("s3://b/sp/s1")), (1, done("s3://b/sp/s1"))]);
        assert_eq!(
            gather(&all, "s1", &[0, 1]),
            Gathered::Completed("s3://b/sp/s1".into())
        );
        assert_eq!(gather(&all, "s1", &[0, 1, 2]), Gathered::Pending(vec![2]));
        assert_eq!(gather(&all, "s2", &[0]), Gathered::Pending(vec![0]));
        let split = BTreeMap::from([(0, done("a")), (1, done("b"))]);
        assert!(matches!(gather(&split, "s1", &[0, 1]), Gathered::Failed(_)));
        let mixed = BTreeMap::from([
            (0, done("a")),
            (1, result("s1", SavepointState::InProgress, None)),
        ]);
        assert_eq!(gather(&mixed, "s1", &[0, 1]), Gathered::Pending(vec![]));
        let failed = BTreeMap::from([(0, result("s1", SavepointState::Failed, None))]);
        assert!(matches!(gather(&failed, "s1", &[0]), Gathered::Failed(_)));
        assert!(matches!(gather(&all, "s1", &[]), Gathered::Failed(_)));
    }
}
