//! A real registry for the tests: Debian's `docker-registry` (distribution
//! 2.x) inside a namespace of the test's own, and images the tests build
//! from busybox-static and push through the registry's HTTP API.

use std::{
    collections::BTreeMap,
    fs,
    io::{Read as _, Write as _},
    net::{SocketAddr, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::Duration,
};

use anyhow::Context as _;
use sha2::{Digest as _, Sha256};

use crate::{Swarm, Topology, TopologyOptions, in_netns, try_wait_until};

/// Where a test's registry listens: its topology's client address.
pub const TEST_REGISTRY: &str = "198.18.0.100:5000";

/// Two hosts, h1 the manager and h2 a worker, trusting a registry on the
/// client that holds busybox as `tools:1`; with that image's reference.
pub fn busybox_swarm(tag: &str) -> (Topology, Registry, String) {
    let mut options = TopologyOptions::new(tag, 2);
    options.daemon_args = vec!["--insecure-registry".into(), TEST_REGISTRY.into()];
    let topology = Swarm::new().workers([1]).start(&options).unwrap();
    let (registry, image) = Registry::with_busybox(&topology).unwrap();
    (topology, registry, image)
}

const REGISTRY: &str = "/usr/bin/docker-registry";
const BUSYBOX: &str = "/bin/busybox";
const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// This host's architecture as OCI names it.
const HOST_ARCH: &str = match std::env::consts::ARCH.as_bytes() {
    b"x86_64" => "amd64",
    b"aarch64" => "arm64",
    _ => std::env::consts::ARCH,
};

/// A registry process, stopped (and its storage deleted) when dropped.
pub struct Registry {
    pub addr: SocketAddr,
    /// `None`: this process's own namespace (a registry on loopback, for
    /// the Docker engine the tests share).
    netns: Option<String>,
    process: Child,
    dir: tempfile::TempDir,
}

impl Registry {
    /// A plain-HTTP registry on `addr`, inside namespace `netns` (which
    /// holds that address); returns once it answers.
    pub fn start(netns: &str, addr: SocketAddr) -> anyhow::Result<Self> {
        Self::start_in(Some(netns), addr)
    }

    /// A plain-HTTP registry on loopback in this process's namespace,
    /// where the tests' Docker engine runs.
    pub fn start_on_loopback(port: u16) -> anyhow::Result<Self> {
        Self::start_in(None, SocketAddr::from(([127, 0, 0, 1], port)))
    }

    /// A second registry on `addr` serving `plain`'s storage over TLS
    /// (`cert` and `key`, PEM) to users of `htpasswd` only. The tests push
    /// through the plain one.
    pub fn start_secure(
        plain: &Registry,
        addr: SocketAddr,
        cert: &Path,
        key: &Path,
        htpasswd: &Path,
    ) -> anyhow::Result<Self> {
        let extra = format!(
            "  tls:\n    certificate: {}\n    key: {}\nauth:\n  htpasswd:\n    realm: swarm-test\n    path: {}\n",
            cert.display(),
            key.display(),
            htpasswd.display()
        );
        let netns = plain.netns.clone();
        let storage = plain.dir.path().join("storage");
        Self::spawn(netns.as_deref(), addr, &storage, &extra, false)
    }

    fn start_in(netns: Option<&str>, addr: SocketAddr) -> anyhow::Result<Self> {
        let dir = tempfile::Builder::new().prefix("swt-registry-").tempdir()?;
        let storage = dir.path().join("storage");
        Self::spawn_in_dir(netns, addr, &storage, "", true, dir)
    }

    fn spawn(
        netns: Option<&str>,
        addr: SocketAddr,
        storage: &Path,
        extra: &str,
        plain: bool,
    ) -> anyhow::Result<Self> {
        let dir = tempfile::Builder::new().prefix("swt-registry-").tempdir()?;
        Self::spawn_in_dir(netns, addr, storage, extra, plain, dir)
    }

    fn spawn_in_dir(
        netns: Option<&str>,
        addr: SocketAddr,
        storage: &Path,
        extra: &str,
        plain: bool,
        dir: tempfile::TempDir,
    ) -> anyhow::Result<Self> {
        anyhow::ensure!(
            Path::new(REGISTRY).exists(),
            "{REGISTRY} is missing: run `cargo xtask setup` (it installs docker-registry)"
        );
        let config = dir.path().join("config.yml");
        fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: info\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: {addr}\n{extra}",
                storage.display()
            ),
        )?;
        let log = fs::File::create(dir.path().join("registry.log"))?;
        let mut command = match netns {
            Some(netns) => {
                let mut command = Command::new("ip");
                command.args(["netns", "exec", netns, REGISTRY]);
                command
            }
            None => Command::new(REGISTRY),
        };
        let process = command
            .arg("serve")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting docker-registry")?;
        let registry = Self {
            addr,
            netns: netns.map(str::to_owned),
            process,
            dir,
        };
        if plain {
            try_wait_until(
                "the registry answering /v2/",
                Duration::from_secs(10),
                || {
                    registry
                        .request("GET", "/v2/", &[], &[])
                        .map_err(|e| e.to_string())
                        .and_then(|r| {
                            (r.status == 200)
                                .then_some(())
                                .ok_or(format!("status {}", r.status))
                        })
                },
            )
            .with_context(|| registry.log())?;
        } else {
            // TLS and a login: the log says when it listens.
            try_wait_until("the registry listening", Duration::from_secs(10), || {
                let log = registry.log();
                log.contains("listening on").then_some(()).ok_or(log)
            })?;
        }
        Ok(registry)
    }

    /// What the registry logged.
    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default()
    }

    /// How many times the registry served blob `digest` of `repository`.
    pub fn blob_fetches(&self, repository: &str, digest: &str) -> usize {
        let uri = format!("/v2/{repository}/blobs/{digest}");
        self.log()
            .lines()
            .filter(|line| {
                line.contains("response completed")
                    && line.contains("http.request.method=GET")
                    && line.contains(&format!("http.request.uri=\"{uri}\""))
            })
            .count()
    }

    /// Pushes `image` as `repository:tag`; returns the manifest's digest.
    pub fn push(&self, repository: &str, tag: &str, image: &TestImage) -> anyhow::Result<String> {
        let manifest = self.push_parts(repository, image, HOST_ARCH)?;
        self.put_manifest(repository, tag, OCI_MANIFEST, &manifest)?;
        Ok(digest(&manifest))
    }

    /// Pushes an image index under `tag` naming `image` for this host's
    /// architecture and `other` for `other_arch`, each by digest; returns
    /// the index's digest.
    pub fn push_index(
        &self,
        repository: &str,
        tag: &str,
        image: &TestImage,
        other: &TestImage,
        other_arch: &str,
    ) -> anyhow::Result<String> {
        let mut entries = Vec::new();
        for (image, arch) in [(other, other_arch), (image, HOST_ARCH)] {
            let manifest = self.push_parts(repository, image, arch)?;
            let manifest_digest = digest(&manifest);
            self.put_manifest(repository, &manifest_digest, OCI_MANIFEST, &manifest)?;
            entries.push(serde_json::json!({
                "mediaType": OCI_MANIFEST,
                "digest": manifest_digest,
                "size": manifest.len(),
                "platform": {"architecture": arch, "os": "linux"},
            }));
        }
        let index = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": OCI_INDEX,
            "manifests": entries,
        }))?;
        self.put_manifest(repository, tag, OCI_INDEX, &index)?;
        Ok(digest(&index))
    }

    /// Pushes the image's layers and config; returns its manifest.
    fn push_parts(
        &self,
        repository: &str,
        image: &TestImage,
        arch: &str,
    ) -> anyhow::Result<Vec<u8>> {
        let (mut layers, mut diff_ids) = (Vec::new(), Vec::new());
        for layer in &image.layers {
            let tar = layer.tar()?;
            diff_ids.push(digest(&tar));
            let (blob, media_type) = if layer.zstd {
                (
                    zstd::encode_all(tar.as_slice(), 3)?,
                    "application/vnd.oci.image.layer.v1.tar+zstd",
                )
            } else {
                let mut gzip =
                    flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
                gzip.write_all(&tar)?;
                (
                    gzip.finish()?,
                    "application/vnd.oci.image.layer.v1.tar+gzip",
                )
            };
            let blob_digest = self.push_blob(repository, &blob)?;
            layers.push(serde_json::json!({
                "mediaType": media_type,
                "digest": blob_digest,
                "size": blob.len(),
            }));
        }
        let config = serde_json::json!({
            "architecture": arch,
            "os": "linux",
            "config": image.config,
            "rootfs": {
                "type": "layers",
                "diff_ids": diff_ids,
            },
        });
        let config = serde_json::to_vec(&config)?;
        let config_digest = self.push_blob(repository, &config)?;
        Ok(serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": config_digest,
                "size": config.len(),
            },
            "layers": layers,
        }))?)
    }

    fn put_manifest(
        &self,
        repository: &str,
        reference: &str,
        media_type: &str,
        manifest: &[u8],
    ) -> anyhow::Result<()> {
        let answer = self.request(
            "PUT",
            &format!("/v2/{repository}/manifests/{reference}"),
            &[("Content-Type", media_type)],
            manifest,
        )?;
        anyhow::ensure!(
            answer.status == 201,
            "pushing the manifest {repository}:{reference}: {answer:?}"
        );
        Ok(())
    }

    /// The digests of `repository:tag`'s layers, bottom first.
    pub fn layer_digests(&self, repository: &str, tag: &str) -> anyhow::Result<Vec<String>> {
        let answer = self.request(
            "GET",
            &format!("/v2/{repository}/manifests/{tag}"),
            &[("Accept", "application/vnd.oci.image.manifest.v1+json")],
            &[],
        )?;
        let manifest: serde_json::Value = serde_json::from_slice(&answer.body)?;
        Ok(manifest["layers"]
            .as_array()
            .context("a manifest without layers")?
            .iter()
            .filter_map(|l| l["digest"].as_str().map(str::to_owned))
            .collect())
    }

    /// A monolithic upload: a POST opens it, one PUT carries the bytes.
    fn push_blob(&self, repository: &str, blob: &[u8]) -> anyhow::Result<String> {
        let digest = digest(blob);
        let opened = self.request(
            "POST",
            &format!("/v2/{repository}/blobs/uploads/"),
            &[],
            &[],
        )?;
        anyhow::ensure!(
            opened.status == 202,
            "opening an upload to {repository}: {opened:?}"
        );
        let location = opened.location.context("an upload without a Location")?;
        // The location may be absolute; only its path and query are sent.
        let path = match location.find("/v2/") {
            Some(at) => location[at..].to_owned(),
            None => location,
        };
        let separator = if path.contains('?') { '&' } else { '?' };
        let answer = self.request(
            "PUT",
            &format!("{path}{separator}digest={digest}"),
            &[("Content-Type", "application/octet-stream")],
            blob,
        )?;
        anyhow::ensure!(
            answer.status == 201,
            "uploading {digest} to {repository}: {answer:?}"
        );
        Ok(digest)
    }

    /// Fetches blob `digest` of `repository` from inside `netns`; returns
    /// its length (the bench's raw transfer, without a registry client).
    pub fn fetch_blob_from(
        &self,
        netns: &str,
        repository: &str,
        digest: &str,
    ) -> anyhow::Result<usize> {
        let path = format!("/v2/{repository}/blobs/{digest}");
        let answer = self.request_from(Some(netns), "GET", &path, &[], &[])?;
        anyhow::ensure!(answer.status == 200, "fetching {digest}: {answer:?}");
        Ok(answer.body.len())
    }

    /// One HTTP/1.1 request from inside the registry's namespace.
    fn request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> anyhow::Result<Answer> {
        self.request_from(self.netns.as_deref(), method, path, headers, body)
    }

    /// One HTTP/1.1 request from inside `netns` (`None`: this one).
    fn request_from(
        &self,
        netns: Option<&str>,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> anyhow::Result<Answer> {
        let (addr, method, path) = (self.addr, method.to_owned(), path.to_owned());
        let headers: Vec<(String, String)> = headers
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        let body = body.to_vec();
        let exchange = move || {
            let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
            stream.set_read_timeout(Some(Duration::from_secs(10)))?;
            let mut request = format!(
                "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: {}\r\nConnection: close\r\n",
                body.len()
            );
            for (key, value) in &headers {
                request.push_str(&format!("{key}: {value}\r\n"));
            }
            request.push_str("\r\n");
            stream.write_all(request.as_bytes())?;
            stream.write_all(&body)?;
            let mut response = Vec::new();
            stream.read_to_end(&mut response)?;
            Answer::parse(&response)
        };
        match netns {
            Some(netns) => in_netns(netns, exchange),
            None => exchange(),
        }
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.process.kill();
        let _ = self.process.wait();
    }
}

