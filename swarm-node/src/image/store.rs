//! The node's content store, under `<data dir>/images`: image configs by
//! digest, each layer unpacked once into `layers/<digest>` and shared by
//! every task that uses it. Pulls go through oci-client (the OCI
//! distribution API: manifest lists and indexes resolved to this node's
//! platform, Docker v2 and OCI manifests, Basic and Bearer auth); every blob
//! is checked against its digest as it arrives. Two tasks of one image
//! fetch each layer once: the second waits for the first's copy.

use std::{
    collections::HashMap,
    fs, io,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::Duration,
};

use oci_client::{
    Client, Reference,
    client::{Certificate, CertificateEncoding, ClientConfig, ClientProtocol},
    errors::{OciDistributionError, OciErrorCode},
    manifest::OciDescriptor,
    secrets::RegistryAuth,
};
use serde::{Deserialize, Serialize};

use super::{
    config::ImageConfig,
    layer::{self, Compression, LayerError},
};
use crate::{api::tasks::RegistryAuth as Login, lock::Locked as _};

/// A registry that does not answer a connection in this long is out of reach.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// A transfer that stalls this long fails.
const READ_TIMEOUT: Duration = Duration::from_secs(60);
/// How long pinning a tag to its digest may wait for the registry.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(10);

/// An image this node holds, ready to mount.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Image {
    /// As it was pulled, e.g. `docker.io/library/nginx:alpine`.
    pub reference: String,
    /// The manifest's digest (`sha256:...`).
    pub digest: String,
    /// The config blob's digest: Docker's image ID.
    #[serde(default)]
    pub config_digest: String,
    pub config: ImageConfig,
    /// The unpacked layers, bottom first.
    pub layers: Vec<PathBuf>,
}

impl Image {
    /// The repository (with its registry, Docker Hub's left out as Docker
    /// shows it) and the tag it was pulled by (`<none>` for a digest).
    pub fn repository_and_tag(&self) -> (String, String) {
        let Ok(reference) = self.reference.parse::<Reference>() else {
            return (self.reference.clone(), "<none>".into());
        };
        let repository = match reference.registry() {
            "docker.io" => reference
                .repository()
                .trim_start_matches("library/")
                .to_owned(),
            registry => format!("{registry}/{}", reference.repository()),
        };
        let tag = match (reference.tag(), reference.digest()) {
            (Some(tag), _) => tag.to_owned(),
            (None, _) => "<none>".into(),
        };
        (repository, tag)
    }
}

/// How this node reaches registries, as Docker's daemon is told.
#[derive(Clone, Debug, Default)]
pub struct Registries {
    /// `HOST:PORT`s reached over plain HTTP (`--insecure-registry`).
    pub insecure: Vec<String>,
    /// `<dir>/HOST:PORT/ca.crt` is trusted for that registry, as Docker's
    /// `/etc/docker/certs.d`.
    pub certs_dir: PathBuf,
}

