//! The task snapshot format: a 6-byte header (magic `OXBS`, format version as u16 LE) followed
//! by a zstd frame holding the postcard-encoded state.

use serde::{Serialize, de::DeserializeOwned};

const MAGIC: &[u8; 4] = b"OXBS";
/// Version of the snapshot format written by this build. Version 1 held the processing time of
/// the last record (no longer part of the state: idleness is measured by the process that
/// runs the task); version 2 holds the shuffle stage's upstream progress instead; version 3
/// adds the shape of the window state.
pub const FORMAT_VERSION: u16 = 3;
const ZSTD_LEVEL: i32 = 1;

/// Why a snapshot could not be written or read.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    /// Not an Oxbow snapshot.
    #[error("failed to read the snapshot: it does not start with the Oxbow snapshot header")]
    NotASnapshot,
    /// Written by a newer format.
    #[error(
        "failed to read the snapshot: format version {0} is newer than this worker's ({FORMAT_VERSION}); upgrade the worker image"
    )]
    UnsupportedVersion(u16),
    /// Compression failed.
    #[error("failed to {0} the snapshot: {1}")]
    Compression(&'static str, #[source] std::io::Error),
    /// Encoding failed.
    #[error("failed to {0} the snapshot state: {1}")]
    Encoding(&'static str, #[source] postcard::Error),
    /// The snapshot's window state cannot be restored into this pipeline.
    #[error(
        "failed to restore the snapshot: {reason}. The snapshot holds a {snapshot}; the pipeline has a {pipeline}. Set spec.upgrade.discardIncompatibleState: true to start this state empty"
    )]
    IncompatibleShape {
        /// What differs.
        reason: String,
        /// The snapshot's shape.
        snapshot: String,
        /// The pipeline's shape.
        pipeline: String,
    },
}

/// Encodes `state` as a snapshot.
pub fn encode<T: Serialize>(state: &T) -> Result<Vec<u8>, SnapshotError> {
    let body = postcard::to_allocvec(state).map_err(|e| SnapshotError::Encoding("encode", e))?;
    let mut out = Vec::with_capacity(body.len() / 3 + 16);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    let compressed = zstd::bulk::compress(&body, ZSTD_LEVEL)
        .map_err(|e| SnapshotError::Compression("compress", e))?;
    out.extend_from_slice(&compressed);
    Ok(out)
}

/// Decodes a snapshot written by [`encode`] in the current format.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, SnapshotError> {
    let (_, body) = open(bytes)?;
    decode_body(&body)
}

/// The format version of a snapshot and its decompressed body, for readers of older formats.
pub fn open(bytes: &[u8]) -> Result<(u16, Vec<u8>), SnapshotError> {
    let (header, frame) = bytes
        .split_at_checked(6)
        .ok_or(SnapshotError::NotASnapshot)?;
    if &header[..4] != MAGIC {
        return Err(SnapshotError::NotASnapshot);
    }
    let version = u16::from_le_bytes([header[4], header[5]]);
    if version > FORMAT_VERSION {
        return Err(SnapshotError::UnsupportedVersion(version));
    }
    let body =
        zstd::stream::decode_all(frame).map_err(|e| SnapshotError::Compression("decompress", e))?;
    Ok((version, body))
}

/// Decodes the body of a snapshot [`open`]ed.
pub fn decode_body<T: DeserializeOwned>(body: &[u8]) -> Result<T, SnapshotError> {
    postcard::from_bytes(body).map_err(|e| SnapshotError::Encoding("decode", e))
}