#[derive(Debug)]
struct Answer {
    status: u16,
    location: Option<String>,
    body: Vec<u8>,
}

impl Answer {
    fn parse(response: &[u8]) -> anyhow::Result<Self> {
        let end = response
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .context("no end of headers")?;
        let head = String::from_utf8_lossy(&response[..end]);
        let status = head
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .context("no status")?;
        let location = head.lines().find_map(|line| {
            let (key, value) = line.split_once(':')?;
            key.eq_ignore_ascii_case("location")
                .then(|| value.trim().to_owned())
        });
        Ok(Self {
            status,
            location,
            body: response[end + 4..].to_vec(),
        })
    }
}

/// An image to push: its layers, bottom first, and its config (Docker's
/// `config` object: `Cmd`, `Entrypoint`, `Env`, ...).
pub struct TestImage {
    pub layers: Vec<TestLayer>,
    pub config: serde_json::Value,
}

/// One layer: files by path (`None` for a directory), symlinks, and OCI
/// whiteouts of paths below it.
#[derive(Default)]
pub struct TestLayer {
    pub files: BTreeMap<String, Option<Vec<u8>>>,
    pub executables: BTreeMap<String, PathBuf>,
    pub symlinks: BTreeMap<String, String>,
    pub whiteouts: Vec<String>,
    /// Compressed with zstd instead of gzip.
    pub zstd: bool,
}

