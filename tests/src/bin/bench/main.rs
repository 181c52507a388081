//! `make bench`: kubelab's figures, each beside a comparison measured in the same run on
//! this machine, as one table (the rows of issue 6):
//!
//! 1. pod start with a cached image (create → Running seen by a watch, as Kubernetes' pod
//!    startup SLO measures it), 100 sequential pods, beside `runc run` of the same rootfs;
//! 2. a burst of 100 pods on 2 real agents, beside 100 `runc run --detach`, two at a time;
//! 3. durable pod creates per second from 64 clients, beside this disk's fsyncs per second;
//! 4. scheduler binds per second, 1,000 hollow nodes and 10,000 pods;
//! 5. memory (RSS) of the apiserver and an agent idle, and of the apiserver holding 10,000 pods;
//! 6. a cold image pull and unpack, beside `skopeo copy` + `umoci unpack` of the same image;
//! 7. `kubelab image build`, cold, cached and with one file changed;
//! 8. a Deployment of 100 on 2 real agents until Available, and (8b) its rolling update,
//!    beside bare pods in the same lab;
//! 9. a Deployment of 10,000 replicas on 1,000 hollow nodes until all Running, pods/s;
//! 10. a new endpoint Ready → reachable through its Service, and (10b) a request through
//!     a cluster IP beside one to the pod directly.
//!
//! Not a test: nothing here asserts a time. `BENCH_QUICK=1` shrinks the counts;
//! `BENCH_ONLY=3,4` runs only those rows (to profile one).
//!
//! One file a row (or two rows measured in the same lab): `pod_start` (1, 5 idle),
//! `burst` (2), `api_creates` (3), `scheduler` (4, 5c), `image_pull` (6), `image_build`
//! (7), `workloads` (8, 8b, 9), `services` (10, 10b),
//! `dns` (11); what they share: `pods` (making, starting and watching pods), `runc` (the runc
//! comparison), `measure` (percentiles, memory, logs). This file holds the sizes, the
//! table and the order of the rows.

mod api_creates;
mod burst;
mod dns;
mod image_build;
mod image_pull;
mod measure;
mod pod_start;
mod pods;
mod runc;
mod scheduler;
mod services;
mod workloads;

/// How many of each thing to measure (`BENCH_QUICK=1`: a fast look, not for the record).
pub struct Sizes {
    pub sequential: usize,
    pub extra: usize,
    pub burst: usize,
    pub creates: usize,
    pub hollow_nodes: usize,
    pub scheduled_pods: usize,
}

impl Sizes {
    fn from_env() -> Sizes {
        if std::env::var_os("BENCH_QUICK").is_some() {
            Sizes {
                sequential: 20,
                extra: 5,
                burst: 20,
                creates: 2_000,
                hollow_nodes: 100,
                scheduled_pods: 1_000,
            }
        } else {
            Sizes {
                sequential: 100,
                extra: 20,
                burst: 100,
                creates: 20_000,
                hollow_nodes: 1_000,
                scheduled_pods: 10_000,
            }
        }
    }
}

/// One row of the table.
pub struct Row {
    pub what: String,
    pub ours: String,
    pub comparison: String,
    pub target: String,
}

#[tokio::main]
async fn main() {
    kubelab_proto::credential::init_tls();
    let sizes = Sizes::from_env();
    let mut rows = Vec::new();
    // BENCH_ONLY=3 (or 1,4...) runs only those rows: for profiling one of them.
    let only = std::env::var("BENCH_ONLY").unwrap_or_default();
    let wanted = |row: &str| only.is_empty() || only.split(',').any(|r| r == row);
    if wanted("1") || wanted("5") {
        pod_start::run(&sizes, &mut rows).await;
    }
    if wanted("2") {
        burst::run(&sizes, &mut rows).await;
    }
    if wanted("3") {
        api_creates::run(&sizes, &mut rows).await;
    }
    if wanted("4") || wanted("5") {
        scheduler::run(&sizes, &mut rows).await;
    }
    if wanted("6") {
        image_pull::run(&mut rows).await;
    }
    if wanted("7") {
        image_build::run(&mut rows).await;
    }
    if wanted("8") {
        workloads::run_real(&sizes, &mut rows).await;
    }
    if wanted("9") {
        workloads::run_hollow(&sizes, &mut rows).await;
    }
    if wanted("10") {
        services::run(&mut rows).await;
    }
    if wanted("11") {
        dns::run(&mut rows).await;
    }
    rows.sort_by(|a, b| a.what.cmp(&b.what));
    println!();
    println!("| figure (this machine, this run) | kubelab | comparison, same run | target |");
    println!("|---|---|---|---|");
    for row in rows {
        println!(
            "| {} | {} | {} | {} |",
            row.what, row.ours, row.comparison, row.target
        );
    }
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    println!();
    println!(
        "machine: {cpus} cores, {}",
        std::fs::read_to_string("/proc/version")
            .unwrap_or_default()
            .trim()
    );
}