impl Registries {
    /// Docker reaches registries on loopback over plain HTTP unasked.
    fn is_insecure(&self, registry: &str) -> bool {
        let host = registry.rsplit_once(':').map_or(registry, |(host, _)| host);
        self.insecure.iter().any(|r| r == registry)
            || host == "localhost"
            || host
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback())
    }

    fn client_config(&self, registry: &str) -> Result<ClientConfig, ImageError> {
        let mut config = ClientConfig {
            protocol: if self.is_insecure(registry) {
                ClientProtocol::Http
            } else {
                ClientProtocol::Https
            },
            connect_timeout: Some(CONNECT_TIMEOUT),
            read_timeout: Some(READ_TIMEOUT),
            ..ClientConfig::default()
        };
        let ca = self.certs_dir.join(registry).join("ca.crt");
        match fs::read(&ca) {
            Ok(data) => config.extra_root_certificates.push(Certificate {
                encoding: CertificateEncoding::Pem,
                data,
            }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(source) => return Err(ImageError::Io { path: ca, source }),
        }
        Ok(config)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error(transparent)]
    Reference(#[from] super::reference::ReferenceError),
    #[error("No such image: {0}")]
    NotFound(String),
    #[error("pulling {reference}: unauthorized: {message}")]
    Unauthorized { reference: String, message: String },
    #[error(
        "conflict: unable to remove repository reference \"{reference}\" (must force) - task {task} is using its referenced image {digest}"
    )]
    InUse {
        reference: String,
        task: String,
        digest: String,
    },
    #[error("{reference}: the registry did not answer within {after:?}")]
    Unreachable { reference: String, after: Duration },
    #[error("pulling {reference}: {source}")]
    Registry {
        reference: String,
        #[source]
        source: OciDistributionError,
    },
    #[error("image {reference}: layer {digest} has media type {media_type}, which is no layer")]
    NotALayer {
        reference: String,
        digest: String,
        media_type: String,
    },
    #[error("image {reference}: its manifest does not parse: {message}")]
    Manifest { reference: String, message: String },
    #[error("image {reference}: its config is not an image config: {source}")]
    Config {
        reference: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("image {reference}: layer {digest}: {source}")]
    Layer {
        reference: String,
        digest: String,
        #[source]
        source: LayerError,
    },
    #[error("{}: {source}", .path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// What a registry names for a reference: `/distribution`'s answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Distribution {
    pub media_type: String,
    pub digest: String,
    pub size: u64,
    /// (os, architecture) of each platform it runs on.
    pub platforms: Vec<(String, String)>,
}

/// The parts of a manifest or index `distribution` reads.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ManifestHead {
    media_type: Option<String>,
    manifests: Option<Vec<IndexEntry>>,
    config: Option<OciDescriptor>,
}

#[derive(Deserialize)]
struct IndexEntry {
    platform: Option<EntryPlatform>,
}

#[derive(Deserialize)]
struct EntryPlatform {
    #[serde(default)]
    os: String,
    #[serde(default)]
    architecture: String,
}

/// The content store and the clients it pulls with.
pub struct ImageStore {
    root: PathBuf,
    registries: Registries,
    runtime: tokio::runtime::Handle,
    /// One lock per layer digest: the first pull fetches, the others wait.
    fetching: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

impl ImageStore {
    /// The store under `root` (created when missing); pulls run on `runtime`.
    pub fn open(
        root: PathBuf,
        registries: Registries,
        runtime: tokio::runtime::Handle,
    ) -> Result<Self, ImageError> {
        for dir in [
            root.join("layers"),
            root.join("configs"),
            root.join("index"),
            root.join("holds"),
            root.join("tmp"),
        ] {
            fs::create_dir_all(&dir).map_err(|source| ImageError::Io { path: dir, source })?;
        }
        Ok(Self {
            root,
            registries,
            runtime,
            fetching: Mutex::default(),
        })
    }

    /// Pulls `reference` (what this node holds already is not fetched
    /// again), logged in as `login` if given. Blocks; call it off the
    /// async runtime.
    pub fn pull(&self, reference: &Reference, login: Option<&Login>) -> Result<Image, ImageError> {
        let pulled = self
            .runtime
            .block_on(self.pull_async(reference, &auth(login)));
        let outcome = if pulled.is_ok() { "ok" } else { "error" };
        crate::metrics::instruments()
            .image_pulls
            .get_or_create(&vec![("outcome".to_owned(), outcome.to_owned())])
            .inc();
        pulled
    }

    /// The digest `reference` names in its registry now, for pinning a
    /// service to the bytes it runs. Blocks.
    pub fn resolve(
        &self,
        reference: &Reference,
        login: Option<&Login>,
    ) -> Result<String, ImageError> {
        let name = reference.whole();
        let auth = auth(login);
        self.runtime.block_on(async {
            let client = Client::new(self.registries.client_config(reference.registry())?);
            tokio::time::timeout(
                RESOLVE_TIMEOUT,
                client.fetch_manifest_digest(reference, &auth),
            )
            .await
            .map_err(|_| ImageError::Unreachable {
                reference: name.clone(),
                after: RESOLVE_TIMEOUT,
            })?
            .map_err(|e| registry_error(&name, e))
        })
    }

