//! [`BranchBuilder`]: the one way a [`Branch`] is made — its Raft node on its storage, its
//! state machine, its peers, its group committer — for a local cluster, a standalone branch and
//! the simulator alike.

use std::hash::{BuildHasher, RandomState};
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::Arc;

use super::group::GroupCommitter;
use super::read::ReadRounds;
use super::{Branch, BranchError, Replica};
use crate::lamport::LamportClock;
use crate::raft::disk_space::DiskSpace;
use crate::raft::durable::{DurableError, DurableStore};
use crate::raft::log_store::LogStore;
use crate::raft::network::{PeerNetworkFactory, Peers};
use crate::raft::state_machine::StateMachineStore;
use crate::raft::{raft_config, NodeId, Raft};

/// Where a branch keeps its log and its state machine.
pub enum Storage {
    /// In memory: lost when the branch stops (`bank run`, tests).
    Memory,
    /// On disk: the log in redb, snapshots as files; the state machine restarts from the
    /// latest snapshot and the log replays after it.
    Durable(DurableStore),
    /// An in-memory log and state machine the caller keeps across restarts (the simulator's
    /// "disk", which outlives a crashed host).
    Kept {
        log: LogStore,
        state_machine: StateMachineStore,
    },
}

/// Builds one [`Branch`].
pub struct BranchBuilder {
    id: NodeId,
    peers: Peers,
    storage: Storage,
    cluster_name: String,
    elections: bool,
    origin: Option<u64>,
    snapshot_every: Option<u64>,
    logs_kept_after_snapshot: Option<u64>,
    unsafe_local_reads: bool,
}

/// Why a branch could not be built.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error(transparent)]
    Storage(#[from] DurableError),
    #[error("raft: {0}")]
    Raft(BranchError),
}

// By hand, not `#[from]`: the message shows the cause, so it is not also its `source()`.
impl From<BranchError> for BuildError {
    fn from(error: BranchError) -> Self {
        BuildError::Raft(error)
    }
}

impl BranchBuilder {
    /// Branch `id`, reaching its peers through `peers`, in memory, standing for election.
    pub fn new(id: NodeId, peers: Peers) -> BranchBuilder {
        BranchBuilder {
            id,
            peers,
            storage: Storage::Memory,
            cluster_name: "bank".to_string(),
            elections: true,
            origin: None,
            snapshot_every: None,
            logs_kept_after_snapshot: None,
            unsafe_local_reads: false,
        }
    }

    pub fn storage(mut self, storage: Storage) -> Self {
        self.storage = storage;
        self
    }

    /// The Raft cluster's name (logs and metrics of openraft).
    pub fn cluster_name(mut self, name: &str) -> Self {
        self.cluster_name = name.to_string();
        self
    }

    /// Whether the branch stands for election from the start (a rejoining branch does not,
    /// until its term has passed its floor: [`Branch::set_elections`]).
    pub fn elections(mut self, enabled: bool) -> Self {
        self.elections = enabled;
        self
    }

    /// Request ids start from `origin`, which must differ between any two incarnations of any
    /// branches of one cluster. The simulator derives it from its seed, so that a run is
    /// reproducible; by default it is drawn at random.
    pub fn origin(mut self, origin: u64) -> Self {
        self.origin = Some(origin);
        self
    }

    /// A snapshot every `logs` applied entries, keeping `kept` entries behind it (the
    /// simulator draws both; the defaults are [`crate::raft::SNAPSHOT_EVERY_LOGS`] and
    /// [`crate::raft::LOGS_KEPT_AFTER_SNAPSHOT`]).
    pub fn snapshots(mut self, logs: u64, kept: u64) -> Self {
        self.snapshot_every = Some(logs);
        self.logs_kept_after_snapshot = Some(kept);
        self
    }

    /// Breaks the branch on purpose: reads skip the read index and serve whatever the local
    /// replica holds (stale after a partition or on a lagging follower). Only for showing that
    /// the simulator catches it.
    pub fn unsafe_local_reads(mut self) -> Self {
        self.unsafe_local_reads = true;
        self
    }

    /// Creates the Raft node on its storage and starts the branch's group committer.
    pub async fn build(self) -> Result<Branch, BuildError> {
        let id = self.id;
        let mut config = raft_config(&self.cluster_name).map_err(BranchError::raft)?;
        config.enable_elect = self.elections;
        if let Some(logs) = self.snapshot_every {
            config.snapshot_policy = openraft::SnapshotPolicy::LogsSinceLast(logs);
        }
        if let Some(kept) = self.logs_kept_after_snapshot {
            config.max_in_snapshot_log_to_keep = kept;
        }
        let config = Arc::new(config);
        let lamport = Arc::new(LamportClock::new());
        let network = PeerNetworkFactory {
            id,
            peers: self.peers.clone(),
            lamport: lamport.clone(),
        };
        let space = match &self.storage {
            Storage::Memory => DiskSpace::unlimited(),
            Storage::Durable(store) => store.disk_space().clone(),
            Storage::Kept { log, .. } => log.disk_space().clone(),
        };
        let (raft, state_machine) = match self.storage {
            Storage::Memory => {
                let state_machine = StateMachineStore::default();
                let log = LogStore::default();
                let raft = Raft::new(id, config, network, log, state_machine.clone()).await;
                (raft, state_machine)
            }
            Storage::Durable(store) => {
                let state_machine = StateMachineStore::restore(store.clone())?;
                let log = store.log_store();
                let raft = Raft::new(id, config, network, log, state_machine.clone()).await;
                (raft, state_machine)
            }
            Storage::Kept { log, state_machine } => {
                let raft = Raft::new(id, config, network, log, state_machine.clone()).await;
                (raft, state_machine)
            }
        };
        let raft = raft.map_err(BranchError::raft)?;
        let origin = self.origin.unwrap_or_else(|| random_origin(id));
        let replica = Replica {
            id,
            raft,
            state_machine,
            peers: self.peers,
            vote_guard: Arc::default(),
            origin,
            sequence: Arc::new(AtomicU64::new(0)),
            unsafe_local_reads: self.unsafe_local_reads,
            read_rounds: Arc::new(ReadRounds::new()),
            lamport,
            space,
            elections_wanted: Arc::new(AtomicBool::new(self.elections)),
        };
        replica.watch_disk();
        Ok(Branch {
            id,
            committer: Arc::new(GroupCommitter::start(replica.clone())),
            replica,
            members: Arc::default(),
        })
    }
}

/// A request-id origin for a new incarnation of branch `id`. RandomState is seeded from the
/// OS's randomness; mixing in the clock and the process id keeps two incarnations apart even
/// if a platform seeds it weakly.
fn random_origin(id: NodeId) -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    RandomState::new().hash_one((id, nanos, std::process::id()))
}
