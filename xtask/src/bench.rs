//! `cargo xtask bench`: data-plane figures measured side by side in one run on
//! the harness topology, reported with ratios. Later data planes add rows here
//! so every figure is compared with the same baselines on the same machine.

use std::{
    io::{Read as _, Write as _},
    net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream},
    path::Path,
    process::{Child, Stdio},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
        mpsc,
    },
    time::{Duration, Instant},
};

use anyhow::Context as _;
use serde_json::{Map, Value, json};
use swarm_tests::{Netns, Topology, TopologyOptions, in_netns, spawn_in_netns};

use crate::{
    control_bench::{self, SWARMKIT_DOWN_DETECTION_S, SWARMKIT_FAILOVER_S},
    images_bench,
    process::output,
    services_bench::{self, DOCKER_SWARM_CREATE_10_S, DOCKER_SWARM_SCALE_10_TO_50_S, Runtime},
};

const IPERF_PORT: u16 = 5201;
const RR_PORT: u16 = 5300;
const CPS_PORT: u16 = 5301;
/// From host `from`'s namespace to host `to`'s address, over the underlay.
fn host_path(
    topology: &Topology,
    key: &'static str,
    label: &'static str,
    from: usize,
    to: usize,
) -> BenchPath {
    BenchPath {
        key,
        label,
        client: topology.hosts[from].netns.name().to_owned(),
        server: topology.hosts[to].netns.name().to_owned(),
        server_addr: topology.hosts[to].addr,
        port_shift: 0,
    }
}

/// Published port = server port + this, for the routing-mesh paths.
const MESH_PORT_SHIFT: u16 = 10_000;
const RR_WARMUP: usize = 2_000;
const RR_SAMPLES: usize = 20_000;
/// Docker's overlay: VNI from 4096, MTU 1450 inside containers.
const OVERLAY_VNI: &str = "4096";
const OVERLAY_MTU: &str = "1450";

/// Where traffic goes from and to: a client namespace and a server address.
struct BenchPath {
    key: &'static str,
    label: &'static str,
    client: String,
    server: String,
    server_addr: Ipv4Addr,
    /// Added to every port the client dials (the servers listen on the
    /// plain ones): the routing mesh publishes them shifted, so the hosts'
    /// own ports stay theirs.
    port_shift: u16,
}

#[derive(Clone, Copy)]
enum Figure {
    Tcp,
    RrP50,
    Cps,
}

impl Figure {
    fn of(self, figures: &Figures) -> f64 {
        match self {
            Figure::Tcp => figures.tcp_gbps,
            Figure::RrP50 => figures.rr_p50_us,
            Figure::Cps => figures.tcp_cps,
        }
    }
}

#[derive(Default)]
struct Figures {
    tcp_gbps: f64,
    tcp_4streams_gbps: f64,
    rr_p50_us: f64,
    rr_p99_us: f64,
    tcp_cps: f64,
}