    /// Whether `registry` takes `login` (`docker login`): it is asked for
    /// a repository no one has, which a registry that takes the login
    /// answers as unknown and one that does not as unauthorized. Blocks.
    pub fn check_login(&self, registry: &str, login: &Login) -> Result<(), ImageError> {
        let super::ImageSource::Registry(reference) =
            super::ImageSource::parse(&format!("{registry}/swarm/login-check:latest"))?
        else {
            return Err(ImageError::NotFound(registry.to_owned()));
        };
        match self.resolve(&reference, Some(login)) {
            Ok(_) | Err(ImageError::NotFound(_)) => Ok(()),
            Err(err) => Err(err),
        }
    }

    /// What `reference` names in its registry now, as Docker's
    /// `/distribution/{name}/json` tells it: the manifest's descriptor and
    /// the platforms it runs on (an index's entries, or a single image's
    /// config). Blocks.
    pub fn distribution(
        &self,
        reference: &Reference,
        login: Option<&Login>,
    ) -> Result<Distribution, ImageError> {
        let name = reference.whole();
        let auth = auth(login);
        self.runtime.block_on(async {
            let client = Client::new(self.registries.client_config(reference.registry())?);
            let accepted = [
                oci_client::manifest::OCI_IMAGE_INDEX_MEDIA_TYPE,
                oci_client::manifest::IMAGE_MANIFEST_LIST_MEDIA_TYPE,
                oci_client::manifest::OCI_IMAGE_MEDIA_TYPE,
                oci_client::manifest::IMAGE_MANIFEST_MEDIA_TYPE,
            ];
            let (body, digest) = tokio::time::timeout(
                RESOLVE_TIMEOUT,
                client.pull_manifest_raw(reference, &auth, &accepted),
            )
            .await
            .map_err(|_| ImageError::Unreachable {
                reference: name.clone(),
                after: RESOLVE_TIMEOUT,
            })?
            .map_err(|e| registry_error(&name, e))?;
            let manifest: ManifestHead =
                serde_json::from_slice(&body).map_err(|e| ImageError::Manifest {
                    reference: name.clone(),
                    message: e.to_string(),
                })?;
            let platforms = match (manifest.manifests, manifest.config) {
                (Some(entries), _) => entries
                    .into_iter()
                    .filter_map(|entry| entry.platform)
                    .map(|p| (p.os, p.architecture))
                    .collect(),
                (None, Some(config)) => {
                    let config = self.config(&client, reference, &config).await?;
                    vec![(config.os, config.architecture)]
                }
                (None, None) => Vec::new(),
            };
            Ok(Distribution {
                media_type: manifest.media_type.unwrap_or_default(),
                digest,
                size: body.len() as u64,
                platforms,
            })
        })
    }

    async fn pull_async(
        &self,
        reference: &Reference,
        auth: &RegistryAuth,
    ) -> Result<Image, ImageError> {
        let name = reference.whole();
        let client = Client::new(self.registries.client_config(reference.registry())?);
        let failed = |source: OciDistributionError| registry_error(&name, source);
        let (manifest, digest) = client
            .pull_image_manifest(reference, auth)
            .await
            .map_err(failed)?;
        let config = self.config(&client, reference, &manifest.config).await?;
        // Side by side, as Docker pulls: one slow layer does not hold up
        // the others.
        let layers = futures::future::try_join_all(
            manifest
                .layers
                .iter()
                .map(|descriptor| self.layer(&client, reference, descriptor)),
        )
        .await?;
        tracing::info!(image = %name, %digest, layers = layers.len(), "image ready");
        let image = Image {
            reference: name,
            digest,
            config_digest: manifest.config.digest.clone(),
            config,
            layers,
        };
        let record = self.root.join("index").join(file_name(&image.digest));
        let json = serde_json::to_vec(&image).expect("plain data serializes");
        write_atomically(&record, &json, &self.root.join("tmp"))?;
        Ok(image)
    }

