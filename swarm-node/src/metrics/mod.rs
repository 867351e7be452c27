//! `swarm daemon --metrics-addr`: Prometheus metrics at `/metrics`.
//!
//! Two kinds of numbers. Most are read when Prometheus scrapes: the data
//! plane's per-CPU counters and connection table, Raft's metrics, the
//! store's nodes and tasks, the resolver's and gossip's counters, the
//! tasks' cgroups; nothing is added to the packet path for them. A few are
//! recorded as things happen, off the packet path, in [`instruments`]:
//! latency histograms and events no snapshot keeps (pulls, leader changes).

mod server;

use std::{
    collections::BTreeMap,
    sync::{LazyLock, atomic::AtomicU64},
};

use prometheus_client::{
    encoding::text::encode,
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::{Registry, Unit},
};

pub use server::{Collect, MetricsError, MetricsServer};

/// Every metric's name starts with this.
const PREFIX: &str = "swarm";

/// Label pairs of one series.
type Labels = Vec<(String, String)>;

/// What the daemon records as it happens; read at each scrape.
pub struct Instruments {
    /// Seconds from a Raft entry's arrival at the state machine to its
    /// being applied to the store (per batch, divided evenly).
    pub raft_apply_seconds: Histogram,
    /// Times this manager saw the Raft leader change (a new leader, or none).
    pub raft_leader_changes: Counter,
    /// Snapshots of the store this manager built.
    pub raft_snapshots_built: Counter,
    /// Seconds the tasks' resolver took to answer, forwarding included.
    pub resolver_seconds: Histogram,
    /// Images pulled, by outcome (`ok`, `error`).
    pub image_pulls: Family<Labels, Counter>,
    /// Bytes of layers and configs fetched from registries.
    pub image_pulled_bytes: Counter,
    /// Flows swept out of the connection table for idling.
    pub conntrack_expired: Counter,
}

/// The daemon's instruments: one set per process, as one daemon runs in it.
pub fn instruments() -> &'static Instruments {
    static INSTRUMENTS: LazyLock<Instruments> = LazyLock::new(|| Instruments {
        // 100µs to ~3s: a local apply is sub-millisecond, a slow disk is not.
        raft_apply_seconds: Histogram::new(
            prometheus_client::metrics::histogram::exponential_buckets(0.0001, 4.0, 9),
        ),
        raft_leader_changes: Counter::default(),
        raft_snapshots_built: Counter::default(),
        // 50µs (a swarm name) to ~3s (an upstream timing out).
        resolver_seconds: Histogram::new(
            prometheus_client::metrics::histogram::exponential_buckets(0.00005, 4.0, 9),
        ),
        image_pulls: Family::default(),
        image_pulled_bytes: Counter::default(),
        conntrack_expired: Counter::default(),
    });
    &INSTRUMENTS
}

/// A float gauge (memory in bytes, indexes).
type FloatGauge = Gauge<f64, AtomicU64>;
/// A float counter (CPU seconds).
type FloatCounter = Counter<f64, AtomicU64>;

/// One scrape's metrics: the snapshot values a scrape read, then the
/// instruments, encoded in the text format Prometheus reads.
pub struct Scrape {
    registry: Registry,
    counters: BTreeMap<&'static str, Family<Labels, Counter>>,
    float_counters: BTreeMap<&'static str, Family<Labels, FloatCounter>>,
    gauges: BTreeMap<&'static str, Family<Labels, FloatGauge>>,
}

impl Default for Scrape {
    fn default() -> Self {
        Self::new()
    }
}

impl Scrape {
    pub fn new() -> Self {
        Self {
            registry: Registry::with_prefix(PREFIX),
            counters: BTreeMap::new(),
            float_counters: BTreeMap::new(),
            gauges: BTreeMap::new(),
        }
    }

    /// A counter's value as read now; the first call for `name` registers
    /// it with `help` and `unit` (its name then ends in the unit).
    pub fn counter(
        &mut self,
        name: &'static str,
        help: &str,
        unit: Option<Unit>,
        labels: &[(&str, &str)],
        value: u64,
    ) {
        let family = family(&mut self.registry, &mut self.counters, name, help, unit);
        family.get_or_create(&owned(labels)).inc_by(value);
    }

