//! Verdict cache: raw model outputs keyed by a hash of the model file's fingerprint, the mode
//! and the exact prompt (which covers template version, query, judged text and nugget), kept in
//! an embedded on-disk store (redb). Calibration is applied after lookup, so refitting it or
//! changing the aggregation never invalidates the cache.

use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use redb::{Database, ReadableTableMetadata, TableDefinition};
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

const VERDICTS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("verdicts");

/// A fingerprint of a model file: SHA-256 of its size, first and last 4 MiB. Cheap for
/// multi-gigabyte files and changes whenever the file is replaced.
pub fn model_fingerprint(path: &Path) -> Result<String> {
    let mut f = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let size = f.metadata().map_err(|e| Error::io(path, e))?.len();
    let mut h = Sha256::new();
    h.update(size.to_le_bytes());
    let window = 4u64 << 20;
    let mut buf = vec![0u8; window.min(size) as usize];
    f.read_exact(&mut buf).map_err(|e| Error::io(path, e))?;
    h.update(&buf);
    if size > window {
        let tail = window.min(size - window);
        f.seek(SeekFrom::End(-(tail as i64))).map_err(|e| Error::io(path, e))?;
        let mut buf = vec![0u8; tail as usize];
        f.read_exact(&mut buf).map_err(|e| Error::io(path, e))?;
        h.update(&buf);
    }
    Ok(crate::prompt::hex(&h.finalize()[..16]))
}

/// The key of the model behind a backend: the file's fingerprint when `model` is a local file,
/// else a hash of the served model's name (`name-...`).
pub fn model_key(model: &str) -> Result<String> {
    let path = Path::new(model);
    if path.is_file() {
        return model_fingerprint(path);
    }
    Ok(format!("name-{}", crate::prompt::hex(&Sha256::digest(model.as_bytes())[..16])))
}

/// The on-disk verdict cache.
pub struct VerdictCache {
    db: Database,
    path: PathBuf,
}

impl std::fmt::Debug for VerdictCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VerdictCache").field("path", &self.path).finish()
    }
}

fn db_err(path: &Path, e: impl std::fmt::Display) -> Error {
    Error::Cache { path: path.to_path_buf(), reason: e.to_string() }
}

/// Run a store operation; a panic inside the store (redb asserts on some damaged files, e.g. one
/// cut short) becomes an error, so a damaged cache is skipped instead of ending the run.
fn guarded<T>(path: &Path, op: impl FnOnce() -> Result<T>) -> Result<T> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(op)).unwrap_or_else(|p| {
        let why = crate::error::panic_message(p.as_ref());
        Err(db_err(path, format!("the file is damaged ({})", why.as_deref().unwrap_or("the store panicked"))))
    })
}

impl VerdictCache {
    /// Open or create the cache file.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        }
        let db = guarded(&path, || Database::create(&path).map_err(|e| db_err(&path, e)))?;
        Ok(VerdictCache { db, path })
    }

    /// The default location, `$GAVEL_HOME/cache/verdicts.redb`.
    pub fn default_path() -> PathBuf {
        crate::model_store::gavel_home().join("cache").join("verdicts.redb")
    }

    /// The key of one prompt.
    pub fn key(model: &str, mode: &str, prefix: &str, suffix: &str) -> [u8; 32] {
        let mut h = Sha256::new();
        for part in [model, mode, prefix, suffix] {
            h.update((part.len() as u64).to_le_bytes());
            h.update(part.as_bytes());
        }
        h.finalize().into()
    }

    /// Look up many keys; misses are `None`.
    pub fn get_many(&self, keys: &[[u8; 32]]) -> Result<Vec<Option<Vec<u8>>>> {
        guarded(&self.path, || self.get_many_unguarded(keys))
    }

    fn get_many_unguarded(&self, keys: &[[u8; 32]]) -> Result<Vec<Option<Vec<u8>>>> {
        let txn = self.db.begin_read().map_err(|e| db_err(&self.path, e))?;
        let table = match txn.open_table(VERDICTS) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(vec![None; keys.len()]),
            Err(e) => return Err(db_err(&self.path, e)),
        };
        keys.iter()
            .map(|k| table.get(k.as_slice()).map(|v| v.map(|g| g.value().to_vec())).map_err(|e| db_err(&self.path, e)))
            .collect()
    }

    /// Store many entries in one transaction.
    pub fn put_many(&self, entries: &[([u8; 32], Vec<u8>)]) -> Result<()> {
        if entries.is_empty() {
            return Ok(());
        }
        guarded(&self.path, || self.put_many_unguarded(entries))
    }

    fn put_many_unguarded(&self, entries: &[([u8; 32], Vec<u8>)]) -> Result<()> {
        let txn = self.db.begin_write().map_err(|e| db_err(&self.path, e))?;
        {
            let mut table = txn.open_table(VERDICTS).map_err(|e| db_err(&self.path, e))?;
            for (k, v) in entries {
                table.insert(k.as_slice(), v.as_slice()).map_err(|e| db_err(&self.path, e))?;
            }
        }
        txn.commit().map_err(|e| db_err(&self.path, e))
    }

    /// Number of entries.
    pub fn len(&self) -> Result<u64> {
        guarded(&self.path, || self.len_unguarded())
    }

    fn len_unguarded(&self) -> Result<u64> {
        let txn = self.db.begin_read().map_err(|e| db_err(&self.path, e))?;
        match txn.open_table(VERDICTS) {
            Ok(t) => t.len().map_err(|e| db_err(&self.path, e)),
            Err(redb::TableError::TableDoesNotExist(_)) => Ok(0),
            Err(e) => Err(db_err(&self.path, e)),
        }
    }

    /// Whether the cache is empty.
    pub fn is_empty(&self) -> Result<bool> {
        Ok(self.len()? == 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_persistence() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.redb");
        let k1 = VerdictCache::key("m", "scored", "p", "s1");
        let k2 = VerdictCache::key("m", "scored", "p", "s2");
        assert_ne!(k1, k2);
        assert_ne!(VerdictCache::key("m", "scored", "ps", "1"), VerdictCache::key("m", "scored", "p", "s1"));
        {
            let c = VerdictCache::open(&path).unwrap();
            assert_eq!(c.get_many(&[k1]).unwrap(), vec![None]);
            c.put_many(&[(k1, b"one".to_vec())]).unwrap();
        }
        let c = VerdictCache::open(&path).unwrap();
        assert_eq!(c.get_many(&[k1, k2]).unwrap(), vec![Some(b"one".to_vec()), None]);
        assert_eq!(c.len().unwrap(), 1);
    }

    #[test]
    fn fingerprint_changes_with_content() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a");
        std::fs::write(&a, b"hello").unwrap();
        let fa = model_fingerprint(&a).unwrap();
        std::fs::write(&a, b"hellO").unwrap();
        assert_ne!(fa, model_fingerprint(&a).unwrap());
    }
}
