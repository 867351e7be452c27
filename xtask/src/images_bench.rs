//! The images bench rows: from `service create` of 10 replicas of a 5 MB
//! and a 50 MB image until all run on 3 nodes (1 manager, 2 workers),
//! cold (no node holds the image) and warm (every node does), with the
//! native runtime and with the Docker runtime (an engine per node, in the
//! node's namespace), every node pulling from one registry (Debian's
//! docker-registry) over the underlay. Beside them, the raw transfer: the
//! three nodes fetching the image's layers at once over plain HTTP.

use std::{
    net::SocketAddr,
    time::{Duration, Instant},
};

use swarm_tests::{
    Registry, Swarm, TestImage, TestLayer, Topology, TopologyOptions,
    docker::{DockerEngine, EngineOptions},
};

use crate::services_bench::{Runtime, wait_service_running};

const REGISTRY: &str = "198.18.0.100:5000";
const REPOSITORY: &str = "bench";
const REPLICAS: usize = 10;
const NODES: usize = 3;
const PATIENCE: Duration = Duration::from_secs(300);

/// The two images: their tag, and the bytes of random (incompressible)
/// data in layers above busybox.
const IMAGES: [(&str, &[usize]); 2] = [
    ("5mb", &[3 << 20]),
    ("50mb", &[16 << 20, 16 << 20, 16 << 20]),
];

/// One image's figures with one runtime.
pub struct ImageFigures {
    pub tag: &'static str,
    /// What its layers weigh, compressed, in MB.
    pub size_mb: f64,
    /// The three nodes fetching its layers at once, each layer on its own
    /// connection.
    pub transfer_s: f64,
    pub cold_s: f64,
    pub warm_s: f64,
}

pub struct RuntimeImages {
    pub runtime: Runtime,
    pub images: Vec<ImageFigures>,
}

pub fn run(runtime: Runtime) -> anyhow::Result<RuntimeImages> {
    let name = runtime.name();
    let mut topology = Topology::new(&TopologyOptions::new("swbenchim", NODES))?;
    let registry = Registry::start(
        topology.client.netns.name(),
        REGISTRY.parse::<SocketAddr>()?,
    )?;
    let mut pushed = Vec::new();
    for (tag, sizes) in IMAGES {
        println!("bench: images ({name} runtime): pushing the {tag} image");
        registry.push(REPOSITORY, tag, &image(sizes))?;
        pushed.push((tag, registry.layer_digests(REPOSITORY, tag)?));
    }
    // Declared after the topology: dropped before it, once the daemons
    // stopped and removed their containers.
    let engines = match runtime {
        Runtime::Docker => engines(&topology)?,
        Runtime::Native => Vec::new(),
    };
    for i in 0..NODES {
        let mut args = vec!["--insecure-registry".to_owned(), REGISTRY.to_owned()];
        if let Some(engine) = engines.get(i) {
            args.extend([
                "--runtime".into(),
                "docker".into(),
                "--docker-host".into(),
                engine.host(),
            ]);
        }
        topology.start_daemon_with(i, &args)?;
    }
    Swarm::new().workers(1..NODES).form(&topology)?;

    let mut images = Vec::new();
    for (tag, layers) in &pushed {
        let (transfer_s, bytes) = raw_transfer(&topology, &registry, layers)?;
        let service = format!("img{tag}");
        let reference = format!("{REGISTRY}/{REPOSITORY}:{tag}");
        println!("bench: images ({name} runtime): {tag} cold");
        let cold_s = create_until_running(&topology, &service, &reference)?;
        remove(&topology, &engines, &service)?;
        println!("bench: images ({name} runtime): {tag} warm");
        let warm_s = create_until_running(&topology, &service, &reference)?;
        remove(&topology, &engines, &service)?;
        images.push(ImageFigures {
            tag,
            size_mb: bytes as f64 / f64::from(1 << 20),
            transfer_s,
            cold_s,
            warm_s,
        });
    }
    // The daemons remove their containers while the engines run; the
    // engines stop (unmounting what they mounted) while their namespaces
    // are still there; then the namespaces go.
    for i in 0..NODES {
        topology.daemon_mut(i).stop()?;
    }
    // The next run starts cold again.
    for engine in &engines {
        if let Err(err) = forget_bench_images(engine) {
            eprintln!("bench: images: {err:#}");
        }
    }
    drop(engines);
    drop(topology);
    Ok(RuntimeImages { runtime, images })
}

