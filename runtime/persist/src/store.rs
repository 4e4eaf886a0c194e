//! The object store behind the snapshots: layout, the generation CAS, and sealing.
//!
//! Layout under the store's prefix (one folder per session, so deleting a session is deleting
//! one prefix and a bucket lifecycle rule can expire whole sessions):
//!
//! ```text
//! sessions/<session_id>/gen/<generation, 20 digits>   manifest (the commit point)
//! sessions/<session_id>/obj/<name>                     contents: packs of small files, chunks
//! ```
//!
//! **Generation CAS.** A manifest is written with a create-only put
//! ([`PutMode::Create`]: `If-None-Match: *` on S3, a no-clobber hard link on a local
//! directory). A writer that restored generation `n` writes `n + 1`; if another writer got
//! there first the put fails with `AlreadyExists` and the loser's snapshot is dropped. Two items
//! of one session (a reclaim racing a slow teardown) therefore never interleave: each
//! generation is one writer's complete tree, built on the generation it read.
//!
//! **Sealing.** With a key, every object is `WSE1 | key id (8) | nonce (12) | ChaCha20-Poly1305
//! ciphertext+tag`, the object's store path as associated data (an object moved to another
//! name or session fails to open), and content objects are named by HMAC-SHA256(key, content
//! hash), so the store reveals neither contents nor which known files a session holds.

use std::sync::Arc;

use bytes::Bytes;
use futures::TryStreamExt as _;
use object_store::path::Path as ObjPath;
use object_store::{ObjectMeta, ObjectStore, PutMode, PutOptions, PutPayload};
use ring::aead::{self, Aad, LessSafeKey, Nonce, UnboundKey};
use ring::rand::{SecureRandom as _, SystemRandom};

use crate::{Error, PersistenceConfig};

const SEAL_MAGIC: &[u8; 4] = b"WSE1";
/// What sealing adds to an object: magic, key id, nonce, tag.
pub(crate) const SEAL_OVERHEAD: u64 = 24 + 16;

/// A session's snapshots in a store: see the [module docs](self).
#[derive(Clone)]
pub struct Store {
    inner: Arc<dyn ObjectStore>,
    prefix: ObjPath,
    key: Option<Arc<Key>>,
    /// What `store` was opened from, for logs.
    url: String,
    /// The directory of a `file://` store (its emptied session folders are removed).
    local_root: Option<std::path::PathBuf>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("url", &self.url)
            .field("encrypted", &self.key.is_some())
            .finish_non_exhaustive()
    }
}

pub(crate) struct Key {
    aead: LessSafeKey,
    hmac: ring::hmac::Key,
    id: [u8; 8],
}

/// One snapshot generation in the store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GenerationInfo {
    /// Its number.
    pub generation: u64,
    /// Manifest size in the store.
    pub size: u64,
    /// When the manifest was written.
    pub last_modified: std::time::SystemTime,
}

/// Checks a session id before it becomes part of a store path: `[A-Za-z0-9_.-]{1,128}`, not
/// `.`/`..` (the id comes from the server and is treated as untrusted).
pub fn valid_session_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 128
        && id != "."
        && id != ".."
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

fn session_prefix(prefix: &ObjPath, session: &str) -> Result<ObjPath, Error> {
    if !valid_session_id(session) {
        return Err(Error::Invalid(format!(
            "session id {session:?} is not usable"
        )));
    }
    Ok(prefix.child("sessions").child(session))
}

impl Store {
    /// Opens the store named by `cfg.store` (and the key named by `cfg.encryption_key_env`);
    /// a `file://` directory is created when missing.
    pub fn open(cfg: &PersistenceConfig) -> Result<Store, Error> {
        Store::open_with(cfg, true)
    }

    /// Like [`Store::open`], but a missing `file://` directory is not created: `Ok(None)`
    /// (an operator's `snapshots list` must not leave directories behind).
    pub fn open_existing(cfg: &PersistenceConfig) -> Result<Option<Store>, Error> {
        if let Some(dir) = cfg.store.strip_prefix("file://")
            && dir.starts_with('/')
            && !std::path::Path::new(dir).is_dir()
        {
            return Ok(None);
        }
        Store::open_with(cfg, false).map(Some)
    }

