//! Builds devsieve's container image without a container engine and without
//! a base image: one layer holding the `devsieve` binary and exactly the
//! files it needs at run time, taken from the machine that builds it.
//!
//! - the binary at `/usr/local/bin/devsieve`;
//! - its shared libraries as `ldd` resolves them (on Debian 12: libudev,
//!   libgcc_s, libm, libc and the dynamic loader at its `PT_INTERP` path),
//!   each at the path `ldd` prints, with every symlink on the way (`/lib64`,
//!   `/lib`, `libudev.so.1 -> libudev.so.1.7.5`) kept as a symlink;
//! - the CA bundle at `/etc/ssl/certs/ca-certificates.crt`;
//! - `/etc/passwd` and `/etc/group` with `root` and `devsieve` (65532);
//! - an empty `/tmp` (1777).
//!
//! The output is an OCI image layout directory and the same layout as a tar
//! (an "OCI archive"), which `ctr images import`, `podman load` and
//! `skopeo copy oci-archive:...` read. The image's config sets the
//! entrypoint `devsieve`, the user `65532:65532`, `PATH` and the platform.
//!
//! Reproducible: the same binary and the same files on the build machine
//! give the same bytes, so the same digests. Every entry has uid/gid 0 and
//! the mtime `SOURCE_DATE_EPOCH` (0 when unset), entries are sorted, modes
//! are normalised (0755 or 0644), the gzip header has no time or name, and
//! the config has a `created` time only when `SOURCE_DATE_EPOCH` is given.

use std::collections::{BTreeMap, VecDeque};
use std::ffi::OsString;
use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};
use std::process::Command;

use flate2::{Compression, GzBuilder};
use oci_spec::image::{
    Arch, ConfigBuilder, DescriptorBuilder, Digest, HistoryBuilder, ImageConfigurationBuilder, ImageIndexBuilder,
    ImageManifestBuilder, MediaType, OciLayoutBuilder, Os, PlatformBuilder, RootFsBuilder,
};
use sha2::{Digest as _, Sha256};

/// Where the binary is in the image.
pub const BINARY_PATH: &str = "/usr/local/bin/devsieve";
/// The image's default user: `devsieve`, not root. The shipped manifests
/// override it with `runAsUser: 0` and drop every capability.
pub const USER_ID: u32 = 65532;
/// Where the CA bundle is in the image (Debian's path, which rustls' and
/// OpenSSL's probes look at).
pub const CA_BUNDLE_PATH: &str = "/etc/ssl/certs/ca-certificates.crt";
/// `PATH` in the image's config.
pub const PATH_ENV: &str = "PATH=/usr/local/bin:/usr/bin:/bin";
/// The reference name the index gives the image by default: the placeholder
/// the manifests in `deploy/` use.
pub const DEFAULT_REFERENCE: &str = concat!("ghcr.io/devsieve/devsieve:", env!("CARGO_PKG_VERSION"));
/// The layout directory inside the output directory.
pub const LAYOUT_DIR: &str = "oci";
/// The archive (tar of the layout) inside the output directory.
pub const ARCHIVE_FILE: &str = "devsieve-oci.tar";

