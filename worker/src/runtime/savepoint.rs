//! Savepoints: writing them, and restoring a new generation from one.

use std::collections::BTreeMap;

use oxbow_crds::checkpoint::{
    MANIFEST_FORMAT_VERSION, PartitionSnapshot, SavepointManifest, savepoint_dir,
    savepoint_manifest_key, savepoint_snapshot_key,
};

use super::{RuntimeError, Worker, now_ms};
use crate::engine::Task;

impl Worker {
    /// Every worker manifest of a savepoint, merged by partition.
    pub(super) fn read_savepoint(
        &self,
        path: &str,
    ) -> Result<BTreeMap<(String, i32), PartitionSnapshot>, RuntimeError> {
        let invalid = |reason: String| RuntimeError::Savepoint {
            path: path.to_owned(),
            reason,
        };
        let store = self
            .store
            .as_ref()
            .ok_or_else(|| invalid("the job has no checkpoint.storage".to_owned()))?;
        let id = path
            .trim_end_matches('/')
            .rsplit('/')
            .next()
            .unwrap_or_default();
        if store.url(&savepoint_dir(id)) != path.trim_end_matches('/') {
            return Err(invalid(format!(
                "it is not a savepoint of this job (expected a path under {})",
                store.layout().root()
            )));
        }
        let keys = self.io.block_on(store.list(&savepoint_dir(id)))?;
        let manifests: Vec<&String> = keys.iter().filter(|k| k.ends_with(".json")).collect();
        if manifests.is_empty() {
            return Err(invalid(
                "it has no worker manifests: it does not exist or never completed".to_owned(),
            ));
        }
        let mut partitions = BTreeMap::new();
        for key in manifests {
            let bytes = self.io.block_on(store.get(key))?;
            let manifest: SavepointManifest = serde_json::from_slice(&bytes)
                .map_err(|e| invalid(format!("manifest {key} does not parse: {e}")))?;
            if manifest.format_version > MANIFEST_FORMAT_VERSION {
                return Err(invalid(format!(
                    "manifest {key} has format {}, newer than this worker's",
                    manifest.format_version
                )));
            }
            for p in manifest.partitions {
                partitions.insert((p.topic.clone(), p.partition), p);
            }
        }
        Ok(partitions)
    }

    pub(super) fn task_from_savepoint(
        &self,
        savepoint: &BTreeMap<(String, i32), PartitionSnapshot>,
        topic: &str,
        partition: i32,
    ) -> Result<(Task, Option<i64>), RuntimeError> {
        // A partition the savepoint does not know (a new partition) starts from startingOffsets.
        let Some(p) = savepoint.get(&(topic.to_owned(), partition)) else {
            return Ok((Task::new(self.pipeline_for(topic)), None));
        };
        let task = match &p.snapshot {
            Some(key) => self.task_from_snapshot(key, topic, partition)?,
            None => Task::new(self.pipeline_for(topic)),
        };
        Ok((task, Some(p.next_offset)))
    }

    /// Takes a savepoint with id `id`: a checkpoint (so that the output up to this point is
    /// committed with its offsets), then each task's state written under `savepoints/<id>/`
    /// with a manifest of this worker's partitions and offsets. Returns the savepoint's URL.
    pub fn savepoint(&mut self, id: &str) -> Result<String, RuntimeError> {
        self.checkpoint()?;
        let store = self.store.as_ref().ok_or_else(|| RuntimeError::Savepoint {
            path: id.to_owned(),
            reason: "the job has no checkpoint.storage".to_owned(),
        })?;
        let mut partitions = Vec::new();
        for ((topic, partition), slot) in &self.slots {
            let Some(next_offset) = slot.position else {
                continue;
            };
            let (snapshot, size_bytes) = if !slot.task.needs_snapshot() {
                (None, 0)
            } else {
                let key = savepoint_snapshot_key(id, topic, *partition);
                let bytes = slot
                    .task
                    .snapshot()
                    .map_err(|source| RuntimeError::Snapshot {
                        action: "write the savepoint snapshot",
                        topic: topic.clone(),
                        partition: *partition,
                        source,
                    })?;
                let size = bytes.len() as u64;
                self.io.block_on(store.put_new(&key, bytes))?;
                (Some(key), size)
            };
            partitions.push(PartitionSnapshot {
                topic: topic.clone(),
                partition: *partition,
                next_offset,
                snapshot,
                size_bytes,
            });
        }
        let manifest = SavepointManifest {
            format_version: MANIFEST_FORMAT_VERSION,
            savepoint_id: id.to_owned(),
            ordinal: self.config.ordinal,
            assignment_generation: self.config.job.assignment.generation,
            created_at_ms: now_ms(),
            partitions,
            state_shape: self
                .stages
                .shuffle
                .as_ref()
                .unwrap_or(&self.stages.source)
                .state_shape()
                .cloned(),
        };
        let json = serde_json::to_vec(&manifest).map_err(|e| RuntimeError::Savepoint {
            path: id.to_owned(),
            reason: e.to_string(),
        })?;
        self.io
            .block_on(store.put_new(&savepoint_manifest_key(id, self.config.ordinal), json))?;
        Ok(store.url(&savepoint_dir(id)))
    }
}
