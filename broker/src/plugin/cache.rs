//! Compiled plugins on disk, keyed by the SHA-256 of the component, so a restart or a reload back
//! to a known version skips Cranelift.
//!
//! Safety: `Component::deserialize` runs its input as native code, so an entry must be wasmtime's
//! own output for this very component. The directory may be writable by others (by default it sits
//! beside broker.toml, where plugin authors drop their `.wasm` files), so every entry carries an
//! HMAC-SHA256 over its name and its bytes, with a key only the broker's user can read: the file
//! `<cache_dir>.key` (32 random bytes, mode 0600, owned by that user, created at first use). An
//! entry whose tag does not verify (planted, altered, or written under another key) is never
//! deserialized: it is recompiled and replaced, with a warning. The key sits outside the cache
//! directory so that a copy of the cache (a shared volume, a CI cache) does not carry what vouches
//! for it. Entries are written under a temporary name and renamed into place, so a reader never
//! sees a partial file; wasmtime itself refuses artifacts from another version or configuration.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use wasmtime::Engine;
use wasmtime::component::Component;

/// The length of the key and of an entry's tag (HMAC-SHA256).
const TAG_BYTES: usize = 32;

/// What the tag covers besides the entry, so a tag is never valid for anything else.
const TAG_CONTEXT: &[u8] = b"broker compile cache v1\0";

/// The cache, or `None` for no caching.
#[derive(Debug, Clone)]
pub struct Cache {
    store: Option<Store>,
}

#[derive(Clone)]
struct Store {
    dir: PathBuf,
    /// HMAC-SHA256 keyed with the cache's key, before any input: each tag starts from a clone.
    keyed: Hmac<Sha256>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("dir", &self.dir).finish_non_exhaustive()
    }
}

/// How a component was obtained, for logs and measurements.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Cache,
    Compiled,
}

impl Source {
    /// As `/api/plugins` shows it.
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Cache => "cache",
            Source::Compiled => "compiled",
        }
    }
}

impl Cache {
    /// The cache in `dir` (`""`: none). Reads or creates its key; without a usable key the broker
    /// runs uncached and says why.
    pub fn new(dir: &Path) -> Cache {
        if dir.as_os_str().is_empty() {
            return Cache { store: None };
        }
        let keyed = key_path(dir).and_then(|path| load_or_create_key(&path)).and_then(|key| {
            <Hmac<Sha256> as Mac>::new_from_slice(&key).map_err(|e| io::Error::other(format!("HMAC key: {e}")))
        });
        match keyed {
            Ok(keyed) => Cache { store: Some(Store { dir: dir.to_owned(), keyed }) },
            Err(error) => {
                tracing::warn!(dir = %dir.display(), %error, "the plugin cache is off: its key is unusable");
                Cache { store: None }
            }
        }
    }

    /// The content hash that names a component in the cache.
    pub fn key(bytes: &[u8]) -> String {
        Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
    }

    /// The component of `bytes`, from the cache when it is there and authentic. CPU-heavy on a
    /// miss: call it off the async runtime's threads.
    // Deserializing compiled code is unsafe in wasmtime; the entry's HMAC tag is what makes it sound.
    #[allow(unsafe_code)]
    pub fn load(&self, engine: &Engine, bytes: &[u8], key: &str) -> Result<(Component, Source), String> {
        let Some(store) = &self.store else {
            return Component::new(engine, bytes).map(|c| (c, Source::Compiled)).map_err(|e| format!("{e:?}"));
        };
        let path = store.dir.join(format!("{key}.cwasm"));
        match read_regular(&path) {
            Ok(entry) => match store.authentic(key, &entry) {
                // SAFETY: the tag proves that `store` below wrote these bytes for this component,
                // with the key of this cache, which only the broker's user can read (module docs).
                Some(artifact) => match unsafe { Component::deserialize(engine, artifact) } {
                    Ok(component) => return Ok((component, Source::Cache)),
                    Err(error) => tracing::info!(path = %path.display(), %error, "recompiling a stale cache entry"),
                },
                None => tracing::warn!(
                    path = %path.display(),
                    "a plugin cache entry failed its authentication (planted, altered, or from another key); \
                     recompiling and replacing it"
                ),
            },
            Err(error) if error.kind() == io::ErrorKind::NotFound => {}
            Err(error) => tracing::warn!(path = %path.display(), %error, "cannot read a plugin cache entry"),
        }
        let component = Component::new(engine, bytes).map_err(|e| format!("{e:?}"))?;
        if let Err(error) = store.write(&path, key, &component) {
            tracing::warn!(dir = %store.dir.display(), %error, "cannot write the plugin cache; continuing without it");
        }
        Ok((component, Source::Compiled))
    }
}

impl Store {
    fn mac(&self, name: &str, artifact: &[u8]) -> Hmac<Sha256> {
        let mut mac = self.keyed.clone();
        for part in [TAG_CONTEXT, name.as_bytes(), b"\0", artifact] {
            mac.update(part);
        }
        mac
    }

