//! OCI image layouts made in Rust, without Docker.
//!
//! A layout is a directory with `oci-layout`, `index.json` and `blobs/sha256/<hex>`. The
//! builders here write real tar layers of random content (gzip'd up to [`BIG`]), a config JSON (architecture,
//! os, `rootfs.diff_ids`), an image manifest, for indexes an image index, and register the top
//! manifest in `index.json` under `org.opencontainers.image.ref.name = <tag>`. Several images
//! may share one layout directory (one tag each). Everything is written streaming, with the
//! sha256 computed while writing, so big blobs never sit in memory.
//!
//! These functions do blocking file I/O: fine inline for small images; wrap big ones in
//! `tokio::task::spawn_blocking`.

use std::fs::File;
use std::io::{self, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use rand::Rng as _;
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};

/// `application/vnd.oci.image.manifest.v1+json`
pub const MANIFEST_V1: &str = "application/vnd.oci.image.manifest.v1+json";
/// `application/vnd.oci.image.index.v1+json`
pub const INDEX_V1: &str = "application/vnd.oci.image.index.v1+json";
/// `application/vnd.oci.image.config.v1+json`
pub const CONFIG_V1: &str = "application/vnd.oci.image.config.v1+json";
/// `application/vnd.oci.image.layer.v1.tar+gzip`
pub const LAYER_TAR_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
/// `application/vnd.oci.image.layer.v1.tar` (used for layers bigger than [`BIG`]).
pub const LAYER_TAR: &str = "application/vnd.oci.image.layer.v1.tar";
/// Streams above this size are hashed by `sha256sum` and layers above it are not gzip'd:
/// tests are debug builds, where `sha2` and `flate2` manage only ~16 MB/s.
pub const BIG: u64 = 8 << 20;
/// The annotation naming a manifest in `index.json`.
pub const REF_NAME: &str = "org.opencontainers.image.ref.name";

/// A content-addressed blob: digest (`sha256:<hex>`), size, media type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Blob {
    pub digest: String,
    pub size: u64,
    pub media_type: String,
}

impl Blob {
    /// The OCI descriptor `{mediaType, digest, size}`.
    pub fn descriptor(&self) -> Value {
        json!({"mediaType": self.media_type, "digest": self.digest, "size": self.size})
    }

    /// The hex part of the digest.
    pub fn hex(&self) -> &str {
        self.digest.trim_start_matches("sha256:")
    }
}

/// One platform's image: its manifest, config and layers.
#[derive(Debug, Clone)]
pub struct PlatformImage {
    pub architecture: String,
    pub os: String,
    /// The image manifest blob.
    pub manifest: Blob,
    pub config: Blob,
    pub layers: Vec<Blob>,
}

/// An image written into a layout directory.
#[derive(Debug, Clone)]
pub struct OciImage {
    /// The layout directory.
    pub dir: PathBuf,
    /// Its `org.opencontainers.image.ref.name`.
    pub tag: String,
    /// Digest of the top-level manifest: the image manifest, or the image index.
    pub digest: String,
    /// Size of the top-level manifest.
    pub size: u64,
    /// [`MANIFEST_V1`] or [`INDEX_V1`].
    pub media_type: &'static str,
    /// One entry for a single-platform image, two for an index (amd64, arm64).
    pub platforms: Vec<PlatformImage>,
}

impl OciImage {
    /// The skopeo reference `oci:<dir>:<tag>`.
    pub fn oci_ref(&self) -> String {
        format!("oci:{}:{}", self.dir.display(), self.tag)
    }

    /// Is the top-level manifest an image index?
    pub fn is_index(&self) -> bool {
        self.media_type == INDEX_V1
    }

    /// Where the blob with `digest` lives in the layout.
    pub fn blob_path(&self, digest: &str) -> PathBuf {
        blob_path(&self.dir, digest)
    }

    /// Config and layer blobs of all platforms (what a push uploads), without duplicates.
    pub fn layer_and_config_blobs(&self) -> Vec<Blob> {
        let mut out: Vec<Blob> = Vec::new();
        for p in &self.platforms {
            for b in p.layers.iter().chain(std::iter::once(&p.config)) {
                if !out.iter().any(|o| o.digest == b.digest) {
                    out.push(b.clone());
                }
            }
        }
        out
    }

    /// The platform manifests referenced by an index (empty for a single-platform image).
    pub fn platform_manifests_if_index(&self) -> Vec<Blob> {
        if self.is_index() {
            self.platforms.iter().map(|p| p.manifest.clone()).collect()
        } else {
            Vec::new()
        }
    }

    /// The manifest of the single platform (panics on an index).
    pub fn manifest(&self) -> &PlatformImage {
        assert!(!self.is_index(), "{} is an index", self.tag);
        &self.platforms[0]
    }
}