/// What went wrong building the image.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: io::Error },
    #[error("running `ldd {}`: {source}", binary.display())]
    LddSpawn { binary: PathBuf, source: io::Error },
    #[error("`ldd {}` failed: {message}", binary.display())]
    Ldd { binary: PathBuf, message: String },
    #[error("{}: shared library {library} not found (ldd: {line:?})", binary.display())]
    LibraryNotFound { binary: PathBuf, library: String, line: String },
    #[error("{}: not an ELF file", path.display())]
    NotElf { path: PathBuf },
    #[error("{}: ELF machine {machine} (class {class}, data {data}) has no OCI architecture here", path.display())]
    UnknownArch { path: PathBuf, machine: u16, class: u8, data: u8 },
    #[error("{}: more than 40 symlinks on the way", path.display())]
    SymlinkLoop { path: PathBuf },
    #[error("{}: not a regular file, directory or symlink", path.display())]
    Unsupported { path: PathBuf },
    #[error("{}: a path in the image is both {first} and {second}", path.display())]
    Conflict { path: PathBuf, first: &'static str, second: &'static str },
    #[error("{}: not replaced: it exists and is not an OCI image layout (no oci-layout file)", path.display())]
    NotALayout { path: PathBuf },
    #[error("reference name {0:?}: must be non-empty, without whitespace")]
    Reference(String),
    #[error("SOURCE_DATE_EPOCH {0}: out of range")]
    Epoch(u64),
    #[error("building the OCI {what}: {source}")]
    Spec { what: &'static str, source: oci_spec::OciSpecError },
}

type Result<T, E = Error> = std::result::Result<T, E>;

fn io_error(path: &Path) -> impl FnOnce(io::Error) -> Error + '_ {
    move |source| Error::Io { path: path.to_path_buf(), source }
}

fn spec_error(what: &'static str) -> impl FnOnce(oci_spec::OciSpecError) -> Error {
    move |source| Error::Spec { what, source }
}

/// What to build.
#[derive(Debug, Clone)]
pub struct Options {
    /// The `devsieve` binary (usually `target/release/devsieve`).
    pub binary: PathBuf,
    /// The output directory: the layout goes to `OUT/oci`, the archive to
    /// `OUT/devsieve-oci.tar`.
    pub out: PathBuf,
    /// `org.opencontainers.image.ref.name` of the image in the index.
    pub reference: String,
    /// The CA bundle to copy to [`CA_BUNDLE_PATH`].
    pub ca_bundle: PathBuf,
    /// Every mtime, and the config's `created` when given; 0 and no
    /// `created` when `None`.
    pub source_date_epoch: Option<u64>,
    /// gzip level of the layer, 0–9.
    pub compression: u32,
}

impl Options {
    /// The defaults for `binary` and `out`: the reference
    /// [`DEFAULT_REFERENCE`], the system CA bundle, no `SOURCE_DATE_EPOCH`,
    /// the best compression.
    pub fn new(binary: impl Into<PathBuf>, out: impl Into<PathBuf>) -> Options {
        Options {
            binary: binary.into(),
            out: out.into(),
            reference: DEFAULT_REFERENCE.to_string(),
            ca_bundle: PathBuf::from(CA_BUNDLE_PATH),
            source_date_epoch: None,
            compression: 9,
        }
    }
}

/// One file of the image's layer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerEntry {
    /// The path in the image, without the leading `/`.
    pub path: String,
    /// `dir`, `file` or `symlink -> TARGET`.
    pub kind: String,
    /// Bytes of a file, 0 otherwise.
    pub size: u64,
}

/// The image that was written.
#[derive(Debug, Clone)]
pub struct Image {
    /// The OCI image layout directory.
    pub layout: PathBuf,
    /// The OCI archive (tar of `layout`).
    pub archive: PathBuf,
    /// The reference name in the index.
    pub reference: String,
    /// The image manifest's digest (`sha256:...`): the image's digest.
    pub manifest_digest: String,
    /// The config's digest (the "image id" of Docker and Podman).
    pub config_digest: String,
    /// The layer's digest (gzip-compressed).
    pub layer_digest: String,
    /// The layer's uncompressed digest (the config's `diff_ids`).
    pub diff_id: String,
    /// The compressed size: manifest, config and layer, as a registry stores
    /// and a node pulls them.
    pub compressed_size: u64,
    /// The layer's uncompressed size (the tar; the files are slightly less).
    pub uncompressed_size: u64,
    /// The number of layers (1).
    pub layers: usize,
    /// `os/architecture`.
    pub platform: String,
    /// Everything in the layer, sorted.
    pub entries: Vec<LayerEntry>,
}

