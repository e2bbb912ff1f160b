//! The node's sled database and the one place that makes its writes durable.
//!
//! sled 0.34's `flush` writes its buffers and calls `sync_file_range`, which starts writeback but
//! does not make data durable on power loss, and concurrent flushes can deadlock. So every flush
//! goes through one thread, the [`Syncer`]: it takes every sync request queued so far, flushes
//! sled once, then `fdatasync`s sled's data file on a handle of its own (a sync acts on the
//! file, not on the descriptor) and every blob file sled created since the last round, with the
//! blob directory. Each request is answered once a round that began after it has finished, so a
//! caller's earlier writes are durable when its `sync` returns. Concurrent callers share rounds
//! (group commit).

use std::collections::HashSet;
use std::fs::File;
use std::io;
use std::path::Path;
use std::path::PathBuf;
use std::sync::mpsc;

use tokio::sync::oneshot;

/// The sled directory inside the data directory.
pub const SLED_DIR: &str = "raft";

type Reply = oneshot::Sender<Result<(), (io::ErrorKind, String)>>;

/// Handle to the sync thread. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Syncer {
    requests: mpsc::Sender<Reply>,
}

impl Syncer {
    /// Returns once everything written to the database before the call is on disk.
    pub async fn sync(&self) -> io::Result<()> {
        answer(self.request()?.await)
    }

    /// The same, from a thread that may block (never from an async task).
    pub fn sync_blocking(&self) -> io::Result<()> {
        answer(self.request()?.blocking_recv())
    }

    fn request(&self) -> io::Result<Answer> {
        let (reply, answer) = oneshot::channel();
        self.requests.send(reply).map_err(|_| stopped())?;
        Ok(answer)
    }
}

type Answer = oneshot::Receiver<Result<(), (io::ErrorKind, String)>>;

fn answer(received: Result<Result<(), (io::ErrorKind, String)>, oneshot::error::RecvError>) -> io::Result<()> {
    match received {
        Ok(Ok(())) => Ok(()),
        Ok(Err((kind, message))) => Err(io::Error::new(kind, message)),
        Err(_) => Err(stopped()),
    }
}

fn stopped() -> io::Error {
    io::Error::other("the sync thread has stopped")
}

/// The opened database of a data directory.
#[derive(Debug, Clone)]
pub struct Disk {
    pub db: sled::Db,
    pub syncer: Syncer,
    /// The sled directory, for error messages.
    pub path: PathBuf,
}

impl Disk {
    /// Opens (creating if needed) the database in `data_dir`, syncs the directories whose entries
    /// that created, and starts the sync thread.
    pub fn open(data_dir: &Path, cache_bytes: u64) -> io::Result<Self> {
        let created = !data_dir.exists();
        std::fs::create_dir_all(data_dir)?;
        let path = data_dir.join(SLED_DIR);
        let db = sled::Config::new()
            .path(&path)
            .cache_capacity(cache_bytes)
            .mode(sled::Mode::LowSpace)
            .open()
            .map_err(sled_io)?;
        // sled created its files and directories: make those entries durable too.
        sync_dir(&path.join("blobs"))?;
        sync_dir(&path)?;
        sync_dir(data_dir)?;
        if created && let Some(parent) = data_dir.parent().filter(|p| !p.as_os_str().is_empty()) {
            sync_dir(parent)?;
        }
        File::open(path.join("conf"))?.sync_all()?;
        let data_file = File::open(path.join("db"))?;
        let (requests, queue) = mpsc::channel();
        let worker = SyncWorker { db: db.clone(), data_file, blobs: path.join("blobs"), synced_blobs: HashSet::new() };
        std::thread::Builder::new().name("switchboard-sync".into()).spawn(move || worker.run(&queue))?;
        Ok(Self { db, syncer: Syncer { requests }, path })
    }
}

struct SyncWorker {
    db: sled::Db,
    data_file: File,
    blobs: PathBuf,
    synced_blobs: HashSet<std::ffi::OsString>,
}

impl SyncWorker {
    fn run(mut self, queue: &mpsc::Receiver<Reply>) {
        while let Ok(first) = queue.recv() {
            let mut waiting = vec![first];
            waiting.extend(queue.try_iter());
            let result = self.sync_once().map_err(|err| (err.kind(), err.to_string()));
            if let Err((_, message)) = &result {
                tracing::error!(error = %message, "syncing the database to disk failed");
            }
            for reply in waiting {
                let _ = reply.send(result.clone());
            }
        }
    }

    fn sync_once(&mut self) -> io::Result<()> {
        self.db.flush().map_err(sled_io)?;
        self.data_file.sync_data()?;
        // Large values live in blob files of their own, written without a sync.
        let mut present = HashSet::new();
        let mut new_blob = false;
        for entry in std::fs::read_dir(&self.blobs)? {
            let name = entry?.file_name();
            if !self.synced_blobs.contains(&name) {
                File::open(self.blobs.join(&name))?.sync_data()?;
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
    async fn concurrent_syncs_all_complete() {
        let dir = tempfile::tempdir().unwrap();
        let disk = Disk::open(&dir.path().join("node"), 1 << 20).unwrap();
        let tree = disk.db.open_tree("t").unwrap();
        let mut calls = Vec::new();
        for i in 0u32..64 {
            tree.insert(i.to_be_bytes(), vec![0u8; 300_000]).unwrap();
            calls.push(tokio::spawn({
                let syncer = disk.syncer.clone();
                async move { syncer.sync().await }
            }));
        }
        for call in calls {
            call.await.unwrap().unwrap();
        }
        assert!(dir.path().join("node/raft/blobs").read_dir().unwrap().count() > 0, "large values went to blobs");
    }
}