    async fn config(
        &self,
        client: &Client,
        reference: &Reference,
        descriptor: &OciDescriptor,
    ) -> Result<ImageConfig, ImageError> {
        let path = self
            .root
            .join("configs")
            .join(file_name(&descriptor.digest));
        let bytes = match fs::read(&path) {
            Ok(bytes) => bytes,
            Err(_) => {
                let mut bytes = Vec::new();
                client
                    .pull_blob(reference, descriptor, &mut bytes)
                    .await
                    .map_err(|e| registry_error(&reference.whole(), e))?;
                count_pulled(bytes.len() as u64);
                write_atomically(&path, &bytes, &self.root.join("tmp"))?;
                bytes
            }
        };
        serde_json::from_slice(&bytes).map_err(|source| ImageError::Config {
            reference: reference.whole(),
            source,
        })
    }

    /// The unpacked layer `descriptor`, fetched and unpacked unless held.
    async fn layer(
        &self,
        client: &Client,
        reference: &Reference,
        descriptor: &OciDescriptor,
    ) -> Result<PathBuf, ImageError> {
        let dir = self.root.join("layers").join(file_name(&descriptor.digest));
        let lock = self
            .fetching
            .locked()
            .entry(descriptor.digest.clone())
            .or_default()
            .clone();
        let _fetching = lock.lock().await;
        if dir.is_dir() {
            return Ok(dir);
        }
        let name = reference.whole();
        let compression = Compression::of_media_type(&descriptor.media_type).ok_or_else(|| {
            ImageError::NotALayer {
                reference: name.clone(),
                digest: descriptor.digest.clone(),
                media_type: descriptor.media_type.clone(),
            }
        })?;
        let tmp = self.root.join("tmp");
        let blob = tmp.join(format!("{}.blob", file_name(&descriptor.digest)));
        let file = tokio::fs::File::create(&blob)
            .await
            .map_err(|source| ImageError::Io {
                path: blob.clone(),
                source,
            })?;
        // oci-client checks the bytes against the digest as they arrive.
        let fetched = client.pull_blob(reference, descriptor, file).await;
        if let Err(err) = fetched {
            let _ = fs::remove_file(&blob);
            return Err(registry_error(&name, err));
        }
        count_pulled(fs::metadata(&blob).map_or(0, |m| m.len()));
        let unpacking = tmp.join(format!("{}.unpacking", file_name(&descriptor.digest)));
        let (blob_path, unpack_dir) = (blob.clone(), unpacking.clone());
        let unpacked = tokio::task::spawn_blocking(move || {
            let _ = fs::remove_dir_all(&unpack_dir);
            fs::create_dir_all(&unpack_dir).map_err(LayerError::Read)?;
            layer::unpack(&blob_path, compression, &unpack_dir)
        })
        .await
        .unwrap_or_else(|e| Err(LayerError::Read(io::Error::other(e))));
        let _ = fs::remove_file(&blob);
        if let Err(source) = unpacked {
            let _ = fs::remove_dir_all(&unpacking);
            return Err(ImageError::Layer {
                reference: name,
                digest: descriptor.digest.clone(),
                source,
            });
        }
        fs::rename(&unpacking, &dir).map_err(|source| ImageError::Io {
            path: dir.clone(),
            source,
        })?;
        tracing::debug!(digest = %descriptor.digest, "layer unpacked");
        Ok(dir)
    }
}

fn auth(login: Option<&Login>) -> RegistryAuth {
    match login {
        Some(login) => RegistryAuth::Basic(login.username.clone(), login.password.clone()),
        None => RegistryAuth::Anonymous,
    }
}

impl ImageStore {
    /// Records that `task` runs image `digest`: it is in use until released.
    pub fn hold(&self, task: &str, digest: &str) -> Result<(), ImageError> {
        let path = self.root.join("holds").join(task);
        write_atomically(&path, digest.as_bytes(), &self.root.join("tmp"))
    }