/// Write a linux/amd64 image with one tar layer of random content per entry of `layer_sizes`
/// (bytes of file data in the layer; gzip'd up to [`BIG`], plain tar above) into the layout
/// `dir`, tagged `tag`.
pub fn build_image(dir: &Path, tag: &str, layer_sizes: &[u64]) -> OciImage {
    init_layout(dir);
    let p = write_platform_image(dir, "amd64", "linux", layer_sizes);
    add_to_index(dir, &p.manifest, tag);
    OciImage {
        dir: dir.to_path_buf(),
        tag: tag.to_string(),
        digest: p.manifest.digest.clone(),
        size: p.manifest.size,
        media_type: MANIFEST_V1,
        platforms: vec![p],
    }
}

/// Write a two-platform image index (linux/amd64 and linux/arm64, each with its own config
/// and its own random layers of `layer_sizes`) into the layout `dir`, tagged `tag`.
pub fn build_index(dir: &Path, tag: &str, layer_sizes: &[u64]) -> OciImage {
    init_layout(dir);
    let platforms: Vec<PlatformImage> = [("amd64", "linux"), ("arm64", "linux")]
        .iter()
        .map(|(arch, os)| write_platform_image(dir, arch, os, layer_sizes))
        .collect();
    let manifests: Vec<Value> = platforms
        .iter()
        .map(|p| {
            let mut d = p.manifest.descriptor();
            d["platform"] = json!({"architecture": p.architecture, "os": p.os});
            d
        })
        .collect();
    let index = json!({
        "schemaVersion": 2,
        "mediaType": INDEX_V1,
        "manifests": manifests,
    });
    let index = write_json_blob(dir, &index, INDEX_V1);
    add_to_index(dir, &index, tag);
    OciImage {
        dir: dir.to_path_buf(),
        tag: tag.to_string(),
        digest: index.digest.clone(),
        size: index.size,
        media_type: INDEX_V1,
        platforms,
    }
}

/// The digest `index.json` of the layout `dir` lists under ref name `tag`, if any.
pub fn layout_digest(dir: &Path, tag: &str) -> Option<String> {
    let text = std::fs::read_to_string(dir.join("index.json")).ok()?;
    let index: Value = serde_json::from_str(&text).ok()?;
    index["manifests"]
        .as_array()?
        .iter()
        .find(|m| m["annotations"][REF_NAME] == tag)
        .and_then(|m| m["digest"].as_str())
        .map(str::to_string)
}

/// Path of blob `digest` in layout `dir`.
pub fn blob_path(dir: &Path, digest: &str) -> PathBuf {
    dir.join("blobs/sha256")
        .join(digest.trim_start_matches("sha256:"))
}

/// Write `size` random bytes to `path`, streaming, and return its digest and size
/// (media type `application/octet-stream`).
pub fn write_random_blob(path: &Path, size: u64) -> Blob {
    let file = File::create(path).unwrap_or_else(|e| panic!("create {}: {e}", path.display()));
    let mut w = HashingWriter::piped(BufWriter::with_capacity(1 << 20, file));
    io::copy(&mut RandomReader::new(size), &mut w).expect("writing random data");
    let (digest, n, inner) = w.finish();
    inner
        .into_inner()
        .map_err(|e| e.into_error())
        .and_then(|f| f.sync_all())
        .expect("flushing random data");
    Blob {
        digest,
        size: n,
        media_type: "application/octet-stream".into(),
    }
}

/// sha256 and size of the file at `path`, read streaming.
pub fn sha256_file(path: &Path) -> Blob {
    let mut f = File::open(path).unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let mut w = HashingWriter::for_size(io::sink(), len);
    io::copy(&mut f, &mut w).expect("reading for sha256");
    let (digest, size, _) = w.finish();
    Blob {
        digest,
        size,
        media_type: "application/octet-stream".into(),
    }
}

/// A writer that hashes (sha256) and counts what goes through it.
pub struct HashingWriter<W> {
    inner: W,
    hasher: Hasher,
    written: u64,
}

impl<W: Write> HashingWriter<W> {
    /// Hash in-process (the `sha2` crate): right for small streams.
    pub fn new(inner: W) -> Self {
        Self {
            inner,
            hasher: Hasher::Local(Sha256::new()),
            written: 0,
        }
    }

    /// Hash with a `sha256sum` child process ([`Sha256Pipe`]): right for big streams.
    pub fn piped(inner: W) -> Self {
        Self {
            inner,
            hasher: Hasher::Pipe(Sha256Pipe::new()),
            written: 0,
        }
    }