/// Builds the image described by `options` and writes the layout and the
/// archive.
pub fn build(options: &Options) -> Result<Image> {
    if options.reference.is_empty() || options.reference.chars().any(char::is_whitespace) {
        return Err(Error::Reference(options.reference.clone()));
    }
    let mtime = options.source_date_epoch.unwrap_or(0);
    let arch = elf_arch(&options.binary)?;

    let mut layer = Layer::default();
    layer.file(BINARY_PATH, read(&options.binary)?, 0o755)?;
    for library in shared_libraries(&options.binary)? {
        layer.host_path(&library)?;
    }
    layer.file(CA_BUNDLE_PATH, read(&options.ca_bundle)?, 0o644)?;
    layer.file("/etc/passwd", passwd().into_bytes(), 0o644)?;
    layer.file("/etc/group", group().into_bytes(), 0o644)?;
    layer.dir("/tmp", 0o1777)?;

    let tar = layer.tar(mtime)?;
    let diff_id = sha256(&tar);
    let gzip = gzip(&tar, options.compression)?;
    let layer_digest = sha256(&gzip);

    let created = match options.source_date_epoch {
        Some(epoch) => Some(
            i64::try_from(epoch)
                .ok()
                .and_then(|seconds| jiff::Timestamp::from_second(seconds).ok())
                .ok_or(Error::Epoch(epoch))?
                .to_string(),
        ),
        None => None,
    };
    let config = ConfigBuilder::default()
        .entrypoint(vec!["devsieve".to_string()])
        .env(vec![PATH_ENV.to_string()])
        .user(format!("{USER_ID}:{USER_ID}"))
        .working_dir("/")
        .build()
        .map_err(spec_error("config"))?;
    let rootfs =
        RootFsBuilder::default().typ("layers").diff_ids(vec![diff_id.clone()]).build().map_err(spec_error("rootfs"))?;
    let mut history = HistoryBuilder::default().created_by(format!(
        "devsieve-oci-image {}: {BINARY_PATH}, its shared libraries, CA bundle, passwd, group, /tmp",
        env!("CARGO_PKG_VERSION")
    ));
    let mut image_config =
        ImageConfigurationBuilder::default().architecture(arch.clone()).os(Os::Linux).config(config).rootfs(rootfs);
    if let Some(created) = &created {
        history = history.created(created.clone());
        image_config = image_config.created(created.clone());
    }
    let image_config = image_config
        .history(vec![history.build().map_err(spec_error("history"))?])
        .build()
        .map_err(spec_error("image config"))?;
    let config_json = image_config.to_string().map_err(spec_error("image config"))?.into_bytes();
    let config_digest = sha256(&config_json);

    let manifest = ImageManifestBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::ImageManifest)
        .config(descriptor(MediaType::ImageConfig, &config_digest, config_json.len())?)
        .layers(vec![descriptor(MediaType::ImageLayerGzip, &layer_digest, gzip.len())?])
        .build()
        .map_err(spec_error("manifest"))?;
    let manifest_json = manifest.to_string().map_err(spec_error("manifest"))?.into_bytes();
    let manifest_digest = sha256(&manifest_json);

    let platform =
        PlatformBuilder::default().architecture(arch.clone()).os(Os::Linux).build().map_err(spec_error("platform"))?;
    let manifest_descriptor = DescriptorBuilder::default()
        .media_type(MediaType::ImageManifest)
        .digest(parse_digest(&manifest_digest)?)
        .size(manifest_json.len() as u64)
        .platform(platform)
        // One annotation only: a map of several would serialise in any order.
        .annotations(std::collections::HashMap::from([(
            "org.opencontainers.image.ref.name".to_string(),
            options.reference.clone(),
        )]))
        .build()
        .map_err(spec_error("descriptor"))?;
    let index = ImageIndexBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::ImageIndex)
        .manifests(vec![manifest_descriptor])
        .build()
        .map_err(spec_error("index"))?;
    let index_json = index.to_string().map_err(spec_error("index"))?.into_bytes();
    let oci_layout = OciLayoutBuilder::default()
        .image_layout_version("1.0.0")
        .build()
        .map_err(spec_error("oci-layout"))?
        .to_string()
        .map_err(spec_error("oci-layout"))?
        .into_bytes();

    // The layout's files, by path in the layout.
    let mut files: BTreeMap<String, &[u8]> = BTreeMap::new();
    files.insert("oci-layout".into(), &oci_layout);
    files.insert("index.json".into(), &index_json);
    for (digest, bytes) in [(&config_digest, &config_json), (&manifest_digest, &manifest_json), (&layer_digest, &gzip)]
    {
        files.insert(blob_path(digest), bytes);
    }

    fs::create_dir_all(&options.out).map_err(io_error(&options.out))?;
    let layout = options.out.join(LAYOUT_DIR);
    write_layout(&layout, &files)?;
    let archive = options.out.join(ARCHIVE_FILE);
    write_archive(&archive, &files, mtime)?;

    Ok(Image {
        layout,
        archive,
        reference: options.reference.clone(),
        manifest_digest,
        config_digest,
        layer_digest,
        diff_id,
        compressed_size: (manifest_json.len() + config_json.len() + gzip.len()) as u64,
        uncompressed_size: tar.len() as u64,
        layers: 1,
        platform: format!("linux/{arch}"),
        entries: layer.entries(),
    })
}

