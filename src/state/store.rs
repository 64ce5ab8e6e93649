//! Where checkpoints live: an `object_store` (a local directory by default, a URL
//! such as `s3://bucket/prefix` when built with the `s3` feature), one folder per
//! pipeline and partition, one sub-folder per checkpoint named by its next offset.
//!
//! A checkpoint's files are written first (each atomically: temporary name, then
//! rename, on a local disk), its `MANIFEST.json` last: a checkpoint without a
//! manifest does not exist. The manifest holds each file's SHA-256, so a torn or
//! corrupt checkpoint is detected on load and the previous one used instead. On a
//! local disk the files and their directory are fsynced before the manifest is
//! written, and the manifest and directories after: a checkpoint that exists survives
//! a power loss, not only a process crash.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use futures::TryStreamExt;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use sha2::{Digest, Sha256};

use super::checkpoint::{Files, Manifest, FORMAT_VERSION};
use crate::error::{Error, Result};

pub const MANIFEST: &str = "MANIFEST.json";
/// Per partition, the newest writer epoch claimed (a decimal number).
pub const WRITER_EPOCH: &str = "WRITER_EPOCH";

/// The checkpoints of one pipeline.
#[derive(Clone)]
pub struct CheckpointStore {
    store: Arc<dyn ObjectStore>,
    root: Path,
    /// Display form of where the store is (for logs and errors).
    pub location: String,
    /// Checkpoints kept per partition (older ones are deleted after a write).
    pub keep: usize,
    /// The directory, when the store is a local disk (fsynced on write).
    local: Option<std::path::PathBuf>,
}

fn cp_err(what: impl std::fmt::Display) -> Error {
    Error::Checkpoint(what.to_string())
}

/// Where a pipeline file's `[checkpoint] dir` points: an object-store URL
/// (`scheme://…`) or an absolute path as written, a relative path under the pipeline
/// file's directory `base` (as every other path in the file). A location given on
/// the command line or in `TICKFLARE_CHECKPOINT_DIR` is used as given instead.
pub fn location_in_file(written: &str, base: &std::path::Path) -> String {
    if written.contains("://") || std::path::Path::new(written).is_absolute() {
        written.to_string()
    } else {
        base.join(written).to_string_lossy().into_owned()
    }
}

impl CheckpointStore {
    /// Opens `dir_or_url` (a directory, created if missing, or an object-store URL)
    /// for `pipeline`.
    pub fn open(dir_or_url: &str, pipeline: &str, keep: usize) -> Result<Self> {
        let mut local = None;
        let (store, root): (Arc<dyn ObjectStore>, Path) = if dir_or_url.contains("://") && !dir_or_url.starts_with("file://") {
            let url = url::Url::parse(dir_or_url).map_err(|e| cp_err(format!("checkpoint URL {dir_or_url:?}: {e}")))?;
            // Credentials, region and endpoint from the environment (`AWS_ACCESS_KEY_ID`,
            // `AWS_SECRET_ACCESS_KEY`, `AWS_REGION`, `AWS_ENDPOINT`, `AWS_ALLOW_HTTP`, …),
            // as the AWS tools read them; without them only instance credentials work.
            let env = std::env::vars().filter(|(k, _)| k.starts_with("AWS_"));
            let (s, p) = object_store::parse_url_opts(&url, env).map_err(|e| {
                cp_err(format!("checkpoint URL {dir_or_url:?}: {e} (S3-compatible stores need the `s3` feature, on by default)"))
            })?;
            (Arc::from(s), p)
        } else {
            let dir = dir_or_url.strip_prefix("file://").unwrap_or(dir_or_url);
            std::fs::create_dir_all(dir).map_err(|e| cp_err(format!("creating checkpoint directory {dir:?}: {e}")))?;
            let fs = object_store::local::LocalFileSystem::new_with_prefix(dir)
                .map_err(|e| cp_err(format!("checkpoint directory {dir:?}: {e}")))?;
            local = Some(std::path::PathBuf::from(dir));
            (Arc::new(fs), Path::default())
        };
        Ok(CheckpointStore { store, root: root.clone().join(pipeline), location: dir_or_url.to_string(), keep: keep.max(1), local })
    }

