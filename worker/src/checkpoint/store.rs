//! The job's object storage: snapshots and manifests under the layout of
//! [`oxbow_crds::checkpoint`], written create-only so that nothing is ever overwritten.

use std::sync::Arc;

use bytes::Bytes;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload, path::Path};
use oxbow_crds::checkpoint::JobStorage;

/// Why a storage operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// `checkpoint.storage` is not a URL object_store understands.
    #[error("failed to open checkpoint storage {url:?}: {source}")]
    Open {
        /// The URL.
        url: String,
        /// Why.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A write failed (the store is unreachable, denies access, ...).
    #[error("failed to write {url}: {source}")]
    Write {
        /// The object.
        url: String,
        /// Why.
        #[source]
        source: object_store::Error,
    },
    /// The object already exists: a key was reused, which the layout rules out.
    #[error("refusing to overwrite {url}: snapshots are written once")]
    Exists {
        /// The object.
        url: String,
    },
    /// The store did not answer in time.
    #[error("checkpoint storage did not answer within {after:?} while accessing {url}")]
    Timeout {
        /// The object or prefix.
        url: String,
        /// The time allowed.
        after: std::time::Duration,
    },
    /// A read failed.
    #[error("failed to read {url}: {source}")]
    Read {
        /// The object.
        url: String,
        /// Why.
        #[source]
        source: object_store::Error,
    },
}

impl StoreError {
    /// Whether retrying may help (the store was unreachable), as opposed to a configuration
    /// or data problem.
    pub fn is_transient(&self) -> bool {
        match self {
            StoreError::Timeout { .. } => true,
            StoreError::Write { source, .. } | StoreError::Read { source, .. } => !matches!(
                source,
                object_store::Error::NotFound { .. }
                    | object_store::Error::PermissionDenied { .. }
                    | object_store::Error::Unauthenticated { .. }
                    | object_store::Error::InvalidPath { .. }
                    | object_store::Error::NotSupported { .. }
            ),
            StoreError::Open { .. } | StoreError::Exists { .. } => false,
        }
    }
}

/// One job's checkpoint storage.
#[derive(Clone, Debug)]
pub struct CheckpointStore {
    store: Arc<dyn ObjectStore>,
    root: Path,
    layout: JobStorage,
    timeout: std::time::Duration,
}

/// How long one storage operation may take unless told otherwise.
const DEFAULT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

impl CheckpointStore {
    /// Opens `storage_url` for `namespace/job`, configured from the environment (`AWS_*`,
    /// `GOOGLE_*`, `AZURE_*` variables, as object_store reads them).
    pub fn open(storage_url: &str, namespace: &str, job: &str) -> Result<Self, StoreError> {
        let layout = JobStorage::new(storage_url, namespace, job);
        let open_err = |source: Box<dyn std::error::Error + Send + Sync>| StoreError::Open {
            url: storage_url.to_owned(),
            source,
        };
        let url = url::Url::parse(layout.root()).map_err(|e| open_err(Box::new(e)))?;
        let (store, root) = object_store::parse_url_opts(&url, std::env::vars())
            .map_err(|e| open_err(Box::new(e)))?;
        Ok(Self::with_store(Arc::from(store), root, layout))
    }

    /// A store over an existing object store (tests use an in-memory one).
    pub fn with_store(store: Arc<dyn ObjectStore>, root: Path, layout: JobStorage) -> Self {
        CheckpointStore {
            store,
            root,
            layout,
            timeout: DEFAULT_TIMEOUT,
        }
    }

    /// Bounds every operation (including object_store's own retries) by `timeout`, so that an
    /// unreachable store fails a checkpoint in time rather than stalling the worker.
    pub fn with_timeout(mut self, timeout: std::time::Duration) -> Self {
        self.timeout = timeout;
        self
    }

    async fn bounded<T>(
        &self,
        key: &str,
        operation: impl std::future::Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        tokio::time::timeout(self.timeout, operation)
            .await
            .unwrap_or_else(|_| {
                Err(StoreError::Timeout {
                    url: self.url(key),
                    after: self.timeout,
                })
            })
    }

    /// The URL of the object at `key` (relative to the job root).
    pub fn url(&self, key: &str) -> String {
        self.layout.url(key)
    }

    /// The layout.
    pub fn layout(&self) -> &JobStorage {
        &self.layout
    }

    fn path(&self, key: &str) -> Path {
        key.split('/')
            .filter(|s| !s.is_empty())
            .fold(self.root.clone(), |p, part| p.join(part))
    }

    /// Writes a new object; fails if `key` exists.
    pub async fn put_new(&self, key: &str, bytes: Vec<u8>) -> Result<(), StoreError> {
        self.bounded(key, self.put_new_unbounded(key, bytes)).await
    }

    async fn put_new_unbounded(&self, key: &str, bytes: Vec<u8>) -> Result<(), StoreError> {
        let options = PutOptions {
            mode: PutMode::Create,
            ..Default::default()
        };
        match self
            .store
            .put_opts(&self.path(key), PutPayload::from(bytes), options)
            .await
        {
            Ok(_) => Ok(()),
            Err(object_store::Error::AlreadyExists { .. }) => {
                Err(StoreError::Exists { url: self.url(key) })
            }
            Err(source) => Err(StoreError::Write {
                url: self.url(key),
                source,
            }),
        }
    }

    /// Keys (relative to the job root) of the objects under `prefix`.
    pub async fn list(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        self.bounded(prefix, self.list_unbounded(prefix)).await
    }

    async fn list_unbounded(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        use futures_util::TryStreamExt;
        let base = self.path(prefix);
        let objects: Vec<object_store::ObjectMeta> = self
            .store
            .list(Some(&base))
            .try_collect()
            .await
            .map_err(|source| StoreError::Read {
                url: self.url(prefix),
                source,
            })?;
        let root = self.root.as_ref();
        Ok(objects
            .into_iter()
            .map(|o| {
                let full = o.location.as_ref().to_owned();
                full.strip_prefix(root)
                    .map(|k| k.trim_start_matches('/').to_owned())
                    .unwrap_or(full)
            })
            .collect())
    }

    /// Deletes an object; one already gone is fine.
    pub async fn delete(&self, key: &str) -> Result<(), StoreError> {
        self.bounded(key, self.delete_unbounded(key)).await
    }

    async fn delete_unbounded(&self, key: &str) -> Result<(), StoreError> {
        match self.store.delete(&self.path(key)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(source) => Err(StoreError::Write {
                url: self.url(key),
                source,
            }),
        }
    }

    /// Checks that the store answers, by reading an object that need not exist: a worker that
    /// cannot reach its store says so at start rather than at its first checkpoint.
    pub async fn probe(&self) -> Result<(), StoreError> {
        const PROBE: &str = ".oxbow-probe";
        let head = async {
            match self.store.head(&self.path(PROBE)).await {
                Ok(_) | Err(object_store::Error::NotFound { .. }) => Ok(()),
                Err(source) => Err(StoreError::Read {
                    url: self.url(PROBE),
                    source,
                }),
            }
        };
        self.bounded(PROBE, head).await
    }

    /// Reads an object.
    pub async fn get(&self, key: &str) -> Result<Bytes, StoreError> {
        self.bounded(key, self.get_unbounded(key)).await
    }

    async fn get_unbounded(&self, key: &str) -> Result<Bytes, StoreError> {
        let read = |source| StoreError::Read {
            url: self.url(key),
            source,
        };
        self.store
            .get(&self.path(key))
            .await
            .map_err(read)?
            .bytes()
            .await
            .map_err(read)
    }
}