/// `/etc/passwd`: root and the image's default user, neither with a shell.
pub fn passwd() -> String {
    format!("root:x:0:0:root:/root:/sbin/nologin\ndevsieve:x:{USER_ID}:{USER_ID}:devsieve:/nonexistent:/sbin/nologin\n")
}

/// `/etc/group`: root and devsieve.
pub fn group() -> String {
    format!("root:x:0:\ndevsieve:x:{USER_ID}:\n")
}

fn read(path: &Path) -> Result<Vec<u8>> {
    fs::read(path).map_err(io_error(path))
}

fn sha256(bytes: &[u8]) -> String {
    format!("sha256:{:x}", Sha256::digest(bytes))
}

fn parse_digest(digest: &str) -> Result<Digest> {
    digest.parse().map_err(spec_error("digest"))
}

fn blob_path(digest: &str) -> String {
    format!("blobs/{}", digest.replacen(':', "/", 1))
}

fn descriptor(media_type: MediaType, digest: &str, size: usize) -> Result<oci_spec::image::Descriptor> {
    DescriptorBuilder::default()
        .media_type(media_type)
        .digest(parse_digest(digest)?)
        .size(size as u64)
        .build()
        .map_err(spec_error("descriptor"))
}

fn gzip(bytes: &[u8], level: u32) -> Result<Vec<u8>> {
    // No file name, no comment, mtime 0: the header is the same every time.
    let mut encoder = GzBuilder::new().mtime(0).write(Vec::new(), Compression::new(level.min(9)));
    let to_io = |source| Error::Io { path: PathBuf::from("(gzip)"), source };
    encoder.write_all(bytes).map_err(to_io)?;
    encoder.finish().map_err(to_io)
}

/// The OCI architecture of the ELF file at `path`.
pub fn elf_arch(path: &Path) -> Result<Arch> {
    let mut header = [0u8; 20];
    let mut file = fs::File::open(path).map_err(io_error(path))?;
    io::Read::read_exact(&mut file, &mut header).map_err(|_| Error::NotElf { path: path.to_path_buf() })?;
    if header[..4] != *b"\x7fELF" {
        return Err(Error::NotElf { path: path.to_path_buf() });
    }
    let (class, data) = (header[4], header[5]);
    let machine = match data {
        1 => u16::from_le_bytes([header[18], header[19]]),
        2 => u16::from_be_bytes([header[18], header[19]]),
        _ => return Err(Error::NotElf { path: path.to_path_buf() }),
    };
    Ok(match (machine, class, data) {
        (62, 2, 1) => Arch::Amd64,
        (183, 2, 1) => Arch::ARM64,
        (40, 1, 1) => Arch::ARM,
        (3, 1, 1) => Arch::i386,
        (243, 2, 1) => Arch::RISCV64,
        (21, 2, 1) => Arch::PowerPC64le,
        (22, 2, 2) => Arch::s390x,
        _ => return Err(Error::UnknownArch { path: path.to_path_buf(), machine, class, data }),
    })
}

