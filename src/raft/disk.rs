//! The node's two sled databases and the one place that makes their writes durable.
//!
//! The data directory holds two sled databases: `raft/` (the log, the vote, the node's identity)
//! and `state/` (the state machine). They are separate so that the frequent syncs of the log do
//! not also write out every page the state machine dirtied; the state machine is synced only when
//! openraft may purge the log it was built from (see `state_machine`).
//!
//! sled 0.34's `flush` writes its buffers and calls `sync_file_range`, which starts writeback but
//! does not make data durable on power loss, and concurrent flushes of one database can deadlock.
//! So every flush goes through one thread, the [`Syncer`]: it takes every request queued so far,
//! flushes each database asked for once, then `fdatasync`s that database's data file on a handle
//! of its own (a sync acts on the file, not on the descriptor) and every blob file sled created
//! since the last round, with the blob directory. Each request is answered once a round that
//! began after it has finished, so a caller's earlier writes are durable when `sync` returns;
//! concurrent callers share rounds (group commit).

use std::collections::HashSet;
use std::fs::File;
use std::io;
use std::path::Path;
use std::path::PathBuf;
use std::sync::mpsc;

use tokio::sync::oneshot;

/// The sled database of the log, inside the data directory.
pub const LOG_DIR: &str = "raft";
/// The sled database of the state machine, inside the data directory.
pub const STATE_DIR: &str = "state";

/// Which database a sync is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Target {
    Log,
    State,
}

type Outcome = Result<(), (io::ErrorKind, String)>;
type Request = (Target, oneshot::Sender<Outcome>);

/// Handle to the sync thread. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Syncer {
    requests: mpsc::Sender<Request>,
}

impl Syncer {
    /// Returns once everything written to the log database before the call is on disk.
    pub async fn sync(&self) -> io::Result<()> {
        answer(self.request(Target::Log)?.await)
    }

    /// The same, for the state machine's database.
    pub async fn sync_state(&self) -> io::Result<()> {
        answer(self.request(Target::State)?.await)
    }

    /// [`Syncer::sync`] from a thread that may block (never from an async task).
    pub fn sync_blocking(&self) -> io::Result<()> {
        answer(self.request(Target::Log)?.blocking_recv())
    }

    /// [`Syncer::sync_state`] from a thread that may block (never from an async task).
    pub fn sync_state_blocking(&self) -> io::Result<()> {
        answer(self.request(Target::State)?.blocking_recv())
    }

    fn request(&self, target: Target) -> io::Result<oneshot::Receiver<Outcome>> {
        let (reply, answer) = oneshot::channel();
        self.requests.send((target, reply)).map_err(|_| stopped())?;
        Ok(answer)
    }
}

fn answer(received: Result<Outcome, oneshot::error::RecvError>) -> io::Result<()> {
    match received {
        Ok(Ok(())) => Ok(()),
        Ok(Err((kind, message))) => Err(io::Error::new(kind, message)),
        Err(_) => Err(stopped()),
    }
}

fn stopped() -> io::Error {
    io::Error::other("the sync thread has stopped")
}

/// The opened databases of a data directory.
#[derive(Debug, Clone)]
pub struct Disk {
    pub log: sled::Db,
    pub state: sled::Db,
    pub syncer: Syncer,
    /// The data directory, for error messages.
    pub path: PathBuf,
}

impl Disk {
    /// Opens (creating if needed) both databases in `data_dir`, each with half of `cache_bytes`,
    /// syncs the directories whose entries that created, and starts the sync thread.
    pub fn open(data_dir: &Path, cache_bytes: u64) -> io::Result<Self> {
        let created = !data_dir.exists();
        std::fs::create_dir_all(data_dir)?;
        let (log, log_files) = open_db(&data_dir.join(LOG_DIR), cache_bytes / 2)?;
        let (state, state_files) = open_db(&data_dir.join(STATE_DIR), cache_bytes / 2)?;
        sync_dir(data_dir)?;
        if created && let Some(parent) = data_dir.parent().filter(|p| !p.as_os_str().is_empty()) {
            sync_dir(parent)?;
        }
        let (requests, queue) = mpsc::channel();
        let worker = SyncWorker { log: log_files, state: state_files };
        std::thread::Builder::new().name("switchboard-sync".into()).spawn(move || worker.run(&queue))?;
        Ok(Self { log, state, syncer: Syncer { requests }, path: data_dir.to_owned() })
    }
}