    fn open_with(cfg: &PersistenceConfig, create: bool) -> Result<Store, Error> {
        let key = match &cfg.encryption_key_env {
            Some(var) => {
                let hex = std::env::var(var).map_err(|_| {
                    Error::Config(format!("encryption_key_env names {var}, which is not set"))
                })?;
                Some(Arc::new(Key::from_hex(hex.trim())?))
            }
            None => None,
        };
        let mut local_root = None;
        let (inner, prefix): (Arc<dyn ObjectStore>, ObjPath) =
            if let Some(dir) = cfg.store.strip_prefix("file://") {
                if !dir.starts_with('/') {
                    return Err(Error::Config(format!(
                        "store {:?}: a file:// store needs an absolute path (file:///dir)",
                        cfg.store
                    )));
                }
                if create {
                    std::fs::create_dir_all(dir).map_err(|e| {
                        Error::Config(format!("store {:?}: cannot create {dir}: {e}", cfg.store))
                    })?;
                }
                local_root = Some(std::path::PathBuf::from(dir));
                let fs = object_store::local::LocalFileSystem::new_with_prefix(dir)
                    .map_err(|e| Error::Config(format!("store {:?}: {e}", cfg.store)))?;
                (Arc::new(fs), ObjPath::default())
            } else if let Some(rest) = cfg.store.strip_prefix("s3://") {
                let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
                if bucket.is_empty() {
                    return Err(Error::Config(format!(
                        "store {:?}: no bucket (s3://bucket/prefix)",
                        cfg.store
                    )));
                }
                let mut b = object_store::aws::AmazonS3Builder::from_env()
                    .with_bucket_name(bucket)
                    .with_conditional_put(object_store::aws::S3ConditionalPut::ETagMatch);
                if let Some(ep) = &cfg.endpoint {
                    b = b
                        .with_endpoint(ep)
                        .with_allow_http(ep.starts_with("http://"))
                        .with_virtual_hosted_style_request(false);
                }
                let s3 = b
                    .build()
                    .map_err(|e| Error::Config(format!("store {:?}: {e}", cfg.store)))?;
                (Arc::new(s3), ObjPath::from(prefix))
            } else {
                return Err(Error::Config(format!(
                    "store {:?}: expected file:///dir or s3://bucket/prefix",
                    cfg.store
                )));
            };
        Ok(Store {
            inner,
            prefix,
            key,
            url: cfg.store.clone(),
            local_root,
        })
    }

    /// Whether objects are sealed.
    pub fn encrypted(&self) -> bool {
        self.key.is_some()
    }

    /// The store's URL, for logs.
    pub fn url(&self) -> &str {
        &self.url
    }

    fn gen_path(&self, session: &str, generation: u64) -> Result<ObjPath, Error> {
        Ok(session_prefix(&self.prefix, session)?
            .child("gen")
            .child(format!("{generation:020}")))
    }

