//! Checkpoint and savepoint layout in object storage, and the offset metadata that ties a
//! committed Kafka offset to the snapshot it belongs with.
//!
//! ```text
//! <checkpoint.storage>/<namespace>/<job>/
//!   state/<topic>/<partition>/<checkpoint-id:016x>-<writer>.snap   checkpoint snapshots, never overwritten
//!   savepoints/<savepoint-id>/<topic>/<partition>.snap              savepoint snapshots
//!   savepoints/<savepoint-id>/worker-<ordinal>.json                 one manifest per worker
//! ```
//!
//! A checkpoint snapshot counts only once the Kafka transaction that commits its partition's
//! offset, with [`OffsetMetadata`] naming it, has committed. A savepoint counts once every worker
//! that owned partitions wrote its manifest.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Version of the manifest format.
pub const MANIFEST_FORMAT_VERSION: u32 = 1;

/// Kafka's default `offset.metadata.max.bytes`; metadata must stay below it.
pub const MAX_OFFSET_METADATA_BYTES: usize = 4096;

/// The storage root of one job.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JobStorage {
    root: String,
}

impl JobStorage {
    /// The root of `namespace/job` under the `checkpoint.storage` URL.
    pub fn new(storage_url: &str, namespace: &str, job: &str) -> Self {
        Self {
            root: format!("{}/{namespace}/{job}", storage_url.trim_end_matches('/')),
        }
    }

    /// URL of the job's root.
    pub fn root(&self) -> &str {
        &self.root
    }

    /// URL of an object given its key relative to the root.
    pub fn url(&self, key: &str) -> String {
        format!("{}/{key}", self.root)
    }

    /// URL of a savepoint directory.
    pub fn savepoint_url(&self, savepoint_id: &str) -> String {
        self.url(&savepoint_dir(savepoint_id))
    }
}

/// Key of a checkpoint snapshot, relative to the job root.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnapshotKey {
    pub topic: String,
    pub partition: i32,
    pub checkpoint_id: u64,
    /// Identifies the writing process (ordinal and start), so that two incarnations of a
    /// worker never write the same key.
    pub writer: String,
}

impl SnapshotKey {
    /// The relative key, `state/<topic>/<partition>/<id:016x>-<writer>.snap`.
    pub fn key(&self) -> String {
        format!(
            "state/{}/{}/{:016x}-{}.snap",
            self.topic, self.partition, self.checkpoint_id, self.writer
        )
    }

    /// Parses a key written by [`SnapshotKey::key`].
    pub fn parse(key: &str) -> Option<Self> {
        let rest = key.strip_prefix("state/")?.strip_suffix(".snap")?;
        let mut parts = rest.rsplitn(3, '/');
        let file = parts.next()?;
        let partition = parts.next()?.parse().ok()?;
        let topic = parts.next()?;
        let (id, writer) = file.split_once('-')?;
        if id.len() != 16 || writer.is_empty() || topic.is_empty() {
            return None;
        }
        Some(Self {
            topic: topic.to_owned(),
            partition,
            checkpoint_id: u64::from_str_radix(id, 16).ok()?,
            writer: writer.to_owned(),
        })
    }
}

/// Directory of a savepoint, relative to the job root.
pub fn savepoint_dir(savepoint_id: &str) -> String {
    format!("savepoints/{savepoint_id}")
}

/// Key of a savepoint snapshot, relative to the job root.
pub fn savepoint_snapshot_key(savepoint_id: &str, topic: &str, partition: i32) -> String {
    format!("savepoints/{savepoint_id}/{topic}/{partition}.snap")
}

/// Key of a worker's savepoint manifest, relative to the job root.
pub fn savepoint_manifest_key(savepoint_id: &str, ordinal: u32) -> String {
    format!("savepoints/{savepoint_id}/worker-{ordinal}.json")
}

/// What a worker wrote for a savepoint.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct SavepointManifest {
    /// [`MANIFEST_FORMAT_VERSION`].
    pub format_version: u32,
    pub savepoint_id: String,
    /// Writing worker.
    pub ordinal: u32,
    /// Assignment generation at the time.
    pub assignment_generation: i64,
    /// Completion time, epoch milliseconds.
    pub created_at_ms: i64,
    /// One entry per partition the worker owned.
    pub partitions: Vec<PartitionSnapshot>,
    /// The shape of the window state in its snapshots (each snapshot also carries it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state_shape: Option<crate::state_shape::StateShape>,
}

/// A partition's state at a consistent point.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct PartitionSnapshot {
    pub topic: String,
    pub partition: i32,
    /// Next offset to consume after restoring the snapshot.
    pub next_offset: i64,
    /// Key of the snapshot relative to the job root; `None` for a task with empty state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<String>,
    /// Size of the snapshot.
    #[serde(default)]
    pub size_bytes: u64,
}

/// The metadata committed with each partition's offset: the assignment generation and the
/// restore request of the committing worker, and which snapshot goes with it.
///
/// The restore request tells a starting worker whether the committed offsets are its own
/// request's progress (a restart: continue from them) or older (honour the request: restore as
/// the job file says). Metadata of format 1 carries no request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OffsetMetadata {
    /// Assignment generation of the committing worker.
    pub generation: i64,
    /// The job file's [`restore_request`](crate::jobfile::JobFile::restore_request) the
    /// committing worker ran under; `None` in format 1 and for job files without one.
    pub restore_request: Option<String>,
    /// Key (relative to the job root) of the snapshot holding the state at this offset;
    /// `None` when the task's state was empty.
    pub snapshot: Option<String>,
}