    /// A store on an object store the caller built (settings that are not in the
    /// environment, another kind of store), under `root`; `location` names it in logs.
    pub fn on(store: Arc<dyn ObjectStore>, root: &str, location: &str, pipeline: &str, keep: usize) -> Self {
        CheckpointStore { store, root: Path::from(root).join(pipeline), location: location.to_string(), keep: keep.max(1), local: None }
    }

    fn partition_dir(&self, partition: i32) -> Path {
        self.root.clone().join(format!("p{partition}"))
    }

    fn checkpoint_dir(&self, partition: i32, next_offset: i64) -> Path {
        self.partition_dir(partition).clone().join(format!("{next_offset:020}"))
    }

    /// Writes one checkpoint: `files`, then the manifest (with their checksums).
    /// Returns the bytes written and the manifest as stored.
    pub async fn write(&self, mut manifest: Manifest, files: Files) -> Result<(u64, Manifest)> {
        let dir = self.checkpoint_dir(manifest.partition, manifest.next_offset);
        let mut total = 0u64;
        manifest.files.clear();
        for (name, data) in files {
            total += data.len() as u64;
            manifest.files.push(super::checkpoint::FileEntry { name: name.clone(), bytes: data.len() as u64, sha256: sha256(&data) });
            self.store
                .put(&dir.clone().join(name.as_str()), PutPayload::from(data))
                .await
                .map_err(|e| cp_err(format!("writing {dir}/{name} in {}: {e}", self.location)))?;
        }
        let names: Vec<String> = manifest.files.iter().map(|f| f.name.clone()).collect();
        self.sync(&dir, names).await?;
        let m = serde_json::to_vec_pretty(&manifest).map_err(cp_err)?;
        total += m.len() as u64;
        self.store
            .put(&dir.clone().join(MANIFEST), PutPayload::from(m))
            .await
            .map_err(|e| cp_err(format!("writing {dir}/{MANIFEST} in {}: {e}", self.location)))?;
        self.sync(&dir, vec![MANIFEST.to_string()]).await?;
        self.prune(manifest.partition, manifest.next_offset).await?;
        Ok((total, manifest))
    }

    /// Replaces a checkpoint's manifest (a transaction mark changed); the files and
    /// their checksums stay.
    pub async fn rewrite_manifest(&self, manifest: &Manifest) -> Result<()> {
        let dir = self.checkpoint_dir(manifest.partition, manifest.next_offset);
        let m = serde_json::to_vec_pretty(manifest).map_err(cp_err)?;
        self.store.put(&dir.clone().join(MANIFEST), PutPayload::from(m)).await.map_err(|e| cp_err(format!("rewriting {dir}/{MANIFEST}: {e}")))?;
        self.sync(&dir, vec![MANIFEST.to_string()]).await
    }

    /// On a local disk: fsyncs `names` in `dir`, then `dir` and its parent (their
    /// entries). Object stores acknowledge a put once it is durable: nothing to do.
    async fn sync(&self, dir: &Path, names: Vec<String>) -> Result<()> {
        let Some(base) = &self.local else { return Ok(()) };
        let dir_path = base.join(dir.as_ref());
        let run = move || -> std::io::Result<()> {
            for n in &names {
                std::fs::File::open(dir_path.join(n))?.sync_all()?;
            }
            std::fs::File::open(&dir_path)?.sync_all()?;
            if let Some(parent) = dir_path.parent() {
                std::fs::File::open(parent)?.sync_all()?;
            }
            Ok(())
        };
        let shown = dir.to_string();
        tokio::task::spawn_blocking(run)
            .await
            .map_err(|e| cp_err(format!("fsync of {shown}: {e}")))?
            .map_err(|e| cp_err(format!("fsync of {shown} in {}: {e}", self.location)))
    }

    /// Removes a checkpoint's manifest: the checkpoint no longer exists.
    pub async fn discard(&self, partition: i32, id: i64) -> Result<()> {
        let p = self.checkpoint_dir(partition, id).clone().join(MANIFEST);
        self.store.delete(&p).await.map_err(|e| cp_err(format!("deleting {p}: {e}")))
    }