    /// A counter of fractions (seconds of CPU).
    pub fn float_counter(
        &mut self,
        name: &'static str,
        help: &str,
        unit: Option<Unit>,
        labels: &[(&str, &str)],
        value: f64,
    ) {
        let family = family(
            &mut self.registry,
            &mut self.float_counters,
            name,
            help,
            unit,
        );
        family.get_or_create(&owned(labels)).inc_by(value);
    }

    /// A gauge's value as read now.
    pub fn gauge(
        &mut self,
        name: &'static str,
        help: &str,
        unit: Option<Unit>,
        labels: &[(&str, &str)],
        value: f64,
    ) {
        let family = family(&mut self.registry, &mut self.gauges, name, help, unit);
        family.get_or_create(&owned(labels)).set(value);
    }

    /// The text Prometheus scrapes: what was read, then the instruments.
    pub fn finish(mut self) -> String {
        let i = instruments();
        let registry = &mut self.registry;
        registry.register_with_unit(
            "raft_apply",
            "Time to apply a Raft entry to this manager's store",
            Unit::Seconds,
            i.raft_apply_seconds.clone(),
        );
        registry.register(
            "raft_leader_changes",
            "Changes of Raft leader this manager saw",
            i.raft_leader_changes.clone(),
        );
        registry.register(
            "raft_snapshots_built",
            "Snapshots of the store this manager built",
            i.raft_snapshots_built.clone(),
        );
        registry.register_with_unit(
            "resolver_query",
            "Time the tasks' resolver took to answer a query",
            Unit::Seconds,
            i.resolver_seconds.clone(),
        );
        registry.register(
            "image_pulls",
            "Images pulled from registries, by outcome",
            i.image_pulls.clone(),
        );
        registry.register_with_unit(
            "image_pulled",
            "Bytes of image layers and configs fetched from registries",
            Unit::Bytes,
            i.image_pulled_bytes.clone(),
        );
        registry.register(
            "conntrack_expired",
            "Balanced flows removed from the connection table for idling",
            i.conntrack_expired.clone(),
        );
        let mut text = String::new();
        encode(&mut text, &self.registry).expect("writing to a String does not fail");
        text
    }
}

/// `name`'s family, registered on first use.
fn family<'a, M>(
    registry: &mut Registry,
    families: &'a mut BTreeMap<&'static str, Family<Labels, M>>,
    name: &'static str,
    help: &str,
    unit: Option<Unit>,
) -> &'a Family<Labels, M>
where
    M: prometheus_client::metrics::TypedMetric
        + prometheus_client::encoding::EncodeMetric
        + Default
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
{
    families.entry(name).or_insert_with(|| {
        let family = Family::<Labels, M>::default();
        match unit {
            Some(unit) => registry.register_with_unit(name, help, unit, family.clone()),
            None => registry.register(name, help, family.clone()),
        }
        family
    })
}

fn owned(labels: &[(&str, &str)]) -> Labels {
    labels
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

/// The content type of [`Scrape::finish`]'s text.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_scrape_has_help_units_and_values() {
        let mut scrape = Scrape::new();
        scrape.counter(
            "dataplane_packets",
            "Packets counted",
            None,
            &[("counter", "received")],
            7,
        );
        scrape.counter(
            "dataplane_packets",
            "Packets counted",
            None,
            &[("counter", "tcp")],
            3,
        );
        scrape.gauge("memory", "Memory", Some(Unit::Bytes), &[], 42.0);
        let text = scrape.finish();
        assert!(
            text.contains("# HELP swarm_dataplane_packets Packets counted"),
            "{text}"
        );
        assert!(
            text.contains("swarm_dataplane_packets_total{counter=\"received\"} 7"),
            "{text}"
        );
        assert!(
            text.contains("swarm_dataplane_packets_total{counter=\"tcp\"} 3"),
            "{text}"
        );
        assert!(text.contains("# UNIT swarm_memory_bytes bytes"), "{text}");
        assert!(text.contains("swarm_memory_bytes 42.0"), "{text}");
        assert!(text.contains("swarm_raft_apply_seconds_bucket"), "{text}");
        assert!(text.ends_with("# EOF\n"), "{text}");
    }
}