impl Registry {
    /// A registry on `topology`'s client holding busybox as `tools:1`,
    /// and that image's reference.
    pub fn with_busybox(topology: &Topology) -> anyhow::Result<(Self, String)> {
        let registry = Self::start(topology.client.netns.name(), TEST_REGISTRY.parse()?)?;
        registry.push("tools", "1", &TestImage::busybox())?;
        Ok((registry, format!("{TEST_REGISTRY}/tools:1")))
    }
}

impl TestImage {
    /// busybox alone, with `PATH=/bin`.
    pub fn busybox() -> Self {
        Self {
            layers: vec![TestLayer::busybox()],
            config: serde_json::json!({"Env": ["PATH=/bin"]}),
        }
    }
}

impl TestLayer {
    /// busybox-static as /bin/busybox, `sh` linked to it, and the
    /// directories a root needs.
    pub fn busybox() -> Self {
        let mut layer = Self::default();
        for dir in ["bin", "etc", "proc", "tmp", "dev", "www"] {
            layer.files.insert(format!("{dir}/"), None);
        }
        layer
            .executables
            .insert("bin/busybox".into(), PathBuf::from(BUSYBOX));
        layer.symlinks.insert("bin/sh".into(), "busybox".into());
        layer.files.insert(
            "etc/passwd".into(),
            Some(b"root:x:0:0:root:/root:/bin/sh\n".to_vec()),
        );
        layer
    }