/// The shared libraries `binary` loads, as `ldd` resolves them on this
/// machine: absolute paths, the dynamic loader included (at the path its
/// `PT_INTERP` names), the vDSO left out. Empty for a static binary.
pub fn shared_libraries(binary: &Path) -> Result<Vec<PathBuf>> {
    let output = Command::new("ldd")
        .arg(binary)
        .env("LC_ALL", "C")
        .output()
        .map_err(|source| Error::LddSpawn { binary: binary.to_path_buf(), source })?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    if !output.status.success() {
        if stdout.contains("not a dynamic executable") || stderr.contains("not a dynamic executable") {
            return Ok(Vec::new());
        }
        return Err(Error::Ldd {
            binary: binary.to_path_buf(),
            message: format!("{}{}", stdout, stderr).trim().into(),
        });
    }
    parse_ldd(binary, &stdout)
}

/// The library paths in `ldd`'s output.
pub fn parse_ldd(binary: &Path, output: &str) -> Result<Vec<PathBuf>> {
    let mut libraries = Vec::new();
    for line in output.lines().map(str::trim).filter(|line| !line.is_empty()) {
        if line.contains("statically linked") {
            continue;
        }
        let path = match line.split_once("=>") {
            // `libudev.so.1 => /lib/x86_64-linux-gnu/libudev.so.1 (0x...)`
            Some((name, resolved)) => {
                let resolved = resolved.trim();
                if resolved.starts_with("not found") || !resolved.starts_with('/') {
                    // `linux-vdso.so.1 =>  (0x...)` on old glibc: no file.
                    if resolved.starts_with('(') && name.trim().starts_with("linux-") {
                        continue;
                    }
                    return Err(Error::LibraryNotFound {
                        binary: binary.to_path_buf(),
                        library: name.trim().to_string(),
                        line: line.to_string(),
                    });
                }
                resolved.split(" (").next().unwrap_or(resolved)
            }
            // `/lib64/ld-linux-x86-64.so.2 (0x...)`, or the vDSO `linux-vdso.so.1 (0x...)`.
            None => {
                let path = line.split(" (").next().unwrap_or(line);
                if !path.starts_with('/') {
                    continue;
                }
                path
            }
        };
        let path = PathBuf::from(path);
        if !libraries.contains(&path) {
            libraries.push(path);
        }
    }
    Ok(libraries)
}

#[derive(Debug, Clone)]
enum Node {
    Dir { mode: u32 },
    File { bytes: Vec<u8>, mode: u32 },
    Symlink { target: PathBuf },
}

impl Node {
    fn kind(&self) -> &'static str {
        match self {
            Node::Dir { .. } => "a directory",
            Node::File { .. } => "a file",
            Node::Symlink { .. } => "a symlink",
        }
    }
}

/// The layer's tree, keyed by path without the leading `/`; sorted, so a
/// directory comes before what it holds.
#[derive(Debug, Default)]
struct Layer {
    nodes: BTreeMap<String, Node>,
}

fn key(path: &Path) -> String {
    path.components()
        .filter_map(|c| match c {
            Component::Normal(name) => Some(name.to_string_lossy().into_owned()),
            _ => None,
        })
        .collect::<Vec<_>>()
        .join("/")
}

