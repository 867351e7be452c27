//! A compose file's keys as `docker stack deploy` reads them (schema 3.x
//! and files without `version`), typed after the compose schema. Values
//! that interpolation may have turned into strings (`replicas: ${N}`) read
//! as numbers too. Service keys a stack cannot use are kept, to be named
//! in Docker's `Ignoring unsupported options: ...`.

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer, de};
use serde_yaml_ng::Value;

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ComposeFile {
    #[serde(default)]
    pub version: Option<String>,
    /// Compose's project name: a stack takes its name from the CLI.
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub services: BTreeMap<String, Service>,
    #[serde(default)]
    pub networks: BTreeMap<String, Option<Network>>,
    #[serde(default)]
    pub volumes: BTreeMap<String, Option<Volume>>,
    #[serde(default)]
    pub secrets: BTreeMap<String, FileObject>,
    #[serde(default)]
    pub configs: BTreeMap<String, FileObject>,
}

#[derive(Clone, Debug, Default, Deserialize)]
pub struct Service {
    #[serde(default)]
    pub image: Option<String>,
    #[serde(default)]
    pub command: Option<StringOrList>,
    #[serde(default)]
    pub entrypoint: Option<StringOrList>,
    #[serde(default)]
    pub environment: Option<ListOrMap>,
    #[serde(default)]
    pub env_file: Option<StringOrList>,
    #[serde(default)]
    pub ports: Vec<Port>,
    #[serde(default)]
    pub networks: Option<ServiceNetworks>,
    #[serde(default)]
    pub secrets: Vec<FileUse>,
    #[serde(default)]
    pub configs: Vec<FileUse>,
    #[serde(default)]
    pub volumes: Vec<VolumeUse>,
    #[serde(default)]
    pub healthcheck: Option<Healthcheck>,
    #[serde(default)]
    pub hostname: Option<String>,
    #[serde(default)]
    pub user: Option<String>,
    #[serde(default)]
    pub working_dir: Option<String>,
    #[serde(default)]
    pub stop_grace_period: Option<String>,
    #[serde(default)]
    pub labels: Option<ListOrMap>,
    #[serde(default)]
    pub deploy: Option<Deploy>,
    #[serde(default)]
    pub dns: Option<StringOrList>,
    #[serde(default)]
    pub dns_search: Option<StringOrList>,
    #[serde(default)]
    pub dns_opt: Vec<String>,
    /// `HOST:IP` lines, or a map of host to IP.
    #[serde(default)]
    pub extra_hosts: Option<ListOrMap>,
    #[serde(default)]
    pub cap_add: Vec<String>,
    #[serde(default)]
    pub cap_drop: Vec<String>,
    #[serde(default)]
    pub sysctls: Option<ListOrMap>,
    #[serde(default)]
    pub read_only: bool,
    #[serde(default)]
    pub init: Option<bool>,
    #[serde(default)]
    pub stop_signal: Option<String>,
    /// `nofile: 1024` or `nofile: {soft: 1024, hard: 2048}`.
    #[serde(default)]
    pub ulimits: BTreeMap<String, ComposeUlimit>,
    #[serde(default)]
    pub group_add: Vec<Scalar>,
    /// Every other key: `build`, `container_name`, `depends_on`, ...
    #[serde(flatten)]
    pub unsupported: BTreeMap<String, Value>,
}

/// One of a service's `ulimits`.
#[derive(Clone, Debug, Deserialize)]
#[serde(untagged)]
pub enum ComposeUlimit {
    Single(i64),
    Pair { soft: i64, hard: i64 },
}

#[derive(Clone, Debug, Deserialize)]
#[serde(untagged)]
pub enum StringOrList {
    String(String),
    List(Vec<String>),
}

impl StringOrList {
    /// A string split on whitespace, as docker/cli splits a `command:`
    /// string (shell quoting honoured), or the list as it is.
    pub fn words(&self) -> Vec<String> {
        match self {
            StringOrList::List(list) => list.clone(),
            StringOrList::String(text) => shell_words(text),
        }
    }
}

/// `KEY=VALUE` lines, or a map of them (values of any scalar type; null
/// is a key without a value).
#[derive(Clone, Debug, Deserialize)]
#[serde(untagged)]
pub enum ListOrMap {
    List(Vec<String>),
    Map(BTreeMap<String, Option<Scalar>>),
}

impl ListOrMap {
    pub fn pairs(&self) -> Vec<(String, Option<String>)> {
        match self {
            ListOrMap::List(list) => list
                .iter()
                .map(|item| match item.split_once('=') {
                    Some((k, v)) => (k.to_owned(), Some(v.to_owned())),
                    None => (item.clone(), None),
                })
                .collect(),
            ListOrMap::Map(map) => map
                .iter()
                .map(|(k, v)| (k.clone(), v.as_ref().map(Scalar::text)))
                .collect(),
        }
    }
}

