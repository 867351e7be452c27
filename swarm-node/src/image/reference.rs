//! Image references as Docker reads them: `nginx` is
//! `docker.io/library/nginx:latest`, `host:port/repo:tag`, `repo@sha256:...`
//! and `repo:tag@sha256:...`. The parsing is oci-spec's (the distribution
//! grammar); this module says which references are images at all, and
//! words refusals with their fix.

use oci_client::{ParseError, Reference};

/// What the native runtime runs instead of an image: the host's own
/// filesystem.
pub const HOST_IMAGE: &str = "host";

/// Where a task's filesystem comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ImageSource {
    /// The host's filesystem (native runtime).
    Host,
    /// A root directory on this node, by absolute path (native runtime).
    Directory(String),
    /// An image in a registry.
    Registry(Reference),
}

#[derive(Debug, thiserror::Error)]
#[error(
    "invalid reference format for image {text:?}: {reason}; write it as [HOST[:PORT]/]NAME[:TAG][@sha256:DIGEST] in lowercase, e.g. nginx:alpine or 198.18.0.1:5000/web:1"
)]
pub struct ReferenceError {
    text: String,
    #[source]
    reason: ParseError,
}

impl ImageSource {
    /// Reads `text` as Docker reads an image; `host` and absolute paths are
    /// the native runtime's own sources.
    pub fn parse(text: &str) -> Result<Self, ReferenceError> {
        if text == HOST_IMAGE {
            return Ok(Self::Host);
        }
        if text.starts_with('/') {
            return Ok(Self::Directory(text.to_owned()));
        }
        text.parse::<Reference>()
            .map(Self::Registry)
            .map_err(|reason| ReferenceError {
                text: text.to_owned(),
                reason,
            })
    }
}

/// `text` pinned to `digest` as Docker pins a service's image
/// (`web:1@sha256:...`); a reference with a digest already keeps it.
pub fn pinned(text: &str, digest: &str) -> String {
    if text.contains('@') {
        text.to_owned()
    } else {
        format!("{text}@{digest}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn registry(text: &str) -> Reference {
        match ImageSource::parse(text).unwrap() {
            ImageSource::Registry(reference) => reference,
            other => panic!("{text} read as {other:?}"),
        }
    }

    #[test]
    fn references_read_as_dockers() {
        let nginx = registry("nginx");
        assert_eq!(nginx.registry(), "docker.io");
        assert_eq!(nginx.repository(), "library/nginx");
        assert_eq!(nginx.tag(), Some("latest"));

        let local = registry("198.18.0.1:5000/team/web:1.2");
        assert_eq!(local.registry(), "198.18.0.1:5000");
        assert_eq!(local.repository(), "team/web");
        assert_eq!(local.tag(), Some("1.2"));

        let digest = format!("sha256:{}", "ab".repeat(32));
        let pinned = registry(&format!("web@{digest}"));
        assert_eq!(pinned.digest(), Some(digest.as_str()));
        let both = registry(&format!("web:1@{digest}"));
        assert_eq!(
            (both.tag(), both.digest()),
            (Some("1"), Some(digest.as_str()))
        );
    }

    #[test]
    fn host_and_directories_are_the_native_runtimes() {
        assert_eq!(ImageSource::parse("host").unwrap(), ImageSource::Host);
        assert_eq!(
            ImageSource::parse("/srv/root").unwrap(),
            ImageSource::Directory("/srv/root".into())
        );
    }

    #[test]
    fn bad_references_name_the_fix() {
        for bad in ["Nginx", "web:", "web@sha256:12", "a b", ""] {
            let err = ImageSource::parse(bad).unwrap_err().to_string();
            assert!(err.contains("invalid reference format"), "{bad}: {err}");
            assert!(err.contains("NAME[:TAG]"), "{bad}: {err}");
        }
    }
}