impl Layer {
    fn insert(&mut self, path: &Path, node: Node) -> Result<()> {
        let key = key(path);
        if key.is_empty() {
            return Ok(());
        }
        if let Some(parent) = path.parent() {
            self.parents(parent)?;
        }
        match self.nodes.get(&key) {
            Some(Node::Dir { .. }) if matches!(node, Node::Dir { .. }) => {
                // Keep a mode set on purpose (/tmp) over an implied 0755.
                if let Node::Dir { mode } = node
                    && mode != 0o755
                {
                    self.nodes.insert(key, node);
                }
                Ok(())
            }
            Some(existing) if std::mem::discriminant(existing) != std::mem::discriminant(&node) => {
                Err(Error::Conflict { path: path.to_path_buf(), first: existing.kind(), second: node.kind() })
            }
            _ => {
                self.nodes.insert(key, node);
                Ok(())
            }
        }
    }

    fn parents(&mut self, dir: &Path) -> Result<()> {
        let mut so_far = PathBuf::from("/");
        for component in dir.components() {
            if let Component::Normal(name) = component {
                so_far.push(name);
                let key = key(&so_far);
                match self.nodes.get(&key) {
                    None => {
                        self.nodes.insert(key, Node::Dir { mode: 0o755 });
                    }
                    Some(Node::Dir { .. }) => {}
                    Some(other) => {
                        return Err(Error::Conflict { path: so_far, first: other.kind(), second: "a directory" });
                    }
                }
            }
        }
        Ok(())
    }

    fn file(&mut self, path: impl AsRef<Path>, bytes: Vec<u8>, mode: u32) -> Result<()> {
        self.insert(path.as_ref(), Node::File { bytes, mode })
    }

    fn dir(&mut self, path: impl AsRef<Path>, mode: u32) -> Result<()> {
        self.insert(path.as_ref(), Node::Dir { mode })
    }

    /// Copies the host's `path` to the same path in the image, resolving it
    /// one component at a time: every symlink met on the way (`/lib64 ->
    /// usr/lib64`, `libudev.so.1 -> libudev.so.1.7.5`) is added as the same
    /// symlink, and the file it ends at as a file.
    fn host_path(&mut self, path: &Path) -> Result<()> {
        let mut resolved = PathBuf::from("/");
        let mut pending: VecDeque<OsString> = components(path);
        let mut hops = 0;
        while let Some(name) = pending.pop_front() {
            if name == ".." {
                resolved.pop();
                continue;
            }
            let candidate = resolved.join(&name);
            let metadata = fs::symlink_metadata(&candidate).map_err(io_error(&candidate))?;
            let file_type = metadata.file_type();
            if file_type.is_symlink() {
                hops += 1;
                if hops > 40 {
                    return Err(Error::SymlinkLoop { path: path.to_path_buf() });
                }
                let target = fs::read_link(&candidate).map_err(io_error(&candidate))?;
                self.insert(&candidate, Node::Symlink { target: target.clone() })?;
                if target.is_absolute() {
                    resolved = PathBuf::from("/");
                }
                for component in components(&target).into_iter().rev() {
                    pending.push_front(component);
                }
            } else if file_type.is_dir() {
                self.dir(&candidate, 0o755)?;
                resolved = candidate;
            } else if file_type.is_file() && pending.is_empty() {
                let executable = metadata.permissions().mode() & 0o111 != 0;
                let bytes = read(&candidate)?;
                self.file(&candidate, bytes, if executable { 0o755 } else { 0o644 })?;
                resolved = candidate;
            } else {
                return Err(Error::Unsupported { path: candidate });
            }
        }
        Ok(())
    }

    fn entries(&self) -> Vec<LayerEntry> {
        self.nodes
            .iter()
            .map(|(path, node)| LayerEntry {
                path: path.clone(),
                kind: match node {
                    Node::Dir { .. } => "dir".into(),
                    Node::File { .. } => "file".into(),
                    Node::Symlink { target } => format!("symlink -> {}", target.display()),
                },
                size: match node {
                    Node::File { bytes, .. } => bytes.len() as u64,
                    _ => 0,
                },
            })
            .collect()
    }