impl Figures {
    /// (name, ours, baseline's) for every figure a ratio is reported for.
    fn ratio_inputs(&self, base: &Figures) -> [(&'static str, f64, f64); 4] {
        [
            ("tcp", self.tcp_gbps, base.tcp_gbps),
            (
                "tcp_4streams",
                self.tcp_4streams_gbps,
                base.tcp_4streams_gbps,
            ),
            ("rr_p50", self.rr_p50_us, base.rr_p50_us),
            ("cps", self.tcp_cps, base.tcp_cps),
        ]
    }

    /// Each field's median over `rounds`.
    fn median(rounds: &[Figures]) -> Figures {
        let median = |field: fn(&Figures) -> f64| {
            let mut values: Vec<f64> = rounds.iter().map(field).collect();
            values.sort_by(f64::total_cmp);
            values[values.len() / 2]
        };
        Figures {
            tcp_gbps: median(|f| f.tcp_gbps),
            tcp_4streams_gbps: median(|f| f.tcp_4streams_gbps),
            rr_p50_us: median(|f| f.rr_p50_us),
            rr_p99_us: median(|f| f.rr_p99_us),
            tcp_cps: median(|f| f.tcp_cps),
        }
    }
}

pub fn run(json_path: Option<&Path>, seconds: u32, rounds: u32) -> anyhow::Result<()> {
    // Hosts 1-2 carry the underlay and kernel baselines; the others run swarm
    // daemons (their VXLAN device and the kernel baseline's cannot share UDP
    // 4789 in one namespace), all on the one underlay bridge: hosts 3-4 with
    // the default underlay hook, 5-6 with it on TC (and a service with a VIP
    // and published ports in front of the task on host 6), 7-8 with it on TC
    // and local delivery by plain `bpf_redirect` instead of
    // `bpf_redirect_peer`, 9-10 on TC with the same service among 10,000.
    let mut topology = Topology::new(&TopologyOptions::new("swbench", 10))?;
    let overlay = KernelOverlay::build(&topology, 0, 1)?;
    overlay.add_dnat_vip()?;
    let tc_hook = args(&["--underlay-hook", "tc"]);
    let tc_redirect = args(&["--underlay-hook", "tc", "--local-delivery", "redirect"]);
    for (hosts, daemon_args) in [
        ([2, 3], &args(&[])),
        ([4, 5], &tc_hook),
        ([6, 7], &tc_redirect),
        ([8, 9], &tc_hook),
    ] {
        for host in hosts {
            topology.start_daemon_with(host, daemon_args)?;
        }
    }
    let swarm = SwarmOverlay::build(&mut topology, 4096, [2, 3])?;
    let swarm_tc = SwarmOverlay::build(&mut topology, 4096, [4, 5])?;
    let swarm_redirect = SwarmOverlay::build(&mut topology, 4096, [6, 7])?;
    // Two tasks on one node: the same-node path, with each delivery helper.
    let local_peer = SwarmOverlay::build(&mut topology, 4097, [4, 4])?;
    let local_redirect = SwarmOverlay::build(&mut topology, 4097, [6, 6])?;
    let crowded = SwarmOverlay::build(&mut topology, 4098, [8, 9])?;
    swarm_tc.add_service(&topology, [4, 5], 0)?;
    crowded.add_service(&topology, [8, 9], 9_999)?;
    let paths = [
        host_path(&topology, "underlay", "underlay (host -> host)", 0, 1),
        BenchPath {
            key: "kernel_vxlan",
            label: "kernel vxlan + bridge (Docker-style)",
            client: overlay.containers[0].name().to_owned(),
            server: overlay.containers[1].name().to_owned(),
            server_addr: overlay.addrs[1],
            port_shift: 0,
        },
        swarm.path("ebpf_vxlan", "swarm eBPF overlay (task -> task)"),
        swarm_tc.path(
            "ebpf_vxlan_tc_underlay",
            "swarm eBPF overlay, underlay hook on TC",
        ),
        swarm_redirect.path(
            "ebpf_vxlan_tc_redirect",
            "  same, delivered by bpf_redirect, not _peer",
        ),
        host_path(
            &topology,
            "underlay_xdp",
            "underlay with swarm's XDP (generic) attached",
            2,
            3,
        ),
        host_path(
            &topology,
            "underlay_tc",
            "underlay with swarm's program on TC",
            4,
            5,
        ),
        local_peer.path(
            "ebpf_same_node_peer",
            "swarm same-node task -> task, bpf_redirect_peer",
        ),
        local_redirect.path(
            "ebpf_same_node_redirect",
            "swarm same-node task -> task, bpf_redirect",
        ),
        BenchPath {
            key: "kernel_dnat",
            label: "kernel vxlan + nftables DNAT to a VIP",
            client: overlay.containers[2].name().to_owned(),
            server: overlay.containers[1].name().to_owned(),
            server_addr: KernelOverlay::DNAT_VIP,
            port_shift: 0,
        },
        swarm_tc.vip_path("ebpf_vip", "swarm VIP (1 service) -> remote task"),
        crowded.vip_path("ebpf_vip_10k", "swarm VIP among 10,000 services"),
        BenchPath {
            key: "mesh_local",
            label: "routing mesh via the task's node",
            client: topology.client.netns.name().to_owned(),
            server: swarm_tc.tasks[1].clone(),
            server_addr: topology.hosts[5].addr,
            port_shift: MESH_PORT_SHIFT,
        },
        BenchPath {
            key: "mesh_remote",
            label: "routing mesh via a node without the task",
            // Another outside client: one reusing its ports against two
            // nodes in front of one backend meets its own TIME_WAITs there.
            client: topology.hosts[0].netns.name().to_owned(),
            server: swarm_tc.tasks[1].clone(),
            server_addr: topology.hosts[4].addr,
            port_shift: MESH_PORT_SHIFT,
        },
    ];

    // Paths take turns, round after round, and each figure is the median over
    // rounds: drift on a shared VM then hits every path alike.
    let mut rounds_by_path: Vec<Vec<Figures>> = paths.iter().map(|_| Vec::new()).collect();
    for round in 1..=rounds {
        for (path, figures) in paths.iter().zip(&mut rounds_by_path) {
            println!("bench: round {round}/{rounds}: {}", path.label);
            figures
                .push(measure(path, seconds).with_context(|| format!("measuring {}", path.label))?);
        }
    }
    let results: Vec<Figures> = rounds_by_path.iter().map(|r| Figures::median(r)).collect();
    drop(overlay);
    drop(topology);

    let mut metrics = Map::new();
    metrics.insert(
        "date".into(),
        json!(
            output("date", &["-u", "+%Y-%m-%dT%H:%M:%SZ"])
                .unwrap_or_default()
                .trim()
        ),
    );
    metrics.insert(
        "kernel".into(),
        json!(output("uname", &["-r"]).unwrap_or_default().trim()),
    );
    metrics.insert(
        "cpus".into(),
        json!(std::thread::available_parallelism().map_or(0, |n| n.get())),
    );
    metrics.insert("cpu_model".into(), json!(cpu_model()));
    metrics.insert("rounds".into(), json!(rounds));
    metrics.insert("seconds_per_run".into(), json!(seconds));
    for (path, figures) in paths.iter().zip(&results) {
        let k = path.key;
        metrics.insert(format!("{k}_tcp_gbps"), json!(round(figures.tcp_gbps, 2)));
        metrics.insert(
            format!("{k}_tcp_4streams_gbps"),
            json!(round(figures.tcp_4streams_gbps, 2)),
        );
        metrics.insert(format!("{k}_rr_p50_us"), json!(round(figures.rr_p50_us, 1)));
        metrics.insert(format!("{k}_rr_p99_us"), json!(round(figures.rr_p99_us, 1)));
        metrics.insert(format!("{k}_tcp_cps"), json!(figures.tcp_cps.round()));
    }
    // Ratios of each path to the two baselines: throughput and connection
    // rate as path / baseline (above 1 is better), latency likewise (below 1
    // is better).
    let (underlay, kernel) = (&results[0], &results[1]);
    for (i, (path, figures)) in paths.iter().zip(&results).enumerate().skip(1) {
        let mut baselines = vec![("underlay", underlay)];
        if i > 1 {
            baselines.push(("kernel_vxlan", kernel));
        }
        for (base_key, base) in baselines {
            for (figure, ours, theirs) in figures.ratio_inputs(base) {
                metrics.insert(
                    format!("{}_vs_{base_key}_{figure}", path.key),
                    json!(round(ours / theirs, 3)),
                );
            }
        }
    }

    let figures_of = |key: &str| {
        paths
            .iter()
            .position(|p| p.key == key)
            .map(|i| &results[i])
            .expect("bench path exists")
    };
    let service_ratios = [
        (
            "ebpf_vip_vs_direct_cps",
            "ebpf_vip",
            "ebpf_vxlan_tc_underlay",
            Figure::Cps,
        ),
        (
            "ebpf_vip_vs_direct_rr_p50",
            "ebpf_vip",
            "ebpf_vxlan_tc_underlay",
            Figure::RrP50,
        ),
        (
            "ebpf_vip_10k_vs_1_cps",
            "ebpf_vip_10k",
            "ebpf_vip",
            Figure::Cps,
        ),
        (
            "ebpf_vip_vs_kernel_dnat_cps",
            "ebpf_vip",
            "kernel_dnat",
            Figure::Cps,
        ),
        (
            "kernel_dnat_vs_direct_cps",
            "kernel_dnat",
            "kernel_vxlan",
            Figure::Cps,
        ),
        (
            "mesh_remote_vs_local_tcp",
            "mesh_remote",
            "mesh_local",
            Figure::Tcp,
        ),
        (
            "mesh_remote_vs_local_cps",
            "mesh_remote",
            "mesh_local",
            Figure::Cps,
        ),
    ];
    for (name, ours, base, figure) in service_ratios {
        let ratio = figure.of(figures_of(ours)) / figure.of(figures_of(base));
        metrics.insert(name.into(), json!(round(ratio, 3)));
    }

    let control = control_plane_rows(&mut metrics, rounds, seconds)?;
    let services = services_rows(&mut metrics)?;
    let images = images_rows(&mut metrics)?;

    print_table(&paths, &results, &metrics);
    println!("service ratios:");
    for (name, ..) in service_ratios {
        println!("  {name:<32} {}", metrics[name]);
    }
    print_control_plane(&control);
    print_services(&services);
    print_images(&images);
    write_json(json_path, metrics)
}

/// Only the images rows.
pub fn run_images(json_path: Option<&Path>) -> anyhow::Result<()> {
    let mut metrics = Map::new();
    let date = output("date", &["-u", "+%Y-%m-%dT%H:%M:%SZ"]).unwrap_or_default();
    metrics.insert("date".into(), json!(date.trim()));
    let images = images_rows(&mut metrics)?;
    print_images(&images);
    write_json(json_path, metrics)
}

/// Runs the images bench with each runtime and adds its rows to
/// `metrics`, with the native runtime's ratios to the raw transfer and to
/// the Docker runtime.
fn images_rows(
    metrics: &mut Map<String, Value>,
) -> anyhow::Result<Vec<images_bench::RuntimeImages>> {
    let mut all = Vec::new();
    for runtime in [Runtime::Native, Runtime::Docker] {
        let figures = images_bench::run(runtime)?;
        for image in &figures.images {
            let (name, tag) = (runtime.name(), image.tag);
            metrics.insert(
                format!("image_{tag}_cold_s_{name}"),
                json!(round(image.cold_s, 3)),
            );
            metrics.insert(
                format!("image_{tag}_warm_s_{name}"),
                json!(round(image.warm_s, 3)),
            );
        }
        all.push(figures);
    }
    let [native, docker] = [&all[0], &all[1]];
    for (ours, theirs) in native.images.iter().zip(&docker.images) {
        let tag = ours.tag;
        metrics.insert(
            format!("image_{tag}_raw_transfer_s"),
            json!(round(ours.transfer_s, 3)),
        );
        metrics.insert(
            format!("image_{tag}_cold_vs_raw_transfer_native"),
            json!(round(ours.cold_s / ours.transfer_s, 2)),
        );
        metrics.insert(
            format!("image_{tag}_docker_vs_native_cold"),
            json!(round(theirs.cold_s / ours.cold_s, 2)),
        );
        metrics.insert(
            format!("image_{tag}_docker_vs_native_warm"),
            json!(round(theirs.warm_s / ours.warm_s, 2)),
        );
    }
    Ok(all)
}

fn print_images(images: &[images_bench::RuntimeImages]) {
    println!(
        "images (10 replicas on 3 nodes, from `service create` until all Running; raw transfer: the 3 nodes fetching the layers at once):"
    );
    println!(
        "  {:<8} {:<6} {:>8} {:>14} {:>8} {:>8}",
        "runtime", "image", "MB", "raw transfer s", "cold s", "warm s"
    );
    for runtime in images {
        for image in &runtime.images {
            println!(
                "  {:<8} {:<6} {:>8.1} {:>14.3} {:>8.2} {:>8.2}",
                runtime.runtime.name(),
                image.tag,
                image.size_mb,
                image.transfer_s,
                image.cold_s,
                image.warm_s
            );
        }
    }
}

/// Only the services rows.
pub fn run_services(json_path: Option<&Path>) -> anyhow::Result<()> {
    let mut metrics = Map::new();
    let date = output("date", &["-u", "+%Y-%m-%dT%H:%M:%SZ"]).unwrap_or_default();
    metrics.insert("date".into(), json!(date.trim()));
    let services = services_rows(&mut metrics)?;
    print_services(&services);
    write_json(json_path, metrics)
}

/// Runs the services bench with each runtime and adds its rows to
/// `metrics`: one round each (a round is minutes with Docker).
fn services_rows(
    metrics: &mut Map<String, Value>,
) -> anyhow::Result<Vec<services_bench::ServiceFigures>> {
    let convergence = services_bench::endpoint_convergence()?;
    metrics.insert(
        "endpoint_convergence_s_5_nodes".into(),
        json!(round(convergence.endpoint_s, 3)),
    );
    metrics.insert(
        "dns_follows_scale_1_to_4_s".into(),
        json!(round(convergence.dns_scale_s, 3)),
    );
    metrics.insert(
        "dns_dead_node_leaves_tasks_s".into(),
        json!(round(convergence.dns_dead_node_s, 3)),
    );
    println!(
        "endpoint convergence, 5 nodes: {:.3} s from Running to every other node's data plane",
        convergence.endpoint_s
    );
    println!(
        "resolver: tasks.<service> lists 4 of 4 {:.3} s after `service scale 1->4`; a killed node's task leaves it after {:.3} s",
        convergence.dns_scale_s, convergence.dns_dead_node_s
    );
    let simulated = services_bench::simulated_convergence()?;
    metrics.insert(
        "endpoint_convergence_s_100_simulated_nodes".into(),
        json!(round(simulated, 3)),
    );
    println!("endpoint convergence, 100 simulated nodes (gossip alone): {simulated:.3} s");
    let mut all = Vec::new();
    for runtime in [Runtime::Native, Runtime::Docker] {
        let figures = services_bench::run(runtime)?;
        let name = runtime.name();
        let rows = [
            ("service_create_10_s", figures.create_10_s),
            ("service_scale_10_to_50_s", figures.scale_10_to_50_s),
            ("service_scale_10_to_100_s", figures.scale_10_to_100_s),
            ("service_worker_killed_s", figures.worker_killed_s),
            (
                "service_create_10_vs_docker_swarm",
                figures.create_10_s / DOCKER_SWARM_CREATE_10_S,
            ),
            (
                "service_scale_10_to_50_vs_docker_swarm",
                figures.scale_10_to_50_s / DOCKER_SWARM_SCALE_10_TO_50_S,
            ),
        ];
        for (row, value) in rows {
            metrics.insert(format!("{row}_{name}"), json!(round(value, 3)));
        }
        if let Some(dns) = &figures.dns {
            metrics.insert(
                "dns_queries_per_s".into(),
                json!(round(dns.queries_per_s, 0)),
            );
            metrics.insert("dns_p99_us".into(), json!(round(dns.p99_us, 1)));
        }
        all.push(figures);
    }
    Ok(all)
}

fn print_services(services: &[services_bench::ServiceFigures]) {
    println!(
        "services (1 manager, 2 workers; Docker Swarm 20.10, one node, Docker runtime: create 10 {DOCKER_SWARM_CREATE_10_S} s, scale 10->50 {DOCKER_SWARM_SCALE_10_TO_50_S} s):"
    );
    println!(
        "  {:<8} {:>12} {:>14} {:>15} {:>15}",
        "runtime", "create 10 s", "scale 10->50 s", "scale 10->100 s", "worker killed s"
    );
    for f in services {
        println!(
            "  {:<8} {:>12.2} {:>14.2} {:>15.2} {:>15.2}",
            f.runtime.name(),
            f.create_10_s,
            f.scale_10_to_50_s,
            f.scale_10_to_100_s,
            f.worker_killed_s
        );
    }
    for dns in services.iter().filter_map(|f| f.dns.as_ref()) {
        println!(
            "tasks' resolver (127.0.0.11, 4 clients in one task): {:.0} queries/s, p99 {:.0} µs",
            dns.queries_per_s, dns.p99_us
        );
    }
}

/// Writes `metrics` as one JSON object to `path`, when given.
fn write_json(path: Option<&Path>, metrics: Map<String, Value>) -> anyhow::Result<()> {
    if let Some(path) = path {
        let text = serde_json::to_string_pretty(&Value::Object(metrics))?;
        std::fs::write(path, text + "\n").with_context(|| format!("writing {}", path.display()))?;
        println!("bench: wrote {}", path.display());
    }
    Ok(())
}

/// Only the control plane's rows.
pub fn run_control_plane(
    json_path: Option<&Path>,
    seconds: u32,
    rounds: u32,
) -> anyhow::Result<()> {
    let mut metrics = Map::new();
    let date = output("date", &["-u", "+%Y-%m-%dT%H:%M:%SZ"]).unwrap_or_default();
    metrics.insert("date".into(), json!(date.trim()));
    metrics.insert("rounds".into(), json!(rounds));
    let control = control_plane_rows(&mut metrics, rounds, seconds)?;
    print_control_plane(&control);
    write_json(json_path, metrics)
}

/// Runs the control-plane bench and adds its rows to `metrics`.
fn control_plane_rows(
    metrics: &mut Map<String, Value>,
    rounds: u32,
    seconds: u32,
) -> anyhow::Result<control_bench::ControlFigures> {
    let control = control_bench::run(rounds, seconds)?;
    let control_rows = [
        ("node_down_detection_s", round(control.node_down_s, 2)),
        (
            "node_down_detection_vs_swarmkit",
            round(control.node_down_s / SWARMKIT_DOWN_DETECTION_S, 3),
        ),
        ("leader_failover_s", round(control.failover_s, 3)),
        (
            "leader_failover_vs_swarmkit",
            round(control.failover_s / SWARMKIT_FAILOVER_S, 3),
        ),
        (
            "raft_writes_per_s_1_client",
            round(control.writes_per_s_1, 0),
        ),
        (
            "raft_writes_per_s_64_clients",
            round(control.writes_per_s_64, 0),
        ),
    ];
    for (name, value) in control_rows {
        metrics.insert(name.into(), json!(value));
    }
    Ok(control)
}

fn print_control_plane(control: &control_bench::ControlFigures) {
    println!(
        "control plane (3 managers, 1 worker):\n  node_down_detection_s            {:.2} (swarmkit: about {SWARMKIT_DOWN_DETECTION_S} s)\n  leader_failover_s                {:.3} (swarmkit: {SWARMKIT_FAILOVER_S} s or more)\n  raft_writes_per_s_1_client       {:.0}\n  raft_writes_per_s_64_clients     {:.0}",
        control.node_down_s, control.failover_s, control.writes_per_s_1, control.writes_per_s_64
    );
}

fn print_table(paths: &[BenchPath], results: &[Figures], metrics: &Map<String, Value>) {
    println!(
        "\nswarm data-plane bench: kernel {}, {} CPUs ({}), {}, median of {} rounds",
        metrics["kernel"].as_str().unwrap_or("?"),
        metrics["cpus"],
        metrics["cpu_model"].as_str().unwrap_or("?"),
        metrics["date"].as_str().unwrap_or("?"),
        metrics["rounds"],
    );
    println!(
        "| {:<48} | {:>8} | {:>8} | {:>8} | {:>8} | {:>7} | {:>8} | {:>9} | {:>9} |",
        "path",
        "TCP Gb/s",
        "4x Gb/s",
        "RR p50us",
        "RR p99us",
        "conn/s",
        "TCP/und.",
        "TCP/kern.",
        "cps/kern."
    );
    println!(
        "|{:-<50}|{:->10}|{:->10}|{:->10}|{:->10}|{:->9}|{:->10}|{:->11}|{:->11}|",
        "", "", "", "", "", "", "", "", ""
    );
    let (underlay, kernel) = (&results[0], &results[1]);
    for (i, (path, f)) in paths.iter().zip(results).enumerate() {
        let (tcp_vs_kernel, cps_vs_kernel) = if i > 1 {
            (
                format!("{:.3}", f.tcp_gbps / kernel.tcp_gbps),
                format!("{:.3}", f.tcp_cps / kernel.tcp_cps),
            )
        } else {
            ("-".to_owned(), "-".to_owned())
        };
        println!(
            "| {:<48} | {:>8.2} | {:>8.2} | {:>8.1} | {:>8.1} | {:>7.0} | {:>8.3} | {:>9} | {:>9} |",
            path.label,
            f.tcp_gbps,
            f.tcp_4streams_gbps,
            f.rr_p50_us,
            f.rr_p99_us,
            f.tcp_cps,
            f.tcp_gbps / underlay.tcp_gbps,
            tcp_vs_kernel,
            cps_vs_kernel,
        );
    }
    println!();
}

fn measure(path: &BenchPath, seconds: u32) -> anyhow::Result<Figures> {
    let server_ns = Netns::existing(&path.server);
    let client_ns = Netns::existing(&path.client);
    let _iperf = KillOnDrop(
        server_ns
            .command("iperf3")?
            .args(["-s", "-p", &IPERF_PORT.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting iperf3 (is it installed? `cargo xtask setup`)")?,
    );
    let addr = path.server_addr.to_string();
    let iperf = |streams: &str| -> anyhow::Result<f64> {
        // The server needs a moment to listen; retry the first connection.
        let mut last_err = None;
        for _ in 0..50 {
            match client_ns.exec(
                "iperf3",
                &[
                    "-c",
                    &addr,
                    "-p",
                    &(IPERF_PORT + path.port_shift).to_string(),
                    "-t",
                    &seconds.to_string(),
                    "-P",
                    streams,
                    "-J",
                ],
            ) {
                Ok(text) => {
                    let report: Value = serde_json::from_str(&text)?;
                    let bps = report["end"]["sum_received"]["bits_per_second"]
                        .as_f64()
                        .context("iperf3 report without end.sum_received")?;
                    return Ok(bps / 1e9);
                }
                Err(err) => {
                    last_err = Some(err);
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
        }
        Err(last_err.unwrap())
    };
    let tcp_gbps = iperf("1")?;
    let tcp_4streams_gbps = iperf("4")?;
    let (rr_p50_us, rr_p99_us) = request_response(path)?;
    let tcp_cps = connections_per_second(path, seconds)?;
    Ok(Figures {
        tcp_gbps,
        tcp_4streams_gbps,
        rr_p50_us,
        rr_p99_us,
        tcp_cps,
    })
}

/// One-byte TCP ping-pong on one connection; per-round-trip latency percentiles.
fn request_response(path: &BenchPath) -> anyhow::Result<(f64, f64)> {
    let (ready_tx, ready_rx) = mpsc::channel();
    let server = spawn_in_netns(&path.server, move || {
        let listener = TcpListener::bind((Ipv4Addr::UNSPECIFIED, RR_PORT))?;
        ready_tx.send(())?;
        let (mut conn, _) = listener.accept()?;
        conn.set_nodelay(true)?;
        let mut byte = [0u8; 1];
        while conn.read(&mut byte)? == 1 {
            conn.write_all(&byte)?;
        }
        Ok(())
    });
    ready_rx.recv_timeout(Duration::from_secs(5))?;
    let target = SocketAddr::from((path.server_addr, RR_PORT + path.port_shift));
    let mut samples = in_netns(&path.client, move || {
        let mut conn = TcpStream::connect_timeout(&target, Duration::from_secs(5))?;
        conn.set_nodelay(true)?;
        // A path that stops carrying data fails the bench instead of hanging it.
        conn.set_read_timeout(Some(Duration::from_secs(5)))?;
        let mut byte = [1u8; 1];
        let mut samples = Vec::with_capacity(RR_SAMPLES);
        for i in 0..RR_WARMUP + RR_SAMPLES {
            let start = Instant::now();
            conn.write_all(&byte)?;
            conn.read_exact(&mut byte)?;
            if i >= RR_WARMUP {
                samples.push(start.elapsed().as_secs_f64() * 1e6);
            }
        }
        Ok(samples)
    })?;
    server
        .join()
        .map_err(|_| anyhow::anyhow!("RR server panicked"))??;
    samples.sort_by(f64::total_cmp);
    Ok((percentile(&samples, 0.50), percentile(&samples, 0.99)))
}

/// New TCP connections per second, each opened and closed by the client after
/// the server accepted and closed it.
fn connections_per_second(path: &BenchPath, seconds: u32) -> anyhow::Result<f64> {
    let (ready_tx, ready_rx) = mpsc::channel();
    let stop = Arc::new(AtomicBool::new(false));
    let server_stop = stop.clone();
    let (done_tx, server_done) = mpsc::channel();
    let server = spawn_in_netns(&path.server, move || {
        let outcome = (|| -> anyhow::Result<()> {
            let listener = TcpListener::bind((Ipv4Addr::UNSPECIFIED, CPS_PORT))?;
            ready_tx.send(())?;
            loop {
                let (conn, _) = listener.accept()?;
                drop(conn);
                if server_stop.load(Ordering::Relaxed) {
                    return Ok(());
                }
            }
        })();
        let _ = done_tx.send(outcome);
        Ok(())
    });
    ready_rx.recv_timeout(Duration::from_secs(5))?;
    let target = SocketAddr::from((path.server_addr, CPS_PORT + path.port_shift));
    let client_stop = stop.clone();
    let result = in_netns(&path.client, move || {
        let deadline = Instant::now() + Duration::from_secs(seconds.into());
        let start = Instant::now();
        let mut connections = 0u64;
        let mut byte = [0u8; 1];
        while Instant::now() < deadline {
            let mut conn = TcpStream::connect_timeout(&target, Duration::from_secs(2))?;
            conn.set_read_timeout(Some(Duration::from_secs(5)))?;
            // Wait for the server's FIN so the server side holds TIME_WAIT.
            let _ = conn.read(&mut byte);
            connections += 1;
        }
        let rate = connections as f64 / start.elapsed().as_secs_f64();
        // One more connection wakes the server's blocking accept to see `stop`.
        client_stop.store(true, Ordering::Relaxed);
        let _ = TcpStream::connect_timeout(&target, Duration::from_secs(2));
        Ok(rate)
    });
    if result.is_err() {
        // The client failed before waking the server: wake it from here.
        stop.store(true, Ordering::Relaxed);
        let _ = in_netns(&path.client, move || {
            Ok(TcpStream::connect_timeout(&target, Duration::from_secs(2)).map(drop)?)
        });
    }
    // A server still blocked in accept (its wake-up connection lost) must
    // not hang the bench: it is left behind and ends with the process.
    match server_done.recv_timeout(Duration::from_secs(5)) {
        Ok(outcome) => outcome?,
        Err(_) => eprintln!(
            "bench: {}: CPS server did not stop; left behind",
            path.label
        ),
    }
    drop(server);
    result
}

fn percentile(sorted: &[f64], q: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

fn round(value: f64, digits: i32) -> f64 {
    let scale = 10f64.powi(digits);
    (value * scale).round() / scale
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|text| {
            text.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into())
}

struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Docker's overlay data path rebuilt with kernel devices: on each host a
/// bridge with a VXLAN device (VNI 4096, UDP 4789) and a container namespace on
/// a veth with MTU 1450; VXLAN floods to the other hosts' underlay addresses.
struct KernelOverlay {
    containers: Vec<Netns>,
    addrs: Vec<Ipv4Addr>,
}

impl KernelOverlay {
    fn build(topology: &Topology, a: usize, b: usize) -> anyhow::Result<Self> {
        let mut containers = Vec::new();
        let mut addrs = Vec::new();
        let pair = [&topology.hosts[a], &topology.hosts[b]];
        for (i, host) in pair.iter().enumerate() {
            let peer = pair[1 - i];
            let ns = &host.netns;
            ns.ip(&["link", "add", "br-ov", "type", "bridge"])?;
            ns.ip(&["link", "set", "br-ov", "up"])?;
            ns.ip(&[
                "link",
                "add",
                "vxlan0",
                "type",
                "vxlan",
                "id",
                OVERLAY_VNI,
                "dstport",
                "4789",
                "local",
                &host.addr.to_string(),
                "dev",
                "eth0",
            ])?;
            ns.ip(&["link", "set", "vxlan0", "master", "br-ov", "up"])?;
            ns.exec(
                "bridge",
                &[
                    "fdb",
                    "append",
                    "00:00:00:00:00:00",
                    "dev",
                    "vxlan0",
                    "dst",
                    &peer.addr.to_string(),
                ],
            )?;
            // Host a gets a third container: the DNAT path's client (a client
            // of its own, so its reused ports never meet the direct path's
            // TIME_WAITs at the server).
            let count = if i == 0 { 2 } else { 1 };
            for extra in 0..count {
                let n = containers.len() + 1;
                let container = Netns::create(&format!("{}-c{n}", topology.prefix))?;
                let host_side = format!("veth-c{extra}");
                ns.ip(&[
                    "link",
                    "add",
                    &host_side,
                    "mtu",
                    OVERLAY_MTU,
                    "type",
                    "veth",
                    "peer",
                    "name",
                    "eth0",
                    "mtu",
                    OVERLAY_MTU,
                    "netns",
                    container.name(),
                ])?;
                ns.ip(&["link", "set", &host_side, "master", "br-ov", "up"])?;
                let addr = if extra == 0 {
                    Ipv4Addr::new(10, 0, 0, (i + 2) as u8)
                } else {
                    Ipv4Addr::new(10, 0, 0, 4)
                };
                container.ip(&["addr", "add", &format!("{addr}/24"), "dev", "eth0"])?;
                container.ip(&["link", "set", "eth0", "up"])?;
                containers.push(container);
                addrs.push(addr);
            }
        }
        // Containers in order: host a's, its DNAT client, host b's.
        containers.swap(1, 2);
        addrs.swap(1, 2);
        Ok(Self { containers, addrs })
    }

    /// A VIP the third container reaches the second through, as Docker
    /// builds one where IPVS is missing: an nftables DNAT rule with
    /// conntrack in the client's namespace.
    const DNAT_VIP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 100);

    fn add_dnat_vip(&self) -> anyhow::Result<()> {
        let rules = format!(
            "table ip vip {{ chain out {{ type nat hook output priority -100; \
             ip daddr {} dnat to {}; }}; }}",
            Self::DNAT_VIP,
            self.addrs[1]
        );
        self.containers[2]
            .exec("nft", &[&rules])
            .context("nft (is nftables installed? `cargo xtask setup`)")?;
        Ok(())
    }
}

/// Tasks on swarm's overlay, programmed through the CLI as a user (or,
/// later, the control plane) would: a network on the daemons of `hosts`, a
/// client and a server task on them (both on one host gives the same-node
/// path) and a second client beside the first for the VIP path, each node
/// told where the others' tasks are.
struct SwarmOverlay {
    vni: u32,
    tasks: Vec<String>,
    addrs: Vec<Ipv4Addr>,
}

impl SwarmOverlay {
    fn build(topology: &mut Topology, vni: u32, hosts: [usize; 2]) -> anyhow::Result<Self> {
        let third_octet = (vni - 4096 + 9) as u8;
        let roles = hosts.map(|h| format!("n{vni}h{}", h + 1));
        let tasks = topology.overlay(
            vni,
            &format!("10.0.{third_octet}.0/24"),
            &[
                (
                    hosts[0],
                    &format!("{}a", roles[0]),
                    Ipv4Addr::new(10, 0, third_octet, 2),
                ),
                (
                    hosts[1],
                    &format!("{}b", roles[1]),
                    Ipv4Addr::new(10, 0, third_octet, 3),
                ),
                // The VIP path's client: see KernelOverlay's third container.
                (
                    hosts[0],
                    &format!("{}v", roles[0]),
                    Ipv4Addr::new(10, 0, third_octet, 4),
                ),
            ],
        )?;
        Ok(Self {
            vni,
            tasks: tasks.iter().map(|t| t.netns.clone()).collect(),
            addrs: tasks.iter().map(|t| t.ip).collect(),
        })
    }

    /// The first task's VIP path: the second task behind a VIP.
    fn vip_path(&self, key: &'static str, label: &'static str) -> BenchPath {
        BenchPath {
            client: self.tasks[2].clone(),
            server_addr: self.vip(),
            ..self.path(key, label)
        }
    }

    fn vip(&self) -> Ipv4Addr {
        let octets = self.addrs[1].octets();
        Ipv4Addr::new(octets[0], octets[1], octets[2], 100)
    }

    /// On the daemons of `hosts`: a service with a VIP and the bench's ports
    /// published, backed by the second task; `others` more services (VIP and
    /// one backend each, on a network of their own) in the maps beside it.
    fn add_service(
        &self,
        topology: &Topology,
        hosts: [usize; 2],
        others: u32,
    ) -> anyhow::Result<()> {
        let vni = self.vni.to_string();
        let (vip, backend) = (self.vip().to_string(), self.addrs[1].to_string());
        for host in hosts {
            let daemon = topology.daemon(host);
            let mut create = vec![
                "dataplane",
                "service",
                "create",
                "bench",
                "--vni",
                &vni,
                "--vip",
                &vip,
                "--backend",
                &backend,
            ];
            let published: Vec<String> = [IPERF_PORT, RR_PORT, CPS_PORT]
                .iter()
                .map(|port| format!("{}:{port}", port + MESH_PORT_SHIFT))
                .collect();
            for port in &published {
                create.extend(["-p", port.as_str()]);
            }
            daemon.swarm_ok(&create)?;
            if others == 0 {
                continue;
            }
            daemon.swarm_ok(&[
                "dataplane",
                "network",
                "create",
                "--vni",
                "4200",
                "--subnet",
                "10.200.0.0/16",
            ])?;
            let requests: Vec<Value> = (0..others)
                .map(|i| {
                    let vip = Ipv4Addr::new(10, 200, (i / 250 + 1) as u8, (i % 250 + 2) as u8);
                    json!({"ServiceCreate": {
                        "name": format!("other{i}"),
                        "vni": 4200,
                        "vip": vip,
                        "backends": ["10.200.0.2"],
                    }})
                })
                .collect();
            daemon.requests(&requests)?;
        }
        Ok(())
    }

    /// From the first task to the second.
    fn path(&self, key: &'static str, label: &'static str) -> BenchPath {
        BenchPath {
            key,
            label,
            client: self.tasks[0].clone(),
            server: self.tasks[1].clone(),
            server_addr: self.addrs[1],
            port_shift: 0,
        }
    }
}

fn args(list: &[&str]) -> Vec<String> {
    list.iter().map(|a| (*a).to_owned()).collect()
}
