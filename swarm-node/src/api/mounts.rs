//! What a task sees besides its image: secrets and configs as files,
//! and mounts (bind, volume, tmpfs), as a service spec names them and as
//! a node receives them.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Where secrets appear in a task, as in Docker.
pub const SECRETS_DIR: &str = "/run/secrets";
/// Docker's file mode for secrets and configs.
pub const DEFAULT_FILE_MODE: u32 = 0o444;

/// Which of the two a payload is: a secret or a config.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PayloadKind {
    Secret,
    Config,
}

impl PayloadKind {
    /// As Docker's messages name it.
    pub fn word(self) -> &'static str {
        match self {
            PayloadKind::Secret => "secret",
            PayloadKind::Config => "config",
        }
    }

    /// Docker's limits: data of at least a byte and under 500 KiB for a
    /// secret, under 1000 KiB for a config.
    pub fn max_size(self) -> usize {
        match self {
            PayloadKind::Secret => 500 * 1024,
            PayloadKind::Config => 1000 * 1024,
        }
    }
}

/// A secret's or config's bytes: base64 in JSON, never printed.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Opaque(pub Vec<u8>);

impl std::fmt::Debug for Opaque {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "<{} bytes>", self.0.len())
    }
}

impl Serialize for Opaque {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use base64::Engine as _;
        serializer.serialize_str(&base64::engine::general_purpose::STANDARD.encode(&self.0))
    }
}

impl<'de> Deserialize<'de> for Opaque {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        use base64::Engine as _;
        let text = String::deserialize(deserializer)?;
        base64::engine::general_purpose::STANDARD
            .decode(text)
            .map(Opaque)
            .map_err(serde::de::Error::custom)
    }
}

/// A secret or config a service's tasks see (`--secret`, `--config`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileReference {
    /// Its ID; empty until the leader resolves `name`.
    #[serde(default)]
    pub id: String,
    pub name: String,
    /// A secret's file name under /run/secrets (or an absolute path); a
    /// config's absolute path. Empty: the name (`/run/secrets/<name>`,
    /// `/<name>`).
    #[serde(default)]
    pub target: String,
    pub uid: u32,
    pub gid: u32,
    pub mode: u32,
}

impl FileReference {
    pub fn named(name: &str) -> Self {
        Self {
            id: String::new(),
            name: name.to_owned(),
            target: String::new(),
            uid: 0,
            gid: 0,
            mode: DEFAULT_FILE_MODE,
        }
    }

    /// `--secret`/`--config`: a NAME, or source=,target=,uid=,gid=,mode=
    /// as docker/cli reads it.
    pub fn parse(text: &str) -> Result<Self, String> {
        if !text.contains('=') {
            return Ok(Self::named(text.trim()));
        }
        let mut reference = Self::named("");
        for field in text.split(',').filter(|f| !f.is_empty()) {
            let Some((key, value)) = field.split_once('=') else {
                return Err(format!("invalid field '{field}' must be a key=value pair"));
            };
            let (key, value) = (key.trim().to_ascii_lowercase(), value.trim());
            let number = |value: &str| {
                value
                    .parse::<u32>()
                    .map_err(|_| format!("invalid {key} {value:?}: a number"))
            };
            match key.as_str() {
                "source" | "src" => reference.name = value.to_owned(),
                "target" => reference.target = value.to_owned(),
                "uid" => reference.uid = number(value)?,
                "gid" => reference.gid = number(value)?,
                "mode" => {
                    reference.mode = u32::from_str_radix(value, 8)
                        .map_err(|_| format!("invalid mode {value:?}: octal, e.g. 0400"))?
                }
                _ => return Err(format!("invalid field in secret request: {key}")),
            }
        }
        if reference.name.is_empty() {
            return Err("source is required".into());
        }
        Ok(reference)
    }

    /// The path inside the task: a secret's under /run/secrets unless
    /// absolute, a config's at / unless absolute.
    pub fn path(&self, secret: bool) -> String {
        let target = if self.target.is_empty() {
            self.name.as_str()
        } else {
            self.target.as_str()
        };
        match (target.starts_with('/'), secret) {
            (true, _) => target.to_owned(),
            (false, true) => format!("{SECRETS_DIR}/{target}"),
            (false, false) => format!("/{target}"),
        }
    }
}

