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
    pub config: ImageConfig,
    /// The unpacked layers, bottom first.
    pub layers: Vec<PathBuf>,
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
        for dir in [root.join("layers"), root.join("configs"), root.join("tmp")] {
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
        self.runtime
            .block_on(self.pull_async(reference, &auth(login)))
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
        let mut layers = Vec::with_capacity(manifest.layers.len());
        for descriptor in &manifest.layers {
            layers.push(self.layer(&client, reference, descriptor).await?);
        }
        tracing::info!(image = %name, %digest, layers = layers.len(), "image ready");
        Ok(Image {
            reference: name,
            digest,
            config,
            layers,
        })
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

fn write_atomically(path: &Path, bytes: &[u8], tmp_dir: &Path) -> Result<(), ImageError> {
    let tmp = tmp_dir.join(format!(
        "{}.partial",
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