    /// Hash in-process when `expected` is at most [`BIG`] bytes, with `sha256sum` above.
    pub fn for_size(inner: W, expected: u64) -> Self {
        if expected > BIG {
            Self::piped(inner)
        } else {
            Self::new(inner)
        }
    }

    /// (`sha256:<hex>`, bytes written, the inner writer).
    pub fn finish(self) -> (String, u64, W) {
        let digest = match self.hasher {
            Hasher::Local(h) => format!("sha256:{}", hex::encode(h.finalize())),
            Hasher::Pipe(p) => p.finish(),
        };
        (digest, self.written, self.inner)
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        match &mut self.hasher {
            Hasher::Local(h) => h.update(&buf[..n]),
            Hasher::Pipe(p) => p.update(&buf[..n]),
        }
        self.written += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// A reader of `len` pseudo-random bytes, cheap even in debug builds: one random block (up to
/// 1 MiB, seeded from the OS) repeated, with the block number stamped into its first 8 bytes so
/// no two blocks of a stream are equal. Not compressible, not cryptographic.
pub struct RandomReader {
    remaining: u64,
    block: Vec<u8>,
    pos: usize,
    n: u64,
}

impl RandomReader {
    pub fn new(len: u64) -> Self {
        let mut rng: rand::rngs::SmallRng = rand::make_rng();
        let mut block = vec![0; len.clamp(8, 1 << 20) as usize];
        rng.fill_bytes(&mut block);
        Self {
            remaining: len,
            block,
            pos: 0,
            n: 0,
        }
    }
}

impl Read for RandomReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.remaining == 0 || buf.is_empty() {
            return Ok(0);
        }
        if self.pos == self.block.len() {
            self.pos = 0;
            self.n += 1;
            let stamp = self.n.to_le_bytes();
            for (b, s) in self.block.iter_mut().zip(stamp) {
                *b ^= s;
            }
        }
        let n = buf
            .len()
            .min(self.block.len() - self.pos)
            .min(usize::try_from(self.remaining).unwrap_or(usize::MAX));
        buf[..n].copy_from_slice(&self.block[self.pos..self.pos + n]);
        self.pos += n;
        self.remaining -= n as u64;
        Ok(n)
    }
}

/// sha256 computed by a `sha256sum` child process (coreutils) fed through a pipe.
///
/// Tests run as debug builds, where the `sha2` crate hashes about 16 MB/s; `sha256sum` does
/// over 150 MB/s. [`HashingWriter::piped`] uses it for big streams.
pub struct Sha256Pipe {
    child: Option<std::process::Child>,
    stdin: Option<std::process::ChildStdin>,
}

impl Default for Sha256Pipe {
    fn default() -> Self {
        Self::new()
    }
}

impl Sha256Pipe {
    /// Start `sha256sum`.
    pub fn new() -> Self {
        let mut child = std::process::Command::new("sha256sum")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("starting sha256sum (coreutils)");
        let stdin = child.stdin.take();
        Self {
            child: Some(child),
            stdin,
        }
    }

    /// Feed bytes.
    pub fn update(&mut self, data: &[u8]) {
        self.stdin
            .as_mut()
            .expect("sha256sum stdin")
            .write_all(data)
            .expect("feeding sha256sum");
    }

    /// `sha256:<hex>` of everything fed.
    pub fn finish(mut self) -> String {
        drop(self.stdin.take());
        let out = self
            .child
            .take()
            .expect("sha256sum child")
            .wait_with_output()
            .expect("sha256sum output");
        assert!(out.status.success(), "sha256sum failed");
        let text = String::from_utf8_lossy(&out.stdout);
        let hex = text
            .split_whitespace()
            .next()
            .expect("sha256sum printed nothing");
        assert_eq!(hex.len(), 64, "unexpected sha256sum output {text:?}");
        format!("sha256:{hex}")
    }
}