    /// After checkpoint `written`: deletes all but the newest `keep` checkpoints of a
    /// partition up to it (and any folder older than them, complete or not). Newer
    /// ones are not counted: a run writes below them only when the newest was
    /// damaged and it went on from an older one, and counting them would delete what
    /// it writes now. They go once checkpoints pass them.
    async fn prune(&self, partition: i32, written: i64) -> Result<()> {
        let ids = self.ids(partition, false).await?;
        let complete: Vec<i64> = self.ids(partition, true).await?.into_iter().filter(|id| *id <= written).collect();
        if complete.len() <= self.keep {
            return Ok(());
        }
        let cutoff = complete[complete.len() - self.keep];
        for id in ids.into_iter().filter(|id| *id < cutoff) {
            let dir = self.checkpoint_dir(partition, id);
            let objs: Vec<_> = self.store.list(Some(&dir)).try_collect().await.map_err(cp_err)?;
            // The manifest goes first, so a half-deleted checkpoint never looks complete.
            let mut paths: Vec<Path> = objs.into_iter().map(|o| o.location).collect();
            paths.sort_by_key(|p| p.filename() != Some(MANIFEST));
            for p in paths {
                self.store.delete(&p).await.map_err(|e| cp_err(format!("deleting {p}: {e}")))?;
            }
            // A local disk keeps the emptied folder (object stores have none).
            if let Some(base) = &self.local {
                let _ = std::fs::remove_dir(base.join(dir.as_ref()));
            }
        }
        Ok(())
    }

    /// The newest writer epoch claimed for a partition (0: none yet).
    pub async fn claimed_epoch(&self, partition: i32) -> Result<u64> {
        let p = self.partition_dir(partition).clone().join(WRITER_EPOCH);
        match self.store.get(&p).await {
            Ok(r) => {
                let b = r.bytes().await.map_err(|e| cp_err(format!("reading {p}: {e}")))?;
                std::str::from_utf8(&b).ok().and_then(|t| t.trim().parse().ok()).ok_or_else(|| cp_err(format!("{p}: not a number")))
            }
            Err(object_store::Error::NotFound { .. }) => Ok(0),
            Err(e) => Err(cp_err(format!("reading {p}: {e}"))),
        }
    }

    /// Claims writer epoch `epoch` for a partition: a process still writing with an
    /// older epoch (one paused while its partition moved on) is fenced from then on.
    pub async fn claim_epoch(&self, partition: i32, epoch: u64) -> Result<()> {
        let dir = self.partition_dir(partition);
        let p = dir.clone().join(WRITER_EPOCH);
        self.store.put(&p, PutPayload::from(epoch.to_string().into_bytes())).await.map_err(|e| cp_err(format!("writing {p}: {e}")))?;
        self.sync(&dir, vec![WRITER_EPOCH.to_string()]).await
    }

    /// Partitions that have a checkpoint folder.
    pub async fn partitions(&self) -> Result<Vec<i32>> {
        let l = self.store.list_with_delimiter(Some(&self.root)).await.map_err(cp_err)?;
        let mut v: Vec<i32> = l
            .common_prefixes
            .iter()
            .filter_map(|p| p.filename().and_then(|f| f.strip_prefix('p')).and_then(|n| n.parse().ok()))
            .collect();
        v.sort();
        Ok(v)
    }

    /// Checkpoint ids (next offsets) of a partition, ascending; with `complete`, only
    /// those whose manifest exists.
    pub async fn ids(&self, partition: i32, complete: bool) -> Result<Vec<i64>> {
        let dir = self.partition_dir(partition);
        let l = match self.store.list_with_delimiter(Some(&dir)).await {
            Ok(l) => l,
            Err(object_store::Error::NotFound { .. }) => return Ok(vec![]),
            Err(e) => return Err(cp_err(e)),
        };
        let mut v = Vec::new();
        for p in l.common_prefixes {
            let Some(id) = p.filename().and_then(|f| f.parse::<i64>().ok()) else { continue };
            if complete {
                match self.store.head(&p.clone().join(MANIFEST)).await {
                    Ok(_) => {}
                    Err(object_store::Error::NotFound { .. }) => continue,
                    Err(e) => return Err(Error::Store(e).context(format!("reading checkpoint {p} in {}", self.location))),
                }
            }
            v.push(id);
        }
        v.sort();
        Ok(v)
    }

