//! Counter snapshots as the control API and the CLI carry them.

use serde::{Deserialize, Serialize};
use swarm_common::stats::{DropReason, PacketKind};

/// One counter, summed over every CPU.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CounterRow {
    pub name: String,
    pub packets: u64,
    pub bytes: u64,
}

/// Everything the underlay program counted since its maps were created.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DataplaneStats {
    pub packets: Vec<CounterRow>,
    pub drops: Vec<CounterRow>,
}

impl DataplaneStats {
    pub fn packet(&self, kind: PacketKind) -> u64 {
        find(&self.packets, kind.label())
    }

    pub fn drop(&self, reason: DropReason) -> u64 {
        find(&self.drops, reason.label())
    }
}

fn find(rows: &[CounterRow], name: &str) -> u64 {
    rows.iter()
        .find(|row| row.name == name)
        .map_or(0, |row| row.packets)
}