    /// The artifact of an entry (`tag || artifact`) named `name`, if its tag verifies.
    fn authentic<'a>(&self, name: &str, entry: &'a [u8]) -> Option<&'a [u8]> {
        let (tag, artifact) = entry.split_at_checked(TAG_BYTES)?;
        self.mac(name, artifact).verify_slice(tag).ok().map(|()| artifact)
    }

    fn write(&self, path: &Path, name: &str, component: &Component) -> io::Result<()> {
        let artifact = component.serialize().map_err(|e| io::Error::other(format!("{e:?}")))?;
        let tag = self.mac(name, &artifact).finalize().into_bytes();
        std::fs::create_dir_all(&self.dir)?;
        let partial = path.with_extension(format!("{}.partial", std::process::id()));
        let mut file = create_private(&partial)?;
        file.write_all(&tag)?;
        file.write_all(&artifact)?;
        drop(file);
        std::fs::rename(&partial, path)
    }
}

/// `<cache_dir>.key`: beside the cache directory, not in it.
fn key_path(dir: &Path) -> io::Result<PathBuf> {
    let name = dir.file_name().ok_or_else(|| {
        io::Error::new(io::ErrorKind::InvalidInput, "`engine.cache_dir` must name a directory, not `/` or `..`")
    })?;
    let mut file = name.to_owned();
    file.push(".key");
    Ok(dir.parent().unwrap_or(Path::new("")).join(file))
}

/// The key in `path`, created first when there is none. Brokers starting at once agree on one key:
/// each writes a candidate under its own name and links it into place, and the first link wins.
fn load_or_create_key(path: &Path) -> io::Result<[u8; TAG_BYTES]> {
    match read_key(path) {
        Err(error) if error.kind() == io::ErrorKind::NotFound => {}
        other => return other,
    }
    let mut key = [0; TAG_BYTES];
    getrandom::fill(&mut key).map_err(|e| io::Error::other(format!("no randomness for the key: {e}")))?;
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)?;
    }
    let mut candidate = path.as_os_str().to_owned();
    candidate.push(format!(".{}.partial", std::process::id()));
    let candidate = PathBuf::from(candidate);
    let mut file = create_private(&candidate)?;
    let written = file.write_all(&key).and_then(|()| file.sync_all());
    let linked = written.and_then(|()| std::fs::hard_link(&candidate, path));
    let _ = std::fs::remove_file(&candidate);
    match linked {
        Err(error) if error.kind() != io::ErrorKind::AlreadyExists => Err(error),
        _ => read_key(path),
    }
}

/// A new file only this user can read and write; a leftover of the same name (a crashed run, or a
/// planted symlink) is removed first, never written through.
fn create_private(path: &Path) -> io::Result<File> {
    let _ = std::fs::remove_file(path);
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options.open(path)
}

/// The contents of a regular file at `path`, not through a symlink; a FIFO planted there does not
/// block.
fn read_regular(path: &Path) -> io::Result<Vec<u8>> {
    let mut options = OpenOptions::new();
    options.read(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::custom_flags(&mut options, libc::O_NOFOLLOW | libc::O_NONBLOCK);
    let mut file = options.open(path)?;
    let metadata = file.metadata()?;
    if !metadata.is_file() {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "not a regular file"));
    }
    check_private(path, &metadata)?;
    let mut bytes = Vec::with_capacity(usize::try_from(metadata.len()).unwrap_or(0));
    file.read_to_end(&mut bytes)?;
    Ok(bytes)
}

fn read_key(path: &Path) -> io::Result<[u8; TAG_BYTES]> {
    let bytes = read_regular(path)?;
    bytes.try_into().map_err(|_| {
        io::Error::new(io::ErrorKind::InvalidData, format!("{} is not a {TAG_BYTES}-byte key", path.display()))
    })
}

/// A file the broker trusts is its user's and nobody else's: another user who can write beside it
/// could otherwise put a key they know there, or read ours.
#[cfg(unix)]
#[allow(unsafe_code)] // geteuid is a C function without preconditions.
fn check_private(path: &Path, metadata: &std::fs::Metadata) -> io::Result<()> {
    use std::os::unix::fs::MetadataExt;
    // SAFETY: geteuid has no preconditions and cannot fail.
    let user = unsafe { libc::geteuid() };
    if metadata.uid() != user || metadata.mode() & 0o077 != 0 {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!(
                "{} must belong to the broker's user (uid {user}) and be readable by it alone (mode 0600); \
                 it belongs to uid {} with mode {:o}",
                path.display(),
                metadata.uid(),
                metadata.mode() & 0o777
            ),
        ));
    }
    Ok(())
}

#[cfg(not(unix))]
fn check_private(_path: &Path, _metadata: &std::fs::Metadata) -> io::Result<()> {
    Ok(())
}
