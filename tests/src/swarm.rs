//! Forming a swarm on a topology's hosts: h1 runs `swarm init`, the others
//! join through a manager, and the swarm is formed once every node is Ready.

use std::time::Duration;

use crate::{PATIENCE, Topology, TopologyOptions};

/// The init host: h1 runs `swarm init`.
const INIT_HOST: usize = 0;

/// How to form a swarm: `swarm init` on h1 (with flags), then joins in the
/// order they were added. Hosts neither h1 nor joined stay out of it (their
/// daemons, when started, idle until a test joins them).
///
/// ```ignore
/// // h2 and h3 managers, h4 and h5 workers, on 5 fresh hosts:
/// let topology = Swarm::new()
///     .managers([1, 2])
///     .workers([3, 4])
///     .start(&TopologyOptions::new("swt", 5))?;
/// ```
#[derive(Clone, Debug)]
pub struct Swarm {
    init_args: Vec<String>,
    joins: Vec<Join>,
    patience: Duration,
}

#[derive(Clone, Copy, Debug)]
struct Join {
    host: usize,
    role: &'static str,
    through: usize,
}

/// What the CLI printed while the swarm formed.
#[derive(Clone, Debug)]
pub struct Formed {
    /// `swarm init`'s output on h1.
    pub init: String,
    /// Each join's host and output, in the order they joined.
    pub joins: Vec<(usize, String)>,
}

impl Default for Swarm {
    fn default() -> Self {
        Self::new()
    }
}

impl Swarm {
    /// h1 alone, `swarm init` without flags; waits up to [`PATIENCE`] for
    /// the nodes to be Ready.
    pub fn new() -> Self {
        Self {
            init_args: Vec::new(),
            joins: Vec::new(),
            patience: PATIENCE,
        }
    }

    /// Flags for `swarm init` on h1, e.g. `--cert-expiry 6s`.
    pub fn init_args(mut self, args: &[&str]) -> Self {
        self.init_args = args.iter().map(|a| (*a).to_owned()).collect();
        self
    }

    /// Hosts that join as managers through h1.
    pub fn managers(mut self, hosts: impl IntoIterator<Item = usize>) -> Self {
        for host in hosts {
            self = self.manager_through(host, INIT_HOST);
        }
        self
    }

    /// Host `host` joins as a manager through the manager on host `through`
    /// (with that manager's token, at its port 2377).
    pub fn manager_through(mut self, host: usize, through: usize) -> Self {
        self.joins.push(Join {
            host,
            role: "manager",
            through,
        });
        self
    }

    /// Hosts that join as workers through h1.
    pub fn workers(mut self, hosts: impl IntoIterator<Item = usize>) -> Self {
        for host in hosts {
            self.joins.push(Join {
                host,
                role: "worker",
                through: INIT_HOST,
            });
        }
        self
    }

    /// How long [`Swarm::form`] waits for every node to be Ready.
    pub fn patience(mut self, patience: Duration) -> Self {
        self.patience = patience;
        self
    }

    /// How many nodes the formed swarm has: h1 and every host that joins.
    pub fn nodes(&self) -> usize {
        1 + self.joins.len()
    }

    /// A new topology from `options`, every daemon started, and this swarm
    /// formed on it.
    pub fn start(&self, options: &TopologyOptions) -> anyhow::Result<Topology> {
        let mut topology = Topology::new(options)?;
        topology.start_daemons()?;
        self.form(&topology)?;
        Ok(topology)
    }

    /// Forms this swarm on `topology`, whose daemons of h1 and the joining
    /// hosts run: h1 inits, the others join (each join must say it joined
    /// as its role), and it returns once h1's `node ls` lists every node,
    /// Ready.
    pub fn form(&self, topology: &Topology) -> anyhow::Result<Formed> {
        let mut init = vec!["init"];
        init.extend(self.init_args.iter().map(String::as_str));
        let init = topology.daemon(INIT_HOST).swarm_ok(&init)?;
        let mut joins = Vec::with_capacity(self.joins.len());
        for join in &self.joins {
            let out = topology.join(join.host, join.role, join.through)?;
            let said = format!("joined a swarm as a {}", join.role);
            anyhow::ensure!(
                out.contains(&said),
                "h{} joined as a {} through h{}, but the CLI said: {out}",
                join.host + 1,
                join.role,
                join.through + 1
            );
            joins.push((join.host, out));
        }
        let nodes = self.nodes();
        crate::try_wait_until(&format!("all {nodes} nodes Ready"), self.patience, || {
            let rows = topology
                .daemon(INIT_HOST)
                .swarm_json(&["node", "ls"])
                .map_err(|e| e.to_string())?;
            let ready = rows.iter().filter(|r| r["Status"] == "Ready").count();
            (ready == nodes && rows.len() == nodes)
                .then_some(())
                .ok_or(format!("{ready} of {nodes} Ready: {rows:?}"))
        })?;
        Ok(Formed { init, joins })
    }
}