    /// The layer as an uncompressed tar.
    fn tar(&self, mtime: u64) -> Result<Vec<u8>> {
        let mut builder = tar::Builder::new(Vec::new());
        let to_io = |path: &str| {
            let path = PathBuf::from(format!("/{path}"));
            move |source| Error::Io { path, source }
        };
        for (path, node) in &self.nodes {
            let mut header = header(mtime);
            match node {
                Node::Dir { mode } => {
                    header.set_entry_type(tar::EntryType::Directory);
                    header.set_mode(*mode);
                    header.set_size(0);
                    builder.append_data(&mut header, format!("{path}/"), io::empty()).map_err(to_io(path))?;
                }
                Node::File { bytes, mode } => {
                    header.set_entry_type(tar::EntryType::Regular);
                    header.set_mode(*mode);
                    header.set_size(bytes.len() as u64);
                    builder.append_data(&mut header, path, bytes.as_slice()).map_err(to_io(path))?;
                }
                Node::Symlink { target } => {
                    header.set_entry_type(tar::EntryType::Symlink);
                    header.set_mode(0o777);
                    header.set_size(0);
                    builder.append_link(&mut header, path, target).map_err(to_io(path))?;
                }
            }
        }
        builder.into_inner().map_err(to_io("(layer)"))
    }
}

fn components(path: &Path) -> VecDeque<OsString> {
    path.components()
        .filter_map(|c| match c {
            Component::Normal(name) => Some(name.to_os_string()),
            Component::ParentDir => Some(OsString::from("..")),
            _ => None,
        })
        .collect()
}

/// A tar header owned by root with the fixed mtime.
fn header(mtime: u64) -> tar::Header {
    let mut header = tar::Header::new_ustar();
    header.set_uid(0);
    header.set_gid(0);
    header.set_mtime(mtime);
    header
}

/// Writes the layout to `dir`, replacing an earlier layout there (never
/// another kind of directory).
fn write_layout(dir: &Path, files: &BTreeMap<String, &[u8]>) -> Result<()> {
    if dir.exists() {
        let empty = fs::read_dir(dir).map_err(io_error(dir))?.next().is_none();
        if !empty && !dir.join("oci-layout").is_file() {
            return Err(Error::NotALayout { path: dir.to_path_buf() });
        }
        fs::remove_dir_all(dir).map_err(io_error(dir))?;
    }
    for (path, bytes) in files {
        let path = dir.join(path);
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).map_err(io_error(parent))?;
        }
        fs::write(&path, bytes).map_err(io_error(&path))?;
    }
    Ok(())
}

