//! The ConfigMap `<job>-job`: the job file every worker reads at start.

use std::{collections::BTreeMap, fmt::Write as _};

use k8s_openapi::api::core::v1::ConfigMap;
use oxbow_crds::{
    StreamJob,
    jobfile::{JOB_FILE_KEY, JobFile},
};
use sha2::{Digest, Sha256};

use super::{BuildError, meta::Owner, names};

/// The job file exactly as written into the ConfigMap.
///
/// Deterministic: the same job file always gives the same text (maps are ordered), so its hash
/// changes only when the job file does.
pub fn job_file_json(job_file: &JobFile) -> Result<String, BuildError> {
    serde_json::to_string(job_file).map_err(BuildError::SerializeJobFile)
}

/// Lowercase hex SHA-256 of [`job_file_json`]: what the pod template carries in
/// [`super::statefulset::JOB_FILE_HASH_ANNOTATION`], so that the controller can tell which pods
/// started from an older job file.
pub fn job_file_sha256(job_file: &JobFile) -> Result<String, BuildError> {
    Ok(sha256_hex(job_file_json(job_file)?.as_bytes()))
}

fn sha256_hex(bytes: &[u8]) -> String {
    let digest = Sha256::digest(bytes);
    let mut hex = String::with_capacity(2 * digest.len());
    for byte in digest.iter() {
        let _ = write!(hex, "{byte:02x}");
    }
    hex
}

/// The ConfigMap `<job>-job` holding `job_file` under [`JOB_FILE_KEY`].
pub fn config_map(job: &StreamJob, job_file: &JobFile) -> Result<ConfigMap, BuildError> {
    let owner = Owner::of(job)?;
    owner.check_job_file(job_file)?;
    Ok(ConfigMap {
        metadata: owner.object_meta(names::config_map(&owner.name)),
        data: Some(BTreeMap::from([(
            JOB_FILE_KEY.to_owned(),
            job_file_json(job_file)?,
        )])),
        ..ConfigMap::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::children::fixtures::{job_file, stream_job};

    #[test]
    fn the_worker_reads_back_the_job_file_the_operator_wrote() {
        let cm = config_map(&stream_job(), &job_file()).unwrap();
        assert_eq!(cm.metadata.name.as_deref(), Some("fraud-job"));
        assert_eq!(cm.metadata.namespace.as_deref(), Some("payments"));
        let data = cm.data.unwrap();
        assert_eq!(data.keys().collect::<Vec<_>>(), ["job.json"]);
        assert_eq!(JobFile::from_json(&data["job.json"]).unwrap(), job_file());
    }

    #[test]
    fn the_hash_follows_the_job_file_and_nothing_else() {
        let file = job_file();
        let hash = job_file_sha256(&file).unwrap();
        assert_eq!(hash.len(), 64);
        assert!(
            hash.bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
        );
        assert_eq!(job_file_sha256(&file.clone()).unwrap(), hash);
        let mut moved = file.clone();
        moved.assignment.generation += 1;
        assert_ne!(job_file_sha256(&moved).unwrap(), hash);
        let mut changed = file;
        changed.spec.replicas = 4;
        assert_ne!(job_file_sha256(&changed).unwrap(), hash);
    }

    #[test]
    fn sha256_is_the_standard_one() {
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn another_jobs_file_is_refused() {
        let mut other = job_file();
        other.name = "other".into();
        let err = config_map(&stream_job(), &other).unwrap_err();
        assert_eq!(err.reason(), "JobFileMismatch");
        assert!(err.to_string().contains("payments/other"), "{err}");
    }
}