/// A secret's or config's bytes, as one task's node receives them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskFile {
    /// Absolute, inside the task.
    pub path: String,
    pub uid: u32,
    pub gid: u32,
    pub mode: u32,
    pub data: Opaque,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MountKind {
    Bind,
    Volume,
    Tmpfs,
}

impl MountKind {
    pub fn word(self) -> &'static str {
        match self {
            MountKind::Bind => "bind",
            MountKind::Volume => "volume",
            MountKind::Tmpfs => "tmpfs",
        }
    }
}

/// `--mount type=...,source=...,target=...`, as Docker's mount spec.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mount {
    pub kind: MountKind,
    /// A bind's host path, a volume's name (empty: an anonymous volume);
    /// none for tmpfs.
    #[serde(default)]
    pub source: String,
    /// Absolute, inside the task.
    pub target: String,
    #[serde(default)]
    pub readonly: bool,
    /// A new volume is not seeded from the image.
    #[serde(default)]
    pub volume_nocopy: bool,
    #[serde(default)]
    pub volume_labels: BTreeMap<String, String>,
    /// tmpfs size in bytes; none: unlimited (half the RAM, the kernel's).
    #[serde(default)]
    pub tmpfs_size: Option<u64>,
    #[serde(default)]
    pub tmpfs_mode: Option<u32>,
}

impl Mount {
    /// `--mount`'s comma-separated KEY=VALUE list, as docker/cli reads it.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut kind = MountKind::Volume;
        let mut mount = Mount {
            kind,
            source: String::new(),
            target: String::new(),
            readonly: false,
            volume_nocopy: false,
            volume_labels: BTreeMap::new(),
            tmpfs_size: None,
            tmpfs_mode: None,
        };
        for field in text.split(',').filter(|f| !f.is_empty()) {
            let (key, value) = match field.split_once('=') {
                Some((key, value)) => (key.trim().to_ascii_lowercase(), value.trim()),
                None => (field.trim().to_ascii_lowercase(), "true"),
            };
            let flag = |value: &str| match value {
                "" | "1" | "true" => Ok(true),
                "0" | "false" => Ok(false),
                other => Err(format!("invalid value for {key}: {other} (true or false)")),
            };
            match key.as_str() {
                "type" => {
                    kind = match value {
                        "bind" => MountKind::Bind,
                        "volume" => MountKind::Volume,
                        "tmpfs" => MountKind::Tmpfs,
                        other => {
                            return Err(format!(
                                "invalid mount type {other:?}: bind, volume or tmpfs"
                            ));
                        }
                    }
                }
                "source" | "src" => mount.source = value.to_owned(),
                "target" | "dst" | "destination" => mount.target = value.to_owned(),
                "readonly" | "ro" => mount.readonly = flag(value)?,
                "volume-nocopy" => mount.volume_nocopy = flag(value)?,
                "volume-driver" if value == "local" => {}
                "volume-driver" => {
                    return Err(format!(
                        "volume-driver={value}: only the local driver is supported"
                    ));
                }
                "volume-label" => {
                    let (k, v) = value.split_once('=').unwrap_or((value, ""));
                    mount.volume_labels.insert(k.to_owned(), v.to_owned());
                }
                "tmpfs-size" => mount.tmpfs_size = Some(parse_size(value)?),
                "tmpfs-mode" => {
                    mount.tmpfs_mode = Some(u32::from_str_radix(value, 8).map_err(|_| {
                        format!("invalid value for tmpfs-mode: {value} (octal, e.g. 1777)")
                    })?)
                }
                "bind-propagation" | "consistency" => {}
                other => return Err(format!("unexpected key '{other}' in '{field}'")),
            }
        }
        mount.kind = kind;
        if mount.target.is_empty() {
            return Err("target is required".into());
        }
        if !mount.target.starts_with('/') {
            return Err(format!(
                "invalid mount target {:?}: it must be an absolute path",
                mount.target
            ));
        }
        match kind {
            MountKind::Bind if mount.source.is_empty() => {
                Err("invalid mount config for type \"bind\": field Source must not be empty".into())
            }
            MountKind::Bind if !mount.source.starts_with('/') => Err(format!(
                "invalid mount config for type \"bind\": invalid mount path: '{}' mount path must be absolute",
                mount.source
            )),
            MountKind::Tmpfs if !mount.source.is_empty() => {
                Err("invalid mount config for type \"tmpfs\": field Source must be empty".into())
            }
            MountKind::Volume if mount.source.contains('/') => Err(format!(
                "invalid mount config for type \"volume\": invalid volume name {:?}: a name is letters, digits, '_', '.' or '-'",
                mount.source
            )),
            _ => Ok(mount),
        }
    }
}