/// Writes the layout as a tar to `file` (through a temporary file beside
/// it, so a reader never sees half an archive).
fn write_archive(file: &Path, files: &BTreeMap<String, &[u8]>, mtime: u64) -> Result<()> {
    let partial = file.with_extension("tar.partial");
    let out = fs::File::create(&partial).map_err(io_error(&partial))?;
    let mut builder = tar::Builder::new(io::BufWriter::new(out));
    let mut dirs: Vec<String> = Vec::new();
    for path in files.keys() {
        let mut so_far = String::new();
        for part in path.split('/').collect::<Vec<_>>().iter().rev().skip(1).rev() {
            so_far.push_str(part);
            so_far.push('/');
            if !dirs.contains(&so_far) {
                dirs.push(so_far.clone());
            }
        }
    }
    let mut entries: BTreeMap<String, Option<&[u8]>> = dirs.into_iter().map(|dir| (dir, None)).collect();
    entries.extend(files.iter().map(|(path, bytes)| (path.clone(), Some(*bytes))));
    for (path, bytes) in entries {
        let mut header = header(mtime);
        match bytes {
            None => {
                header.set_entry_type(tar::EntryType::Directory);
                header.set_mode(0o755);
                header.set_size(0);
                builder.append_data(&mut header, &path, io::empty()).map_err(io_error(&partial))?;
            }
            Some(bytes) => {
                header.set_entry_type(tar::EntryType::Regular);
                header.set_mode(0o644);
                header.set_size(bytes.len() as u64);
                builder.append_data(&mut header, &path, bytes).map_err(io_error(&partial))?;
            }
        }
    }
    let mut out = builder.into_inner().map_err(io_error(&partial))?;
    out.flush().map_err(io_error(&partial))?;
    drop(out);
    fs::rename(&partial, file).map_err(io_error(file))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_debian_ldd_output() {
        let output = "\tlinux-vdso.so.1 (0x00007ffd)\n\
            \tlibudev.so.1 => /lib/x86_64-linux-gnu/libudev.so.1 (0x00007f1b)\n\
            \tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f1c)\n\
            \t/lib64/ld-linux-x86-64.so.2 (0x00007f1d)\n";
        let libraries = parse_ldd(Path::new("devsieve"), output).unwrap();
        assert_eq!(
            libraries,
            [
                PathBuf::from("/lib/x86_64-linux-gnu/libudev.so.1"),
                PathBuf::from("/lib/x86_64-linux-gnu/libc.so.6"),
                PathBuf::from("/lib64/ld-linux-x86-64.so.2"),
            ]
        );
    }

    #[test]
    fn a_missing_library_is_an_error() {
        let output = "\tlibudev.so.1 => not found\n";
        let error = parse_ldd(Path::new("devsieve"), output).unwrap_err();
        assert!(matches!(error, Error::LibraryNotFound { ref library, .. } if library == "libudev.so.1"), "{error}");
    }

    #[test]
    fn symlinks_on_the_way_are_kept() {
        let root = tempfile::tempdir().unwrap();
        let base = root.path();
        fs::create_dir_all(base.join("usr/lib")).unwrap();
        fs::write(base.join("usr/lib/libx.so.1.2"), b"elf").unwrap();
        std::os::unix::fs::symlink("libx.so.1.2", base.join("usr/lib/libx.so.1")).unwrap();
        std::os::unix::fs::symlink("usr/lib", base.join("lib")).unwrap();
        let mut layer = Layer::default();
        layer.host_path(&base.join("lib/libx.so.1")).unwrap();
        let prefix = key(base);
        let kinds: Vec<(String, String)> = layer
            .entries()
            .into_iter()
            .filter_map(|e| e.path.strip_prefix(&format!("{prefix}/")).map(|p| (p.to_string(), e.kind)))
            .collect();
        assert_eq!(
            kinds,
            [
                ("lib".to_string(), "symlink -> usr/lib".to_string()),
                ("usr".to_string(), "dir".to_string()),
                ("usr/lib".to_string(), "dir".to_string()),
                ("usr/lib/libx.so.1".to_string(), "symlink -> libx.so.1.2".to_string()),
                ("usr/lib/libx.so.1.2".to_string(), "file".to_string()),
            ]
        );
    }

    #[test]
    fn the_tar_is_deterministic() {
        let mut layer = Layer::default();
        layer.file("/etc/passwd", passwd().into_bytes(), 0o644).unwrap();
        layer.dir("/tmp", 0o1777).unwrap();
        let tar = layer.tar(0).unwrap();
        assert_eq!(tar, layer.tar(0).unwrap());
        assert_eq!(gzip(&tar, 9).unwrap(), gzip(&tar, 9).unwrap());
        let mut archive = tar::Archive::new(tar.as_slice());
        let names: Vec<(String, u32, u64)> = archive
            .entries()
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                let h = e.header();
                (e.path().unwrap().display().to_string(), h.mode().unwrap(), h.mtime().unwrap())
            })
            .collect();
        assert_eq!(
            names,
            [("etc/".to_string(), 0o755, 0), ("etc/passwd".to_string(), 0o644, 0), ("tmp/".to_string(), 0o1777, 0)]
        );
    }
}