    pub async fn manifest(&self, partition: i32, id: i64) -> Result<Manifest> {
        let b = self.get(&self.checkpoint_dir(partition, id).clone().join(MANIFEST)).await?;
        let m: Manifest = serde_json::from_slice(&b)
            .map_err(|e| cp_err(format!("checkpoint p{partition}/{id}: unreadable manifest: {e}")))?;
        if m.format_version != FORMAT_VERSION {
            return Err(Error::Config(format!(
                "checkpoint p{partition}/{id} in {} has format version {}, this tickflare reads version {FORMAT_VERSION}; \
                 use the tickflare that wrote it, or start from a new checkpoint location",
                self.location, m.format_version
            )));
        }
        Ok(m)
    }

    /// A checkpoint file. Missing is damage (`Error::Checkpoint`); any other failure
    /// of the store (unreachable, throttled, refused) is the store's error, which
    /// [`CheckpointStore::latest`] does not take for damage.
    async fn get(&self, p: &Path) -> Result<Bytes> {
        let failed = |e: object_store::Error| match e {
            object_store::Error::NotFound { .. } => cp_err(format!("reading {p}: {e}")),
            e => Error::Store(e).context(format!("reading checkpoint file {p} in {}", self.location)),
        };
        let r = self.store.get(p).await.map_err(failed)?;
        r.bytes().await.map_err(failed)
    }

    /// One checkpoint's manifest and files, checksums verified.
    pub async fn read(&self, partition: i32, id: i64) -> Result<(Manifest, BTreeMap<String, Bytes>)> {
        let m = self.manifest(partition, id).await?;
        let dir = self.checkpoint_dir(partition, id);
        let mut files = BTreeMap::new();
        for f in &m.files {
            let b = self.get(&dir.clone().join(f.name.as_str())).await?;
            if b.len() as u64 != f.bytes || sha256(&b) != f.sha256 {
                return Err(cp_err(format!("checkpoint p{partition}/{id}: {} fails its checksum (torn or corrupt)", f.name)));
            }
            files.insert(f.name.clone(), b);
        }
        Ok((m, files))
    }

    /// The newest checkpoint of a partition that reads back intact; damaged ones (a
    /// file missing or failing its checksum, a manifest that does not parse) are
    /// skipped with a warning. An unknown format version, or a store that fails to
    /// answer, is an error: skipping on it would restore an older checkpoint (or
    /// none) as if the newer ones did not exist.
    pub async fn latest(&self, partition: i32) -> Result<Option<(Manifest, BTreeMap<String, Bytes>)>> {
        for id in self.ids(partition, true).await?.into_iter().rev() {
            match self.read(partition, id).await {
                Ok(c) => return Ok(Some(c)),
                Err(e @ Error::Checkpoint(_)) => tracing::warn!(partition, checkpoint = id, error = %e, "skipping a damaged checkpoint; trying the previous one"),
                Err(e) => return Err(e),
            }
        }
        Ok(None)
    }
}