const METADATA_PREFIX_V1: &str = "oxbow1:g";
const METADATA_PREFIX: &str = "oxbow2:g";

impl OffsetMetadata {
    /// Encodes as `oxbow2:g<generation>:r<request>:<key>` (request and key empty when absent),
    /// or in format 1, `oxbow1:g<generation>:<key>`, without a request.
    pub fn encode(&self) -> String {
        let key = self.snapshot.as_deref().unwrap_or("");
        match &self.restore_request {
            Some(request) => format!("{METADATA_PREFIX}{}:r{request}:{key}", self.generation),
            None => format!("{METADATA_PREFIX_V1}{}:{key}", self.generation),
        }
    }

    /// Decodes metadata written by [`OffsetMetadata::encode`] (either format). Metadata written
    /// by another client (or none) is an error, so that a group shared by mistake is noticed.
    pub fn decode(metadata: &str) -> Result<Self, ForeignMetadata> {
        let foreign = || ForeignMetadata(metadata.to_owned());
        let (rest, restore_request) = match metadata.strip_prefix(METADATA_PREFIX) {
            Some(rest) => {
                let (generation, rest) = rest.split_once(":r").ok_or_else(foreign)?;
                let (request, key) = rest.split_once(':').ok_or_else(foreign)?;
                ((generation, key), Some(request.to_owned()))
            }
            None => {
                let rest = metadata
                    .strip_prefix(METADATA_PREFIX_V1)
                    .ok_or_else(foreign)?;
                (rest.split_once(':').ok_or_else(foreign)?, None)
            }
        };
        let (generation, key) = rest;
        Ok(OffsetMetadata {
            generation: generation.parse().map_err(|_| foreign())?,
            restore_request,
            snapshot: (!key.is_empty()).then(|| key.to_owned()),
        })
    }
}

/// Offset metadata that Oxbow did not write.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub struct ForeignMetadata(pub String);

impl fmt::Display for ForeignMetadata {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "committed offset metadata {:?} was not written by Oxbow; is another application using the job's consumer group?",
            self.0
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn layout_is_rooted_per_job() {
        let s = JobStorage::new("s3://bucket/oxbow/", "prod", "fraud");
        assert_eq!(s.root(), "s3://bucket/oxbow/prod/fraud");
        assert_eq!(
            s.savepoint_url("sp-7"),
            "s3://bucket/oxbow/prod/fraud/savepoints/sp-7"
        );
        assert_eq!(
            savepoint_manifest_key("sp-7", 2),
            "savepoints/sp-7/worker-2.json"
        );
        assert_eq!(
            savepoint_snapshot_key("sp-7", "in", 3),
            "savepoints/sp-7/in/3.snap"
        );
    }

    #[test]
    fn manifests_round_trip() {
        let m = SavepointManifest {
            format_version: MANIFEST_FORMAT_VERSION,
            savepoint_id: "sp-1".into(),
            ordinal: 1,
            assignment_generation: 4,
            created_at_ms: 1_700_000_000_000,
            partitions: vec![PartitionSnapshot {
                topic: "in".into(),
                partition: 2,
                next_offset: 1234,
                snapshot: Some(savepoint_snapshot_key("sp-1", "in", 2)),
                size_bytes: 99,
            }],
            state_shape: None,
        };
        let json = serde_json::to_string(&m).unwrap();
        assert!(json.contains("\"nextOffset\":1234"), "{json}");
        assert_eq!(serde_json::from_str::<SavepointManifest>(&json).unwrap(), m);
    }

    #[test]
    fn foreign_metadata_is_refused() {
        assert_eq!(
            OffsetMetadata::decode("oxbow1:g3:"),
            Ok(OffsetMetadata {
                generation: 3,
                restore_request: None,
                snapshot: None
            })
        );
        assert_eq!(
            OffsetMetadata::decode("oxbow2:g3:r:k"),
            Ok(OffsetMetadata {
                generation: 3,
                restore_request: Some(String::new()),
                snapshot: Some("k".into())
            })
        );
        assert!(OffsetMetadata::decode("oxbow2:g3:k").is_err());
        assert!(OffsetMetadata::decode("").is_err());
        assert!(OffsetMetadata::decode("oxbow1:gx:key").is_err());
        assert!(
            OffsetMetadata::decode("{\"flink\":1}")
                .unwrap_err()
                .to_string()
                .contains("another application")
        );
    }

    proptest! {
        #[test]
        fn snapshot_keys_round_trip(
            topic in "[a-zA-Z0-9._-]{1,60}",
            partition in 0i32..100_000,
            checkpoint_id: u64,
            writer in "[a-z0-9]{1,20}",
            restore_request in proptest::option::of("[0-9a-f]{16}"),
        ) {
            let key = SnapshotKey { topic, partition, checkpoint_id, writer };
            prop_assert_eq!(SnapshotKey::parse(&key.key()), Some(key.clone()));
            let metadata = OffsetMetadata {
                generation: i64::MAX,
                restore_request,
                snapshot: Some(key.key()),
            };
            let encoded = metadata.encode();
            prop_assert!(encoded.len() < MAX_OFFSET_METADATA_BYTES);
            prop_assert_eq!(OffsetMetadata::decode(&encoded), Ok(metadata));
        }
    }
}
