//! Which worker owns which Kafka partitions.
//!
//! [`assign`] is the one function the operator uses to spread partitions over workers when a
//! job is deployed, rescaled, or its topics grow; workers read the result from their job file.
//! It is balanced (worker loads differ by at most one partition) and moves as few partitions as
//! possible away from their previous owner, since every moved partition's state must be reloaded.

use std::collections::{BTreeMap, BTreeSet};

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A Kafka partition.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TopicPartition {
    pub topic: String,
    pub partition: i32,
}

impl TopicPartition {
    /// A partition of a topic.
    pub fn new(topic: impl Into<String>, partition: i32) -> Self {
        Self {
            topic: topic.into(),
            partition,
        }
    }
}

/// The partitions one worker owns.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq, Eq)]
pub struct WorkerAssignment {
    /// StatefulSet ordinal of the worker.
    pub ordinal: u32,
    /// Owned partitions, by topic.
    pub partitions: BTreeMap<String, Vec<i32>>,
}

impl WorkerAssignment {
    /// The owned partitions, sorted.
    pub fn topic_partitions(&self) -> impl Iterator<Item = TopicPartition> + '_ {
        self.partitions.iter().flat_map(|(topic, ps)| {
            ps.iter()
                .map(move |p| TopicPartition::new(topic.clone(), *p))
        })
    }

    /// Number of owned partitions.
    pub fn len(&self) -> usize {
        self.partitions.values().map(Vec::len).sum()
    }

    /// Whether the worker owns nothing.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// An assignment of every partition of a job to its workers.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq, Eq)]
pub struct Assignment {
    /// Increases whenever the mapping changes; transactional ids of older generations are
    /// fenced before a new generation starts.
    pub generation: i64,
    /// Total number of partitions.
    pub partitions: i32,
    /// One entry per worker, by ordinal.
    pub workers: Vec<WorkerAssignment>,
}

impl Assignment {
    /// The partitions of worker `ordinal`.
    pub fn worker(&self, ordinal: u32) -> Option<&WorkerAssignment> {
        self.workers.iter().find(|w| w.ordinal == ordinal)
    }

    /// Owner of each partition.
    pub fn owners(&self) -> BTreeMap<TopicPartition, u32> {
        self.workers
            .iter()
            .flat_map(|w| w.topic_partitions().map(move |tp| (tp, w.ordinal)))
            .collect()
    }
}