pub fn sha256(data: &[u8]) -> String {
    let d = Sha256::digest(data);
    d.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A pipeline file's relative `[checkpoint] dir` lives beside the file; absolute
    /// paths and object-store URLs are taken as written (a URL joined onto a folder
    /// would no longer parse).
    #[test]
    fn a_files_checkpoint_dir_resolves_against_the_file() {
        let base = std::path::Path::new("pipelines");
        assert_eq!(location_in_file("checkpoints", base), "pipelines/checkpoints");
        assert_eq!(location_in_file("../state/ck", base), "pipelines/../state/ck");
        assert_eq!(location_in_file("/var/lib/tickflare", base), "/var/lib/tickflare");
        assert_eq!(location_in_file("s3://bucket/prefix", base), "s3://bucket/prefix");
        assert_eq!(location_in_file("file:///tmp/ck", base), "file:///tmp/ck");
        assert_eq!(location_in_file("checkpoints", std::path::Path::new("")), "checkpoints");
    }

    fn manifest(next_offset: i64) -> Manifest {
        Manifest {
            format_version: FORMAT_VERSION,
            pipeline: "p".into(),
            partition: 0,
            next_offset,
            fingerprint: String::new(),
            model_updates: 0,
            messages_in: 0,
            outputs: BTreeMap::new(),
            published_ahead: [None, None],
            txn: None,
            writer_epoch: 0,
            created_at_ms: 0,
            files: Vec::new(),
        }
    }

    /// With `keep = 2`, after four checkpoints only the newest two exist — on disk
    /// too (no emptied folders left to list as incomplete) — and read back intact.
    #[tokio::test]
    async fn keeps_the_newest_and_removes_the_rest_from_disk() {
        let dir = tempfile::tempdir().unwrap();
        let store = CheckpointStore::open(dir.path().to_str().unwrap(), "p", 2).unwrap();
        for id in [10, 20, 30, 40] {
            store.write(manifest(id), vec![("a.bin".into(), vec![id as u8; 100])]).await.unwrap();
        }
        assert_eq!(store.ids(0, false).await.unwrap(), [30, 40]);
        let mut on_disk: Vec<String> = std::fs::read_dir(dir.path().join("p/p0")).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
        on_disk.sort();
        assert_eq!(on_disk, [format!("{:020}", 30), format!("{:020}", 40)]);
        let (m, files) = store.latest(0).await.unwrap().unwrap();
        assert_eq!((m.next_offset, files["a.bin"].to_vec()), (40, vec![40u8; 100]));
    }

    /// Only damage — a file missing or failing its checksum, a manifest that does
    /// not parse — skips a checkpoint for the one before. A store that fails to
    /// answer (a throttled or unreachable object store; here, a file the local disk
    /// cannot open: a symbolic link to itself) is an error: skipping on it restored an
    /// older checkpoint, or none, as if the newer ones did not exist.
    #[tokio::test]
    async fn a_store_that_fails_is_an_error_not_a_damaged_checkpoint() {
        let dir = tempfile::tempdir().unwrap();
        let store = CheckpointStore::open(dir.path().to_str().unwrap(), "p", 3).unwrap();
        for id in [10, 20] {
            store.write(manifest(id), vec![("a.bin".into(), vec![id as u8; 100])]).await.unwrap();
        }
        let file = dir.path().join(format!("p/p0/{:020}/a.bin", 20));
        std::fs::write(&file, [0u8; 100]).unwrap();
        let (m, _) = store.latest(0).await.unwrap().unwrap();
        assert_eq!(m.next_offset, 10, "a checksum failure is damage: the previous checkpoint");
        std::fs::remove_file(&file).unwrap();
        std::os::unix::fs::symlink(&file, &file).unwrap();
        let e = store.latest(0).await.err().map(|e| e.to_string()).unwrap_or_default();
        assert!(e.contains("a.bin"), "an error naming the file, not checkpoint 10: {e}");
        std::fs::remove_file(&file).unwrap();
        let (m, _) = store.latest(0).await.unwrap().unwrap();
        assert_eq!(m.next_offset, 10, "a missing file is damage");
    }

    /// A damaged newest checkpoint is skipped for an older one, and the run goes on
    /// from there: the checkpoints it writes then have lower offsets than the damaged
    /// one. Pruning must not count the damaged one among the newest `keep` — it
    /// deleted the checkpoint it had just written (keep = 1), or that and the older
    /// good one (keep = 2), leaving a next restart nothing but the damaged one.
    #[tokio::test]
    async fn a_damaged_newer_checkpoint_does_not_prune_the_ones_written_after_it() {
        for keep in [1, 2] {
            let dir = tempfile::tempdir().unwrap();
            let store = CheckpointStore::open(dir.path().to_str().unwrap(), "p", keep).unwrap();
            for id in [10, 30] {
                store.write(manifest(id), vec![("a.bin".into(), vec![id as u8; 100])]).await.unwrap();
            }
            std::fs::write(dir.path().join(format!("p/p0/{:020}/a.bin", 30)), [0u8; 100]).unwrap();
            // A restart finds 30 damaged and takes 10 (with keep = 1, 10 is gone:
            // nothing), then writes 20 and 25.
            let restored = store.latest(0).await.unwrap().map(|(m, _)| m.next_offset);
            assert_eq!(restored, (keep == 2).then_some(10), "keep {keep}");
            for id in [20, 25] {
                store.write(manifest(id), vec![("a.bin".into(), vec![id as u8; 100])]).await.unwrap();
            }
            let (m, files) = store.latest(0).await.unwrap().expect("a checkpoint to restore");
            assert_eq!((m.next_offset, files["a.bin"].to_vec()), (25, vec![25u8; 100]), "keep {keep}");
            let kept: Vec<i64> = store.ids(0, true).await.unwrap().into_iter().filter(|id| *id < 30).collect();
            assert_eq!(kept, if keep == 1 { vec![25] } else { vec![20, 25] }, "keep {keep}");
        }
    }
}