/// `64m`, `1g`, `4096`: bytes.
fn parse_size(text: &str) -> Result<u64, String> {
    let lower = text.to_ascii_lowercase();
    let (digits, unit) = match lower.find(|c: char| !c.is_ascii_digit()) {
        Some(at) => lower.split_at(at),
        None => (lower.as_str(), ""),
    };
    let number: u64 = digits
        .parse()
        .map_err(|_| format!("invalid size {text:?}: e.g. 64m or 1g"))?;
    let scale = match unit.trim_end_matches('b') {
        "" => 1,
        "k" => 1 << 10,
        "m" => 1 << 20,
        "g" => 1 << 30,
        _ => return Err(format!("invalid size {text:?}: e.g. 64m or 1g")),
    };
    Ok(number * scale)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mounts_parse_as_docker_writes_them() {
        let bind = Mount::parse("type=bind,source=/srv,target=/data,readonly").unwrap();
        assert_eq!(
            (
                bind.kind,
                bind.source.as_str(),
                bind.target.as_str(),
                bind.readonly
            ),
            (MountKind::Bind, "/srv", "/data", true)
        );
        let volume = Mount::parse("source=db,target=/var/lib/db,volume-nocopy").unwrap();
        assert_eq!(volume.kind, MountKind::Volume);
        assert!(volume.volume_nocopy);
        let tmpfs = Mount::parse("type=tmpfs,dst=/cache,tmpfs-size=64m,tmpfs-mode=1770").unwrap();
        assert_eq!(tmpfs.tmpfs_size, Some(64 << 20));
        assert_eq!(tmpfs.tmpfs_mode, Some(0o1770));
    }

    #[test]
    fn bad_mounts_name_the_fix() {
        assert_eq!(
            Mount::parse("type=bind,target=/x").unwrap_err(),
            "invalid mount config for type \"bind\": field Source must not be empty"
        );
        assert!(
            Mount::parse("type=volume,source=v")
                .unwrap_err()
                .contains("target is required")
        );
        assert!(
            Mount::parse("type=nfs,target=/x")
                .unwrap_err()
                .contains("bind, volume or tmpfs")
        );
        assert!(
            Mount::parse("type=tmpfs,target=/x,bogus=1")
                .unwrap_err()
                .contains("unexpected key 'bogus'")
        );
    }

    #[test]
    fn secret_references_parse_as_docker_writes_them() {
        assert_eq!(
            FileReference::parse("pw").unwrap(),
            FileReference::named("pw")
        );
        let full = FileReference::parse("source=pw,target=db,uid=100,gid=101,mode=0400").unwrap();
        assert_eq!(
            (
                full.name.as_str(),
                full.target.as_str(),
                full.uid,
                full.gid,
                full.mode
            ),
            ("pw", "db", 100, 101, 0o400)
        );
        assert!(
            FileReference::parse("target=x")
                .unwrap_err()
                .contains("source is required")
        );
        assert!(FileReference::parse("source=x,colour=red").is_err());
    }

    #[test]
    fn secret_and_config_paths_follow_docker() {
        let mut reference = FileReference::named("db-password");
        assert_eq!(reference.path(true), "/run/secrets/db-password");
        assert_eq!(reference.path(false), "/db-password");
        reference.target = "pw".into();
        assert_eq!(reference.path(true), "/run/secrets/pw");
        reference.target = "/etc/app.conf".into();
        assert_eq!(reference.path(false), "/etc/app.conf");
    }
}