/// Assigns every partition of `topics` (name -> partition count) to `workers` workers,
/// balanced and moving as few partitions as possible from `previous`.
///
/// The generation increases only when the mapping differs from `previous`.
pub fn assign(
    topics: &BTreeMap<String, i32>,
    workers: u32,
    previous: Option<&Assignment>,
) -> Assignment {
    let all: BTreeSet<TopicPartition> = topics
        .iter()
        .flat_map(|(topic, count)| {
            (0..(*count).max(0)).map(move |p| TopicPartition::new(topic.clone(), p))
        })
        .collect();
    let total = all.len();
    let n = workers as usize;

    // What each surviving worker owned before and still exists.
    let mut kept: Vec<Vec<TopicPartition>> = vec![Vec::new(); n];
    let mut taken = BTreeSet::new();
    if let Some(previous) = previous {
        for w in &previous.workers {
            let Some(slot) = kept.get_mut(w.ordinal as usize) else {
                continue;
            };
            for tp in w.topic_partitions() {
                if all.contains(&tp) && taken.insert(tp.clone()) {
                    slot.push(tp);
                }
            }
        }
    }

    let mut result: Vec<Vec<TopicPartition>> = vec![Vec::new(); n];
    if let (Some(base), Some(extra)) = (total.checked_div(n), total.checked_rem(n)) {
        // Capacities: the `total % n` workers that kept most get one extra partition.
        let mut order: Vec<usize> = (0..n).collect();
        order.sort_by_key(|&i| (std::cmp::Reverse(kept[i].len()), i));
        let mut capacity = vec![base; n];
        for &i in order.iter().take(extra) {
            capacity[i] += 1;
        }
        let mut unassigned = BTreeSet::new();
        for (i, mut owned) in kept.into_iter().enumerate() {
            owned.sort();
            if owned.len() > capacity[i] {
                unassigned.extend(owned.split_off(capacity[i]));
            }
            result[i] = owned;
        }
        unassigned.extend(all.iter().filter(|tp| !taken.contains(*tp)).cloned());
        for tp in unassigned {
            let target = (0..n)
                .max_by_key(|&i| (capacity[i] - result[i].len(), std::cmp::Reverse(i)))
                .unwrap_or(0);
            result[target].push(tp);
        }
    }

    let workers: Vec<WorkerAssignment> = result
        .into_iter()
        .enumerate()
        .map(|(ordinal, mut tps)| {
            tps.sort();
            let mut partitions: BTreeMap<String, Vec<i32>> = BTreeMap::new();
            for tp in tps {
                partitions.entry(tp.topic).or_default().push(tp.partition);
            }
            WorkerAssignment {
                ordinal: ordinal as u32,
                partitions,
            }
        })
        .collect();
    let unchanged = previous.is_some_and(|p| p.workers == workers);
    let generation = match previous {
        Some(p) if unchanged => p.generation,
        Some(p) => p.generation + 1,
        None => 1,
    };
    Assignment {
        generation,
        partitions: i32::try_from(total).unwrap_or(i32::MAX),
        workers,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn topics(spec: &[(&str, i32)]) -> BTreeMap<String, i32> {
        spec.iter().map(|(t, n)| (t.to_string(), *n)).collect()
    }

    fn loads(a: &Assignment) -> Vec<usize> {
        a.workers.iter().map(WorkerAssignment::len).collect()
    }

    fn moved(before: &Assignment, after: &Assignment) -> usize {
        let (b, a) = (before.owners(), after.owners());
        b.iter()
            .filter(|(tp, o)| a.get(*tp).is_some_and(|n| n != *o))
            .count()
    }

    /// The fewest partitions any balanced assignment must move, by brute force over which
    /// workers get the extra partition.
    fn minimal_moves(
        topics: &BTreeMap<String, i32>,
        workers: usize,
        previous: &Assignment,
    ) -> usize {
        let all: BTreeSet<TopicPartition> = assign(topics, 1, None).owners().into_keys().collect();
        let mut prev_counts = vec![0usize; workers];
        let mut survivors_lost = 0;
        for (tp, owner) in previous.owners() {
            if !all.contains(&tp) {
                continue;
            }
            match prev_counts.get_mut(owner as usize) {
                Some(c) => *c += 1,
                None => survivors_lost += 1,
            }
        }
        let (base, extra) = (all.len() / workers, all.len() % workers);
        let mut best = usize::MAX;
        for mask in 0u32..(1 << workers) {
            if mask.count_ones() as usize != extra {
                continue;
            }
            let excess: usize = (0..workers)
                .map(|i| {
                    let cap = base + usize::from(mask & (1 << i) != 0);
                    prev_counts[i].saturating_sub(cap)
                })
                .sum();
            best = best.min(excess);
        }
        best + survivors_lost
    }

    #[test]
    fn fresh_assignment_spreads_every_topic() {
        let a = assign(&topics(&[("payments", 6), ("refunds", 3)]), 3, None);
        assert_eq!(a.generation, 1);
        assert_eq!(a.partitions, 9);
        assert_eq!(loads(&a), [3, 3, 3]);
        for w in &a.workers {
            assert_eq!(w.partitions["payments"].len(), 2, "{w:?}");
        }
    }

    #[test]
    fn scaling_out_moves_only_what_the_new_worker_needs() {
        let t = topics(&[("in", 12)]);
        let two = assign(&t, 2, None);
        let three = assign(&t, 3, Some(&two));
        assert_eq!(loads(&three), [4, 4, 4]);
        assert_eq!(moved(&two, &three), 4);
        assert_eq!(three.generation, 2);
        let one = assign(&t, 1, Some(&three));
        assert_eq!(loads(&one), [12]);
        assert_eq!(moved(&three, &one), 8);
    }

    #[test]
    fn an_unchanged_assignment_keeps_its_generation() {
        let t = topics(&[("in", 5)]);
        let a = assign(&t, 2, None);
        let b = assign(&t, 2, Some(&a));
        assert_eq!(a, b);
    }

    #[test]
    fn zero_workers_own_nothing_and_more_workers_than_partitions_idle() {
        let t = topics(&[("in", 2)]);
        assert!(assign(&t, 0, None).workers.is_empty());
        assert_eq!(loads(&assign(&t, 4, None)), [1, 1, 0, 0]);
    }

    #[test]
    fn new_partitions_go_to_the_least_loaded_workers() {
        let before = assign(&topics(&[("in", 4)]), 2, None);
        let after = assign(&topics(&[("in", 6)]), 2, Some(&before));
        assert_eq!(moved(&before, &after), 0);
        assert_eq!(loads(&after), [3, 3]);
    }

    fn topics_strategy() -> impl Strategy<Value = BTreeMap<String, i32>> {
        prop::collection::btree_map("[a-c]", 0..9i32, 1..4)
    }

    proptest! {
        #[test]
        fn complete_balanced_and_minimal(
            before_topics in topics_strategy(),
            after_topics in topics_strategy(),
            before_workers in 1u32..6,
            after_workers in 1u32..6,
        ) {
            let before = assign(&before_topics, before_workers, None);
            let after = assign(&after_topics, after_workers, Some(&before));

            // Complete: every partition is owned by exactly one worker.
            let expected: usize = after_topics.values().map(|n| *n as usize).sum();
            let owned: Vec<TopicPartition> = after.workers.iter().flat_map(|w| w.topic_partitions()).collect();
            prop_assert_eq!(owned.len(), expected);
            prop_assert_eq!(owned.iter().collect::<BTreeSet<_>>().len(), expected);
            prop_assert_eq!(after.workers.len(), after_workers as usize);

            // Balanced.
            let l = loads(&after);
            prop_assert!(l.iter().max().unwrap() - l.iter().min().unwrap() <= 1, "{:?}", l);

            // Minimal movement.
            prop_assert_eq!(moved(&before, &after), minimal_moves(&after_topics, after_workers as usize, &before));

            // Generation moves only on change.
            prop_assert_eq!(after.generation == before.generation, after.workers == before.workers);
        }
    }
}