    fn obj_path(&self, session: &str, name: &str) -> Result<ObjPath, Error> {
        if name.len() != 64 || !name.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(Error::Corrupt(format!("bad object name {name:?}")));
        }
        Ok(session_prefix(&self.prefix, session)?
            .child("obj")
            .child(name))
    }

    /// The store name of a content object whose plaintext hashes to `sha256` (hex).
    pub(crate) fn object_name(&self, sha256: &[u8; 32]) -> String {
        match &self.key {
            Some(k) => hex(ring::hmac::sign(&k.hmac, sha256).as_ref()),
            None => hex(sha256),
        }
    }

    fn seal(&self, path: &ObjPath, plain: Vec<u8>) -> Result<Bytes, Error> {
        let Some(k) = &self.key else {
            return Ok(Bytes::from(plain));
        };
        let mut nonce = [0u8; 12];
        SystemRandom::new()
            .fill(&mut nonce)
            .map_err(|_| Error::Io(std::io::Error::other("no randomness for a nonce")))?;
        let mut buf = plain;
        k.aead
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(path.as_ref().as_bytes()),
                &mut buf,
            )
            .map_err(|_| Error::Io(std::io::Error::other("seal failed")))?;
        let mut out = Vec::with_capacity(24 + buf.len());
        out.extend_from_slice(SEAL_MAGIC);
        out.extend_from_slice(&k.id);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&buf);
        Ok(Bytes::from(out))
    }

    fn open_sealed(&self, path: &ObjPath, data: Bytes) -> Result<Bytes, Error> {
        let sealed = data.starts_with(SEAL_MAGIC);
        let Some(k) = &self.key else {
            if sealed {
                return Err(Error::Key(format!(
                    "{path} is encrypted and no encryption key is configured"
                )));
            }
            return Ok(data);
        };
        if !sealed {
            // Written before the key was configured (or by a store without one).
            return Err(Error::Key(format!("{path} is not sealed with a key")));
        }
        if data.len() < 24 + aead::CHACHA20_POLY1305.tag_len() {
            return Err(Error::Corrupt(format!("{path} is truncated")));
        }
        if data[4..12] != k.id {
            return Err(Error::Key(format!(
                "{path} was sealed with another key (key id {})",
                hex(&data[4..12])
            )));
        }
        let nonce = Nonce::try_assume_unique_for_key(&data[12..24])
            .map_err(|_| Error::Corrupt(format!("{path}: bad nonce")))?;
        let mut buf = data[24..].to_vec();
        let plain = k
            .aead
            .open_in_place(nonce, Aad::from(path.as_ref().as_bytes()), &mut buf)
            .map_err(|_| Error::Corrupt(format!("{path} fails authentication")))?;
        let n = plain.len();
        buf.truncate(n);
        Ok(Bytes::from(buf))
    }

    /// Writes a content object (idempotent: same name, same plaintext).
    pub(crate) async fn put_object(
        &self,
        session: &str,
        name: &str,
        plain: Vec<u8>,
    ) -> Result<(), Error> {
        let path = self.obj_path(session, name)?;
        let body = self.seal(&path, plain)?;
        self.inner
            .put(&path, PutPayload::from(body))
            .await
            .map_err(Error::Store)?;
        Ok(())
    }

    /// Reads a content object whose manifest says it holds `plain_len` bytes (opened, not yet
    /// hash-checked). Never reads more than that plus the sealing overhead.
    pub(crate) async fn get_object(
        &self,
        session: &str,
        name: &str,
        plain_len: u64,
    ) -> Result<Bytes, Error> {
        let path = self.obj_path(session, name)?;
        // Bigger than its (content-addressed) manifest length: damaged or tampered with.
        let data = self
            .get(
                &path,
                plain_len.saturating_add(SEAL_OVERHEAD),
                Error::Corrupt,
            )
            .await?;
        self.open_sealed(&path, data)
    }

    /// Reads an object of at most `max` bytes. The store is untrusted input too (a compromised
    /// bucket, a damaged volume): the size it reports is checked before any body is read, and
    /// the body is read piece by piece and refused as soon as it passes `max`, so a huge or
    /// lying object costs at most `max` bytes of memory.
    async fn get(
        &self,
        path: &ObjPath,
        max: u64,
        over: fn(String) -> Error,
    ) -> Result<Bytes, Error> {
        let r = self.inner.get(path).await.map_err(Error::Store)?;
        let too_big = |n: u64| over(format!("{path} holds {n} bytes, over the {max} expected"));
        if r.meta.size > max {
            return Err(too_big(r.meta.size));
        }
        let mut body = r.into_stream();
        let mut out = Vec::with_capacity(usize::try_from(max.min(1 << 20)).unwrap_or(0));
        while let Some(piece) = body.try_next().await.map_err(Error::Store)? {
            let n = out.len() as u64 + piece.len() as u64;
            if n > max {
                return Err(too_big(n));
            }
            out.extend_from_slice(&piece);
        }
        Ok(Bytes::from(out))
    }

    /// Writes manifest `generation` create-only: `Ok(false)` when that generation exists
    /// already (another writer won the CAS, or an earlier try of this very put committed and
    /// its answer was lost: the caller tells the two apart by the manifest's nonce).
    pub(crate) async fn put_manifest(
        &self,
        session: &str,
        generation: u64,
        plain: Vec<u8>,
    ) -> Result<bool, Error> {
        let path = self.gen_path(session, generation)?;
        let body = self.seal(&path, plain)?;
        let opts = PutOptions {
            mode: PutMode::Create,
            ..PutOptions::default()
        };
        match self
            .inner
            .put_opts(&path, PutPayload::from(body), opts)
            .await
        {
            Ok(_) => Ok(true),
            Err(
                object_store::Error::AlreadyExists { .. }
                | object_store::Error::Precondition { .. },
            ) => Ok(false),
            Err(e) => Err(Error::Store(e)),
        }
    }

    /// Reads manifest `generation` (opened, not yet checked), refusing one over `max` bytes.
    pub(crate) async fn get_manifest(
        &self,
        session: &str,
        generation: u64,
        max: u64,
    ) -> Result<Bytes, Error> {
        let path = self.gen_path(session, generation)?;
        // Over the cap derived from the limits: possibly a limit lowered since it was written,
        // so not proof of damage (the item keeps the stored generation).
        let data = self
            .get(&path, max.saturating_add(SEAL_OVERHEAD), Error::TooLarge)
            .await?;
        self.open_sealed(&path, data)
    }

    /// The session's generations, oldest first (an unknown session has none).
    pub async fn generations(&self, session: &str) -> Result<Vec<GenerationInfo>, Error> {
        let prefix = session_prefix(&self.prefix, session)?.child("gen");
        let mut out = Vec::new();
        for m in self.list(&prefix).await? {
            let Some(name) = m.location.filename() else {
                continue;
            };
            if let Ok(generation) = name.parse::<u64>() {
                out.push(GenerationInfo {
                    generation,
                    size: m.size,
                    last_modified: m.last_modified.into(),
                });
            }
        }
        out.sort_by_key(|g| g.generation);
        Ok(out)
    }

    /// The session's content objects (name, size, last modified).
    pub(crate) async fn objects(&self, session: &str) -> Result<Vec<ObjectMeta>, Error> {
        let prefix = session_prefix(&self.prefix, session)?.child("obj");
        self.list(&prefix).await
    }

    async fn list(&self, prefix: &ObjPath) -> Result<Vec<ObjectMeta>, Error> {
        match self.inner.list(Some(prefix)).try_collect::<Vec<_>>().await {
            Ok(v) => Ok(v),
            Err(object_store::Error::NotFound { .. }) => Ok(Vec::new()),
            Err(e) => Err(Error::Store(e)),
        }
    }

    /// Sessions that have anything in the store, sorted.
    pub async fn sessions(&self) -> Result<Vec<String>, Error> {
        let prefix = self.prefix.child("sessions");
        let listed = match self.inner.list_with_delimiter(Some(&prefix)).await {
            Ok(l) => l,
            Err(object_store::Error::NotFound { .. }) => return Ok(Vec::new()),
            Err(e) => return Err(Error::Store(e)),
        };
        Ok(listed
            .common_prefixes
            .iter()
            .filter_map(|p| p.filename().map(str::to_owned))
            .filter(|s| valid_session_id(s))
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect())
    }

    /// Deletes the given store paths (best effort; returns how many went).
    pub(crate) async fn delete_paths(&self, paths: Vec<ObjPath>) -> usize {
        let mut n = 0;
        let stream = futures::StreamExt::boxed(futures::stream::iter(paths.into_iter().map(Ok)));
        let mut results = self.inner.delete_stream(stream);
        while let Some(r) = futures::StreamExt::next(&mut results).await {
            match r {
                Ok(_) | Err(object_store::Error::NotFound { .. }) => n += 1,
                Err(e) => tracing::warn!(error = %e, "snapshot object delete failed"),
            }
        }
        n
    }

    /// Deletes every object of a session; returns how many went.
    pub async fn delete_session(&self, session: &str) -> Result<usize, Error> {
        let prefix = session_prefix(&self.prefix, session)?;
        let all = self.list(&prefix).await?;
        // Manifests first: a reader never finds a manifest whose objects are gone.
        let (gens, objs): (Vec<_>, Vec<_>) = all
            .into_iter()
            .map(|m| m.location)
            .partition(|p| p.as_ref().contains("/gen/"));
        let mut n = self.delete_paths(gens).await;
        n += self.delete_paths(objs).await;
        // A local directory keeps the emptied folders: remove them (only when empty, so a
        // writer racing the deletion keeps what it wrote), or the sweep would list them forever.
        if let Some(root) = &self.local_root {
            // A file:// store has no prefix: the session's folder is `<dir>/sessions/<id>`.
            let dir = root.join("sessions").join(session);
            for d in [dir.join("gen"), dir.join("obj"), dir] {
                let _ = std::fs::remove_dir(d);
            }
        }
        Ok(n)
    }

    pub(crate) fn gen_location(&self, session: &str, generation: u64) -> Result<ObjPath, Error> {
        self.gen_path(session, generation)
    }

    pub(crate) fn obj_location(&self, session: &str, name: &str) -> Result<ObjPath, Error> {
        self.obj_path(session, name)
    }
}