    fn tar(&self) -> anyhow::Result<Vec<u8>> {
        let mut builder = tar::Builder::new(Vec::new());
        let header = |kind: tar::EntryType, size: u64, mode: u32| {
            let mut header = tar::Header::new_gnu();
            header.set_entry_type(kind);
            header.set_size(size);
            header.set_mode(mode);
            header.set_uid(0);
            header.set_gid(0);
            header.set_mtime(0);
            header
        };
        for (path, contents) in &self.files {
            match contents {
                None => {
                    let mut h = header(tar::EntryType::Directory, 0, 0o755);
                    builder.append_data(&mut h, path, std::io::empty())?;
                }
                Some(bytes) => {
                    let mut h = header(tar::EntryType::Regular, bytes.len() as u64, 0o644);
                    builder.append_data(&mut h, path, bytes.as_slice())?;
                }
            }
        }
        for (path, source) in &self.executables {
            let bytes =
                fs::read(source).with_context(|| format!("reading {}", source.display()))?;
            let mut h = header(tar::EntryType::Regular, bytes.len() as u64, 0o755);
            builder.append_data(&mut h, path, bytes.as_slice())?;
        }
        for (path, target) in &self.symlinks {
            let mut h = header(tar::EntryType::Symlink, 0, 0o777);
            builder.append_link(&mut h, path, target)?;
        }
        for path in &self.whiteouts {
            let whiteout = match path.rsplit_once('/') {
                Some((dir, name)) => format!("{dir}/.wh.{name}"),
                None => format!(".wh.{path}"),
            };
            let mut h = header(tar::EntryType::Regular, 0, 0o644);
            builder.append_data(&mut h, whiteout, std::io::empty())?;
        }
        Ok(builder.into_inner()?)
    }
}