/// busybox serving HTTP, with random layers of `sizes` bytes above it.
fn image(sizes: &[usize]) -> TestImage {
    let mut layers = vec![TestLayer::busybox()];
    let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
    for (n, size) in sizes.iter().enumerate() {
        let mut layer = TestLayer::default();
        layer.files.insert(
            format!("data/{n}.bin"),
            Some(random_bytes(*size, &mut seed)),
        );
        layers.push(layer);
    }
    TestImage {
        layers,
        config: serde_json::json!({
            "Env": ["PATH=/bin"],
            "Cmd": ["/bin/busybox", "httpd", "-f", "-p", "80", "-h", "/www"],
        }),
    }
}

/// xorshift64: bytes gzip cannot shrink, without a crate for it.
fn random_bytes(len: usize, seed: &mut u64) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(len + 8);
    while bytes.len() < len {
        *seed ^= *seed << 13;
        *seed ^= *seed >> 7;
        *seed ^= *seed << 17;
        bytes.extend_from_slice(&seed.to_le_bytes());
    }
    bytes.truncate(len);
    bytes
}

/// An engine per node, in the node's namespace, with no image of the
/// bench's registry.
fn engines(topology: &Topology) -> anyhow::Result<Vec<DockerEngine>> {
    let mut engines = Vec::new();
    for host in &topology.hosts {
        let engine = DockerEngine::start_with(&EngineOptions {
            instance: format!("bench-{}", host.name),
            netns: Some(host.netns.name().to_owned()),
            insecure_registries: vec![REGISTRY.to_owned()],
        })?;
        forget_bench_images(&engine)?;
        engines.push(engine);
    }
    Ok(engines)
}

fn forget_bench_images(engine: &DockerEngine) -> anyhow::Result<()> {
    let filter = format!("reference={REGISTRY}/{REPOSITORY}");
    let ids = engine.docker(&["images", "-q", "--filter", &filter])?;
    let mut args = vec!["image", "rm", "-f"];
    args.extend(ids.split_whitespace());
    if args.len() > 3 {
        engine.docker(&args)?;
    }
    Ok(())
}

/// Every node fetching every layer at once; the time until the last
/// byte, and the layers' total size.
fn raw_transfer(
    topology: &Topology,
    registry: &Registry,
    layers: &[String],
) -> anyhow::Result<(f64, usize)> {
    let started = Instant::now();
    let fetched: Vec<anyhow::Result<usize>> = std::thread::scope(|scope| {
        let fetches: Vec<_> = topology
            .hosts
            .iter()
            .flat_map(|host| layers.iter().map(move |layer| (host, layer)))
            .map(|(host, layer)| {
                scope.spawn(move || registry.fetch_blob_from(host.netns.name(), REPOSITORY, layer))
            })
            .collect();
        fetches
            .into_iter()
            .map(|fetch| {
                fetch
                    .join()
                    .unwrap_or_else(|_| Err(anyhow::anyhow!("a fetch panicked")))
            })
            .collect()
    });
    let elapsed = started.elapsed().as_secs_f64();
    let mut bytes = 0;
    for size in fetched {
        bytes += size?;
    }
    Ok((elapsed, bytes / topology.hosts.len()))
}

fn create_until_running(
    topology: &Topology,
    service: &str,
    reference: &str,
) -> anyhow::Result<f64> {
    let started = Instant::now();
    let replicas = REPLICAS.to_string();
    topology.daemon(0).swarm_ok(&[
        "service",
        "create",
        "-d",
        "--name",
        service,
        "--replicas",
        &replicas,
        reference,
    ])?;
    wait_service_running(topology, service, REPLICAS, None)?;
    Ok(started.elapsed().as_secs_f64())
}

/// Removes the service and waits until no node runs its tasks.
fn remove(topology: &Topology, engines: &[DockerEngine], service: &str) -> anyhow::Result<()> {
    topology.daemon(0).swarm_ok(&["service", "rm", service])?;
    let started = Instant::now();
    loop {
        let mut left = 0;
        for engine in engines {
            left += engine.task_containers()?.len();
        }
        // The native runtime's image store knows which tasks hold an image.
        for i in (0..NODES).filter(|_| engines.is_empty()) {
            for row in topology.daemon(i).swarm_json(&["image", "ls"])? {
                left += row["Tasks"].as_u64().unwrap_or(0) as usize;
            }
        }
        let listed = topology.daemon(0).swarm_json(&["service", "ls"])?;
        if left == 0 && listed.is_empty() {
            return Ok(());
        }
        anyhow::ensure!(
            started.elapsed() < PATIENCE,
            "{service}'s tasks outlived {PATIENCE:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}