fn open_db(path: &Path, cache_bytes: u64) -> io::Result<(sled::Db, DbFiles)> {
    let db = sled::Config::new()
        .path(path)
        .cache_capacity(cache_bytes)
        .mode(sled::Mode::LowSpace)
        .open()
        .map_err(sled_io)?;
    // sled created its files and directories: make those entries durable too.
    sync_dir(&path.join("blobs"))?;
    sync_dir(path)?;
    File::open(path.join("conf"))?.sync_all()?;
    let files = DbFiles {
        db: db.clone(),
        data_file: File::open(path.join("db"))?,
        blobs: path.join("blobs"),
        synced_blobs: HashSet::new(),
    };
    Ok((db, files))
}

/// What the sync thread holds of one database.
struct DbFiles {
    db: sled::Db,
    data_file: File,
    blobs: PathBuf,
    synced_blobs: HashSet<std::ffi::OsString>,
}

impl DbFiles {
    fn sync(&mut self) -> io::Result<()> {
        self.db.flush().map_err(sled_io)?;
        self.data_file.sync_data()?;
        // Large values live in blob files of their own, written without a sync.
        let mut present = HashSet::new();
        let mut new_blob = false;
        for entry in std::fs::read_dir(&self.blobs)? {
            let name = entry?.file_name();
            if !self.synced_blobs.contains(&name) {
                match File::open(self.blobs.join(&name)) {
                    Ok(blob) => blob.sync_data()?,
                    // sled removed it meanwhile (it was garbage): nothing to make durable.
                    Err(err) if err.kind() == io::ErrorKind::NotFound => continue,
                    Err(err) => return Err(err),
                }
                new_blob = true;
            }
            present.insert(name);
        }
        if new_blob {
            sync_dir(&self.blobs)?;
        }
        self.synced_blobs = present;
        Ok(())
    }
}

struct SyncWorker {
    log: DbFiles,
    state: DbFiles,
}

impl SyncWorker {
    fn run(mut self, queue: &mpsc::Receiver<Request>) {
        while let Ok(first) = queue.recv() {
            let mut waiting = vec![first];
            waiting.extend(queue.try_iter());
            let outcome = |target: Target, files: &mut DbFiles| -> Option<Outcome> {
                waiting.iter().any(|(t, _)| *t == target).then(|| {
                    files.sync().map_err(|err| {
                        tracing::error!(error = %err, database = ?target, "syncing to disk failed");
                        (err.kind(), err.to_string())
                    })
                })
            };
            let log = outcome(Target::Log, &mut self.log);
            let state = outcome(Target::State, &mut self.state);
            for (target, reply) in waiting {
                let result = if target == Target::Log { &log } else { &state };
                let _ = reply.send(result.clone().unwrap_or(Ok(())));
            }
        }
    }
}

/// Makes a directory's entries (files created, renamed or removed in it) durable.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// sled's errors as I/O errors, keeping the kind (a full disk stays `StorageFull`).
pub fn sled_io(err: sled::Error) -> io::Error {
    match err {
        sled::Error::Io(err) => err,
        other => io::Error::other(other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn concurrent_syncs_of_both_databases_all_complete() {
        let dir = tempfile::tempdir().unwrap();
        let disk = Disk::open(&dir.path().join("node"), 1 << 20).unwrap();
        let (log, state) = (disk.log.open_tree("t").unwrap(), disk.state.open_tree("t").unwrap());
        let mut calls = Vec::new();
        for i in 0u32..64 {
            let tree = if i % 2 == 0 { &log } else { &state };
            tree.insert(i.to_be_bytes(), vec![0u8; 300_000]).unwrap();
            let syncer = disk.syncer.clone();
            calls.push(tokio::spawn(async move {
                if i % 2 == 0 { syncer.sync().await } else { syncer.sync_state().await }
            }));
        }
        for call in calls {
            call.await.unwrap().unwrap();
        }
        for db in [LOG_DIR, STATE_DIR] {
            let blobs = dir.path().join("node").join(db).join("blobs");
            assert!(blobs.read_dir().unwrap().count() > 0, "large values went to blobs");
        }
    }
}
