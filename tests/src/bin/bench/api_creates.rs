//! Row 3: durable pod creates per second from 64 clients, beside this disk's fsyncs per
//! second.

use std::time::{Duration, Instant};

use kubelab_proto::v1::pods_client::PodsClient;
use kubelab_tests::Lab;

use crate::measure::{creds, keep_logs};
use crate::pods::{create_from_all, plain_pod};
use crate::{Row, Sizes};

/// Row 3: durable creates per second, 64 clients each on its own connection.
pub async fn run(sizes: &Sizes, rows: &mut Vec<Row>) {
    let lab = Lab::start_without_scheduler(0, "info", &[]);
    let credential = creds(&lab);
    let clients: Vec<_> = (0..64)
        .map(|_| PodsClient::new(credential.channel().expect("channel")))
        .collect();
    // Warm-up: every connection made (TLS) before the clock starts.
    for (c, client) in clients.iter().enumerate() {
        client
            .clone()
            .create(plain_pod(format!("warm-{c}"), "127.0.0.1:1/none:1"))
            .await
            .expect("create");
    }
    let per_client = sizes.creates / 64;
    let start = Instant::now();
    create_from_all(clients, per_client, "c", "127.0.0.1:1/none:1").await;
    let elapsed = start.elapsed();
    let rate = (per_client * 64) as f64 / elapsed.as_secs_f64();
    eprintln!(
        "row 3: {} creates in {:.2}s",
        per_client * 64,
        elapsed.as_secs_f64()
    );
    keep_logs(&lab, "api");
    let fsyncs = fsyncs_per_second(lab.dir.path());
    rows.push(Row {
        what: format!(
            "3. API: durable pod creates/s, 64 concurrent clients ({} creates)",
            per_client * 64
        ),
        ours: format!("{rate:.0} /s"),
        comparison: format!(
            "this disk: {fsyncs:.0} fsyncs/s (one per create without group commit)"
        ),
        target: "≥ 5,000/s".into(),
    });
}

/// This disk's synchronous write rate: the ceiling on durable creates without group commit.
fn fsyncs_per_second(dir: &std::path::Path) -> f64 {
    use std::io::Write;
    let path = dir.join("fsync-probe");
    let mut file = std::fs::File::create(&path).expect("probe file");
    let start = Instant::now();
    let mut n = 0u32;
    while start.elapsed() < Duration::from_secs(2) {
        file.write_all(&[0u8; 512]).expect("write");
        file.sync_data().expect("fsync");
        n += 1;
    }
    let _ = std::fs::remove_file(&path);
    n as f64 / start.elapsed().as_secs_f64()
}
