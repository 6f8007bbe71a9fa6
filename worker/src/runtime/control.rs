//! What the processing loop shares with the admin API: the status it publishes, the savepoint
//! results, readiness, the metrics, and the commands the API hands it. The loop reads commands
//! between records; the API never touches the loop's state directly.

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex, OnceLock, atomic::AtomicBool, mpsc},
};

use oxbow_crds::admin::{SavepointRequest, SavepointResult, WorkerState, WorkerStatus};

use crate::{checkpoint::store::CheckpointStore, metrics::Metrics};

/// A command from the API to the processing loop.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    /// Take a savepoint; with `stop`, process nothing afterwards.
    Savepoint(SavepointRequest),
}

/// Why a command could not be handed to the processing loop.
#[derive(Debug, thiserror::Error)]
#[error("the worker is shutting down")]
pub struct ShuttingDown;

/// What the API and the processing loop share.
#[derive(Debug)]
pub struct Shared {
    /// The loop's latest status.
    pub status: Mutex<WorkerStatus>,
    /// Savepoint results by id: in progress, completed or failed.
    pub savepoints: Mutex<BTreeMap<String, SavepointResult>>,
    /// Set once restored and processing; cleared after a stop-with-savepoint.
    pub ready: AtomicBool,
    /// The worker's metrics.
    pub metrics: Arc<Metrics>,
    commands: Mutex<mpsc::Sender<Command>>,
    /// The job's checkpoint store, for disposing of savepoints.
    store: OnceLock<CheckpointStore>,
}

impl Shared {
    /// State for a worker of `ordinal`; commands arrive on the returned receiver.
    pub fn new(ordinal: u32) -> (Arc<Self>, mpsc::Receiver<Command>) {
        let (tx, rx) = mpsc::channel();
        let shared = Shared {
            status: Mutex::new(WorkerStatus::new(ordinal, WorkerState::Starting)),
            savepoints: Mutex::new(BTreeMap::new()),
            ready: AtomicBool::new(false),
            metrics: Arc::new(Metrics::default()),
            store: OnceLock::new(),
            commands: Mutex::new(tx),
        };
        (Arc::new(shared), rx)
    }

    /// Gives the API the job's checkpoint store (for savepoint disposal).
    pub fn set_store(&self, store: CheckpointStore) {
        let _ = self.store.set(store);
    }

    /// The job's checkpoint store, once set.
    pub fn store(&self) -> Option<&CheckpointStore> {
        self.store.get()
    }

    /// Records a savepoint's progress.
    pub fn set_savepoint(&self, result: SavepointResult) {
        if let Ok(mut map) = self.savepoints.lock() {
            map.insert(result.id.clone(), result);
        }
    }

    /// A savepoint's progress, if this worker has seen the request.
    pub fn savepoint(&self, id: &str) -> Option<SavepointResult> {
        self.savepoints.lock().ok()?.get(id).cloned()
    }

    /// Hands a command to the processing loop.
    pub fn send(&self, command: Command) -> Result<(), ShuttingDown> {
        self.commands
            .lock()
            .map_err(|_| ShuttingDown)?
            .send(command)
            .map_err(|_| ShuttingDown)
    }
}

/// The admin API's side of a running worker, as the processing loop sees it.
#[derive(Debug, Clone, Copy)]
pub struct Control<'a> {
    /// What the API reads.
    pub shared: &'a Shared,
    /// What the API asks.
    pub commands: &'a mpsc::Receiver<Command>,
}