    /// `task` no longer runs its image.
    pub fn release(&self, task: &str) {
        let _ = fs::remove_file(self.root.join("holds").join(task));
    }

    /// The images this node holds, and the tasks running each.
    pub fn list(&self) -> Result<Vec<(Image, Vec<String>)>, ImageError> {
        let holds = self.holds()?;
        let mut images: Vec<(Image, Vec<String>)> = self
            .records()?
            .into_iter()
            .map(|image| {
                let tasks = holds
                    .iter()
                    .filter(|(_, digest)| *digest == image.digest)
                    .map(|(task, _)| task.clone())
                    .collect();
                (image, tasks)
            })
            .collect();
        images.sort_by(|a, b| a.0.reference.cmp(&b.0.reference));
        Ok(images)
    }

    /// Removes the image `reference` names (its reference as pulled, or a
    /// prefix of its digest or ID) unless a task runs it; returns its digest.
    pub fn remove(&self, reference: &str) -> Result<String, ImageError> {
        let (image, tasks) = self
            .list()?
            .into_iter()
            .find(|(image, _)| names(image, reference))
            .ok_or_else(|| ImageError::NotFound(reference.to_owned()))?;
        if let Some(task) = tasks.first() {
            return Err(ImageError::InUse {
                reference: reference.to_owned(),
                task: task.clone(),
                digest: image.digest,
            });
        }
        self.forget(&image)?;
        Ok(image.digest)
    }

    /// Removes every image no task runs; returns their references.
    pub fn prune(&self) -> Result<Vec<String>, ImageError> {
        let mut removed = Vec::new();
        for (image, tasks) in self.list()? {
            if tasks.is_empty() {
                self.forget(&image)?;
                removed.push(image.reference);
            }
        }
        Ok(removed)
    }

    /// Drops `image`'s record, then the layers and configs no other image
    /// shares.
    fn forget(&self, image: &Image) -> Result<(), ImageError> {
        let record = self.root.join("index").join(file_name(&image.digest));
        fs::remove_file(&record).map_err(|source| ImageError::Io {
            path: record,
            source,
        })?;
        let kept = self.records()?;
        for layer in &image.layers {
            if !kept.iter().any(|other| other.layers.contains(layer)) {
                let _ = fs::remove_dir_all(layer);
            }
        }
        if !kept
            .iter()
            .any(|other| other.config_digest == image.config_digest)
        {
            let _ = fs::remove_file(
                self.root
                    .join("configs")
                    .join(file_name(&image.config_digest)),
            );
        }
        tracing::info!(image = %image.reference, digest = %image.digest, "image removed");
        Ok(())
    }

    fn records(&self) -> Result<Vec<Image>, ImageError> {
        let dir = self.root.join("index");
        let entries = fs::read_dir(&dir).map_err(|source| ImageError::Io {
            path: dir.clone(),
            source,
        })?;
        Ok(entries
            .filter_map(|entry| fs::read(entry.ok()?.path()).ok())
            .filter_map(|bytes| serde_json::from_slice(&bytes).ok())
            .collect())
    }