impl Key {
    fn from_hex(s: &str) -> Result<Key, Error> {
        let bytes = unhex(s).filter(|b| b.len() == 32).ok_or_else(|| {
            Error::Config("the encryption key must be 64 hex digits (32 bytes)".to_owned())
        })?;
        // Separate subkeys for sealing and for naming, derived from the one secret.
        let derive = |label: &[u8]| {
            let k = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &bytes);
            ring::hmac::sign(&k, label)
        };
        let seal = derive(b"wasm-sandbox snapshot seal v1");
        let name = derive(b"wasm-sandbox snapshot names v1");
        let id = derive(b"wasm-sandbox snapshot key id v1");
        let unbound = UnboundKey::new(&aead::CHACHA20_POLY1305, seal.as_ref())
            .map_err(|_| Error::Config("bad key".to_owned()))?;
        let mut key_id = [0u8; 8];
        key_id.copy_from_slice(&id.as_ref()[..8]);
        Ok(Key {
            aead: LessSafeKey::new(unbound),
            hmac: ring::hmac::Key::new(ring::hmac::HMAC_SHA256, name.as_ref()),
            id: key_id,
        })
    }
}

/// Lower-case hex.
pub(crate) fn hex(b: &[u8]) -> String {
    use std::fmt::Write as _;
    let mut s = String::with_capacity(b.len() * 2);
    for x in b {
        let _ = write!(s, "{x:02x}");
    }
    s
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}
