//! A node's role and availability, as the CLI, the store and certificates
//! name them.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A node's availability for tasks (`swarm node update --availability`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Availability {
    Active,
    Pause,
    Drain,
}

/// A node's role, as its certificate's OU says it (swarmkit's names).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Manager,
    Worker,
}

impl Role {
    pub fn organizational_unit(self) -> &'static str {
        match self {
            Role::Manager => "swarm-manager",
            Role::Worker => "swarm-worker",
        }
    }

    pub fn from_organizational_unit(ou: &str) -> Option<Self> {
        match ou {
            "swarm-manager" => Some(Role::Manager),
            "swarm-worker" => Some(Role::Worker),
            _ => None,
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Role::Manager => "manager",
            Role::Worker => "worker",
        })
    }
}

/// A node's CPUs and memory (Docker's `Description.Resources`). Zero: not
/// reported, which limits nothing.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeResources {
    pub nano_cpus: u64,
    pub memory_bytes: u64,
}

/// A node's OS and architecture, as it reported them when it joined
/// (Docker's `Description.Platform`: `linux`, `x86_64`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Platform {
    pub os: String,
    pub architecture: String,
}

impl Platform {
    pub fn of_this_host() -> Self {
        Self {
            os: std::env::consts::OS.to_owned(),
            architecture: std::env::consts::ARCH.to_owned(),
        }
    }
}

impl NodeResources {
    /// This host's: its CPUs and its MemTotal.
    pub fn of_this_host() -> Self {
        let cpus = std::thread::available_parallelism().map_or(0, |n| n.get() as u64);
        let memory_kib = std::fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|info| {
                info.lines()
                    .find_map(|l| l.strip_prefix("MemTotal:"))
                    .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            })
            .unwrap_or(0);
        Self {
            nano_cpus: cpus * 1_000_000_000,
            memory_bytes: memory_kib * 1024,
        }
    }
}