    fn holds(&self) -> Result<Vec<(String, String)>, ImageError> {
        let dir = self.root.join("holds");
        let entries = fs::read_dir(&dir).map_err(|source| ImageError::Io {
            path: dir.clone(),
            source,
        })?;
        Ok(entries
            .filter_map(|entry| {
                let entry = entry.ok()?;
                let digest = fs::read_to_string(entry.path()).ok()?;
                Some((entry.file_name().to_string_lossy().into_owned(), digest))
            })
            .collect())
    }
}

/// Whether `reference` names `image`: its reference as pulled (with or
/// without the default registry), or a prefix of its digest or ID.
fn names(image: &Image, reference: &str) -> bool {
    let hex = |digest: &str| digest.trim_start_matches("sha256:").to_owned();
    let wanted = hex(reference);
    let (repository, tag) = image.repository_and_tag();
    image.reference == reference
        || format!("{repository}:{tag}") == reference
        || (tag == "latest" && repository == reference)
        || (wanted.len() >= 4
            && (hex(&image.digest).starts_with(&wanted)
                || hex(&image.config_digest).starts_with(&wanted)))
}

fn registry_error(reference: &str, err: OciDistributionError) -> ImageError {
    match err {
        OciDistributionError::ImageManifestNotFoundError(_) => {
            ImageError::NotFound(reference.to_owned())
        }
        OciDistributionError::ServerError { code: 404, .. } => {
            ImageError::NotFound(reference.to_owned())
        }
        OciDistributionError::AuthenticationFailure(message) => ImageError::Unauthorized {
            reference: reference.to_owned(),
            message,
        },
        OciDistributionError::RegistryError { ref envelope, .. }
            if envelope.errors.iter().any(|e| {
                matches!(
                    e.code,
                    OciErrorCode::ManifestUnknown
                        | OciErrorCode::NameUnknown
                        | OciErrorCode::NotFound
                )
            }) =>
        {
            ImageError::NotFound(reference.to_owned())
        }
        OciDistributionError::RegistryError { ref envelope, .. }
            if envelope
                .errors
                .iter()
                .any(|e| matches!(e.code, OciErrorCode::Unauthorized | OciErrorCode::Denied)) =>
        {
            ImageError::Unauthorized {
                reference: reference.to_owned(),
                message: envelope.to_string(),
            }
        }
        OciDistributionError::UnauthorizedError { url } => ImageError::Unauthorized {
            reference: reference.to_owned(),
            message: format!("authentication required at {url}"),
        },
        source => ImageError::Registry {
            reference: reference.to_owned(),
            source,
        },
    }
}

/// `sha256:ab..` as a file name: `sha256-ab..`.
fn file_name(digest: &str) -> String {
    digest.replace(':', "-")
}

/// Written under a name of its own and renamed: tasks pulling the same
/// image at once each write the same record, and none sees half of one.
/// Bytes fetched from a registry, for the metrics.
fn count_pulled(bytes: u64) {
    crate::metrics::instruments()
        .image_pulled_bytes
        .inc_by(bytes);
}

fn write_atomically(path: &Path, bytes: &[u8], tmp_dir: &Path) -> Result<(), ImageError> {
    static WRITES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = WRITES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let tmp = tmp_dir.join(format!(
        "{}.{n}.partial",
        path.file_name().unwrap_or_default().to_string_lossy()
    ));
    fs::write(&tmp, bytes)
        .and_then(|()| fs::rename(&tmp, path))
        .map_err(|source| ImageError::Io {
            path: path.to_owned(),
            source,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_written_at_once_by_many_tasks_all_land() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("record");
        std::thread::scope(|scope| {
            for _ in 0..8 {
                scope.spawn(|| {
                    for _ in 0..50 {
                        write_atomically(&path, b"{}", dir.path()).unwrap();
                    }
                });
            }
        });
        assert_eq!(fs::read(&path).unwrap(), b"{}");
    }

    #[test]
    fn loopback_and_named_registries_are_plain_http() {
        let registries = Registries {
            insecure: vec!["198.18.0.9:5000".into()],
            certs_dir: PathBuf::from("/nonexistent"),
        };
        assert!(registries.is_insecure("198.18.0.9:5000"));
        assert!(registries.is_insecure("localhost:5000"));
        assert!(registries.is_insecure("127.0.0.1:5000"));
        assert!(!registries.is_insecure("198.18.0.9:5001"));
        assert!(!registries.is_insecure("docker.io"));
    }
}