fn digest(bytes: &[u8]) -> String {
    let hash = Sha256::digest(bytes);
    format!(
        "sha256:{}",
        hash.iter().map(|b| format!("{b:02x}")).collect::<String>()
    )
}

/// `openssl` in `dir`: a CA, and a certificate it signs for IP `ip`; the
/// paths of the CA's certificate, the server's certificate and its key.
pub fn test_certificates(dir: &Path, ip: &str) -> anyhow::Result<(PathBuf, PathBuf, PathBuf)> {
    let run = |args: &[&str]| -> anyhow::Result<()> {
        let out = Command::new("openssl")
            .current_dir(dir)
            .args(args)
            .output()?;
        anyhow::ensure!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(())
    };
    let days = "2";
    run(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
        "-days",
        days,
        "-subj",
        "/CN=swarm test CA",
    ])?;
    let subject = format!("/CN={ip}");
    run(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        &subject,
    ])?;
    std::fs::write(dir.join("san.ext"), format!("subjectAltName=IP:{ip}\n"))?;
    run(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.crt",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.crt",
        "-days",
        days,
        "-extfile",
        "san.ext",
    ])?;
    Ok((
        dir.join("ca.crt"),
        dir.join("server.crt"),
        dir.join("server.key"),
    ))
}

/// An htpasswd file in `dir` holding `user` with `password` (bcrypt).
pub fn htpasswd_file(dir: &Path, user: &str, password: &str) -> anyhow::Result<PathBuf> {
    let path = dir.join("htpasswd");
    let out = Command::new("htpasswd")
        .arg("-Bbc")
        .arg(&path)
        .args([user, password])
        .output()?;
    anyhow::ensure!(
        out.status.success(),
        "htpasswd: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(path)
}