impl Drop for Sha256Pipe {
    fn drop(&mut self) {
        drop(self.stdin.take());
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

enum Hasher {
    Local(Sha256),
    Pipe(Sha256Pipe),
}

fn init_layout(dir: &Path) {
    std::fs::create_dir_all(dir.join("blobs/sha256"))
        .unwrap_or_else(|e| panic!("create layout {}: {e}", dir.display()));
    std::fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#)
        .expect("writing oci-layout");
}

/// Register `manifest` in `index.json` under `tag` (replacing an entry with the same tag).
fn add_to_index(dir: &Path, manifest: &Blob, tag: &str) {
    let path = dir.join("index.json");
    let mut index: Value = std::fs::read(&path)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_else(|| json!({"schemaVersion": 2, "mediaType": INDEX_V1, "manifests": []}));
    let manifests = index["manifests"]
        .as_array_mut()
        .expect("index.json manifests");
    manifests.retain(|m| m["annotations"][REF_NAME] != tag);
    let mut d = manifest.descriptor();
    d["annotations"] = json!({ REF_NAME: tag });
    manifests.push(d);
    std::fs::write(&path, serde_json::to_vec_pretty(&index).expect("json"))
        .expect("writing index.json");
}

fn write_platform_image(dir: &Path, arch: &str, os: &str, layer_sizes: &[u64]) -> PlatformImage {
    let mut layers = Vec::new();
    let mut diff_ids = Vec::new();
    for (i, size) in layer_sizes.iter().enumerate() {
        let (layer, diff_id) = write_layer(dir, i, *size);
        layers.push(layer);
        diff_ids.push(diff_id);
    }
    let config = json!({
        "created": "2026-01-01T00:00:00Z",
        "architecture": arch,
        "os": os,
        "config": {"Env": ["PATH=/usr/bin:/bin"], "Cmd": ["/bin/sh"]},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "history": layer_sizes.iter().map(|s| json!({
            "created": "2026-01-01T00:00:00Z",
            "created_by": format!("wharf test layer of {s} bytes"),
        })).collect::<Vec<_>>(),
    });
    let config = write_json_blob(dir, &config, CONFIG_V1);
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": MANIFEST_V1,
        "config": config.descriptor(),
        "layers": layers.iter().map(Blob::descriptor).collect::<Vec<_>>(),
    });
    let manifest = write_json_blob(dir, &manifest, MANIFEST_V1);
    PlatformImage {
        architecture: arch.to_string(),
        os: os.to_string(),
        manifest,
        config,
        layers,
    }
}

/// A tar layer with a directory and one file of `size` random bytes, gzip'd up to [`BIG`];
/// returns (blob, diff_id).
fn write_layer(dir: &Path, index: usize, size: u64) -> (Blob, String) {
    let tmp = tmp_blob_path(dir);
    let file = File::create(&tmp).unwrap_or_else(|e| panic!("create {}: {e}", tmp.display()));
    let compressed = HashingWriter::for_size(BufWriter::with_capacity(1 << 20, file), size);
    let (blob, diff_id) = if size > BIG {
        let (diff_id, n, buf) = write_tar(compressed, index, size);
        buf.into_inner()
            .map_err(|e| e.into_error())
            .expect("flushing the layer");
        (
            Blob {
                digest: diff_id.clone(),
                size: n,
                media_type: LAYER_TAR.into(),
            },
            diff_id,
        )
    } else {
        let gz = flate2::write::GzEncoder::new(compressed, flate2::Compression::fast());
        let (diff_id, _, gz) = write_tar(HashingWriter::new(gz), index, size);
        let (digest, n, buf) = gz.finish().expect("finishing gzip").finish();
        buf.into_inner()
            .map_err(|e| e.into_error())
            .expect("flushing the layer");
        (
            Blob {
                digest,
                size: n,
                media_type: LAYER_TAR_GZIP.into(),
            },
            diff_id,
        )
    };
    std::fs::rename(&tmp, blob_path(dir, &blob.digest)).expect("placing the layer blob");
    (blob, diff_id)
}

/// Write the layer's tar stream into `w`; returns what `w.finish()` returns.
fn write_tar<W: Write>(w: HashingWriter<W>, index: usize, size: u64) -> (String, u64, W) {
    let mut tar = tar::Builder::new(w);
    tar.mode(tar::HeaderMode::Deterministic);
    let mut dir_header = tar::Header::new_gnu();
    dir_header.set_entry_type(tar::EntryType::Directory);
    dir_header.set_mode(0o755);
    dir_header.set_size(0);
    tar.append_data(&mut dir_header, "wharf-test/", io::empty())
        .expect("tar dir");
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Regular);
    h.set_mode(0o644);
    h.set_size(size);
    tar.append_data(
        &mut h,
        format!("wharf-test/layer-{index}.bin"),
        RandomReader::new(size),
    )
    .expect("tar file");
    tar.into_inner().expect("finishing the tar").finish()
}

fn write_json_blob(dir: &Path, value: &Value, media_type: &str) -> Blob {
    let bytes = serde_json::to_vec(value).expect("json");
    let blob = Blob {
        digest: format!("sha256:{}", hex::encode(Sha256::digest(&bytes))),
        size: bytes.len() as u64,
        media_type: media_type.to_string(),
    };
    std::fs::write(blob_path(dir, &blob.digest), &bytes).expect("writing a JSON blob");
    blob
}

fn tmp_blob_path(dir: &Path) -> PathBuf {
    static N: AtomicU64 = AtomicU64::new(0);
    dir.join(format!(
        "blobs/.tmp-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ))
}