/// A YAML scalar read as text (`3`, `true`, `1.5`, `text`).
#[derive(Clone, Debug, Deserialize)]
#[serde(untagged)]
pub enum Scalar {
    String(String),
    Int(i64),
    Float(f64),
    Bool(bool),
}

impl Scalar {
    pub fn text(&self) -> String {
        match self {
            Scalar::String(s) => s.clone(),
            Scalar::Int(n) => n.to_string(),
            Scalar::Float(n) => n.to_string(),
            Scalar::Bool(b) => b.to_string(),
        }
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(untagged)]
pub enum Port {
    /// `8080:80`, `80`, `8080-8081:80-81/udp`, `127.0.0.1:8080:80`.
    Short(Scalar),
    Long(LongPort),
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LongPort {
    #[serde(deserialize_with = "number")]
    pub target: u64,
    #[serde(default, deserialize_with = "optional_number")]
    pub published: Option<u64>,
    #[serde(default)]
    pub protocol: Option<String>,
    #[serde(default)]
    pub mode: Option<String>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(untagged)]
pub enum ServiceNetworks {
    List(Vec<String>),
    Map(BTreeMap<String, Option<ServiceNetwork>>),
}

impl ServiceNetworks {
    /// Each network's name and the aliases the service has there.
    pub fn entries(&self) -> Vec<(String, Vec<String>)> {
        match self {
            ServiceNetworks::List(names) => names.iter().map(|n| (n.clone(), Vec::new())).collect(),
            ServiceNetworks::Map(map) => map
                .iter()
                .map(|(name, settings)| {
                    let aliases = settings
                        .as_ref()
                        .map(|s| s.aliases.clone())
                        .unwrap_or_default();
                    (name.clone(), aliases)
                })
                .collect(),
        }
    }
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceNetwork {
    #[serde(default)]
    pub aliases: Vec<String>,
    #[serde(default)]
    pub ipv4_address: Option<String>,
}

/// A service's secret or config: its name, or source/target/uid/gid/mode.
#[derive(Clone, Debug, Deserialize)]
#[serde(untagged)]
pub enum FileUse {
    Name(String),
    Long(LongFileUse),
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LongFileUse {
    pub source: String,
    #[serde(default)]
    pub target: Option<String>,
    #[serde(default)]
    pub uid: Option<Scalar>,
    #[serde(default)]
    pub gid: Option<Scalar>,
    #[serde(default, deserialize_with = "optional_number")]
    pub mode: Option<u64>,
}

/// A service's volume: `SRC:DST[:ro]`, `DST`, or the long syntax.
#[derive(Clone, Debug, Deserialize)]
#[serde(untagged)]
pub enum VolumeUse {
    Short(String),
    Long(LongVolumeUse),
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LongVolumeUse {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub source: Option<String>,
    pub target: String,
    #[serde(default)]
    pub read_only: bool,
    #[serde(default)]
    pub volume: Option<VolumeOptions>,
    #[serde(default)]
    pub tmpfs: Option<TmpfsOptions>,
    #[serde(default)]
    pub bind: Option<Value>,
    #[serde(default)]
    pub consistency: Option<String>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VolumeOptions {
    #[serde(default)]
    pub nocopy: bool,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TmpfsOptions {
    #[serde(default)]
    pub size: Option<Scalar>,
    #[serde(default, deserialize_with = "optional_number")]
    pub mode: Option<u64>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Healthcheck {
    #[serde(default)]
    pub test: Option<StringOrList>,
    #[serde(default)]
    pub interval: Option<String>,
    #[serde(default)]
    pub timeout: Option<String>,
    #[serde(default, deserialize_with = "optional_number")]
    pub retries: Option<u64>,
    #[serde(default)]
    pub start_period: Option<String>,
    #[serde(default)]
    pub start_interval: Option<String>,
    #[serde(default)]
    pub disable: bool,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Deploy {
    #[serde(default)]
    pub mode: Option<String>,
    #[serde(default, deserialize_with = "optional_number")]
    pub replicas: Option<u64>,
    #[serde(default)]
    pub endpoint_mode: Option<String>,
    #[serde(default)]
    pub labels: Option<ListOrMap>,
    #[serde(default)]
    pub placement: Option<Placement>,
    #[serde(default)]
    pub resources: Option<Resources>,
    #[serde(default)]
    pub restart_policy: Option<RestartPolicy>,
    #[serde(default)]
    pub update_config: Option<UpdateConfig>,
    #[serde(default)]
    pub rollback_config: Option<UpdateConfig>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Placement {
    #[serde(default)]
    pub constraints: Vec<String>,
    #[serde(default)]
    pub preferences: Vec<BTreeMap<String, String>>,
    #[serde(default, deserialize_with = "optional_number")]
    pub max_replicas_per_node: Option<u64>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Resources {
    #[serde(default)]
    pub limits: Option<ResourceAmounts>,
    #[serde(default)]
    pub reservations: Option<ResourceAmounts>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResourceAmounts {
    #[serde(default)]
    pub cpus: Option<Scalar>,
    #[serde(default)]
    pub memory: Option<Scalar>,
    #[serde(default)]
    pub pids: Option<Scalar>,
    #[serde(default)]
    pub generic_resources: Option<Value>,
    #[serde(default)]
    pub devices: Option<Value>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RestartPolicy {
    #[serde(default)]
    pub condition: Option<String>,
    #[serde(default)]
    pub delay: Option<String>,
    #[serde(default, deserialize_with = "optional_number")]
    pub max_attempts: Option<u64>,
    #[serde(default)]
    pub window: Option<String>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpdateConfig {
    #[serde(default, deserialize_with = "optional_number")]
    pub parallelism: Option<u64>,
    #[serde(default)]
    pub delay: Option<String>,
    #[serde(default)]
    pub failure_action: Option<String>,
    #[serde(default)]
    pub monitor: Option<String>,
    #[serde(default)]
    pub max_failure_ratio: Option<Scalar>,
    #[serde(default)]
    pub order: Option<String>,
}

/// A top-level network.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Network {
    #[serde(default)]
    pub driver: Option<String>,
    #[serde(default)]
    pub driver_opts: BTreeMap<String, Scalar>,
    #[serde(default)]
    pub attachable: bool,
    #[serde(default)]
    pub external: Option<External>,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub ipam: Option<Ipam>,
    #[serde(default)]
    pub labels: Option<ListOrMap>,
    #[serde(default)]
    pub internal: bool,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Ipam {
    #[serde(default)]
    pub driver: Option<String>,
    #[serde(default)]
    pub config: Vec<IpamConfig>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IpamConfig {
    #[serde(default)]
    pub subnet: Option<String>,
    #[serde(default)]
    pub gateway: Option<String>,
}

/// `external: true`, or the 3.x form `external: {name: N}`.
#[derive(Clone, Debug, Deserialize)]
#[serde(untagged)]
pub enum External {
    Flag(bool),
    Named { name: String },
}

/// A top-level volume.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Volume {
    #[serde(default)]
    pub driver: Option<String>,
    #[serde(default)]
    pub driver_opts: BTreeMap<String, Scalar>,
    #[serde(default)]
    pub external: Option<External>,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub labels: Option<ListOrMap>,
}

/// A top-level secret or config.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileObject {
    #[serde(default)]
    pub file: Option<String>,
    #[serde(default)]
    pub external: Option<External>,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub labels: Option<ListOrMap>,
    #[serde(default)]
    pub template_driver: Option<String>,
}

/// A number, or a string holding one (what `${N}` leaves).
fn number<'de, D: Deserializer<'de>>(deserializer: D) -> Result<u64, D::Error> {
    match Scalar::deserialize(deserializer)? {
        Scalar::Int(n) if n >= 0 => Ok(n as u64),
        Scalar::String(text) => text
            .trim()
            .parse()
            .map_err(|_| de::Error::custom(format!("{text:?} is not a whole number"))),
        other => Err(de::Error::custom(format!(
            "{} is not a whole number",
            other.text()
        ))),
    }
}

fn optional_number<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<u64>, D::Error> {
    #[derive(Deserialize)]
    struct Wrapped(#[serde(deserialize_with = "number")] u64);
    Ok(Option::<Wrapped>::deserialize(deserializer)?.map(|Wrapped(n)| n))
}

/// Words as a POSIX shell splits them, without expansions: single and
/// double quotes and backslashes.
pub fn shell_words(text: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut chars = text.chars();
    let mut quote: Option<char> = None;
    while let Some(c) = chars.next() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some('"'), '\\') => {
                if let Some(next) = chars.next() {
                    word.push(next);
                }
            }
            (Some(_), c) => word.push(c),
            (None, '\'' | '"') => {
                quote = Some(c);
                in_word = true;
            }
            (None, '\\') => {
                if let Some(next) = chars.next() {
                    word.push(next);
                    in_word = true;
                }
            }
            (None, c) if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            (None, c) => {
                word.push(c);
                in_word = true;
            }
        }
    }
    if in_word {
        words.push(word);
    }
    words
}
