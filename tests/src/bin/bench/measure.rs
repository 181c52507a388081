//! The bench's measures and what it keeps: percentiles, milliseconds, a process's memory,
//! the credential for extra connections, and the labs' logs (BENCH_KEEP_LOGS).

use std::time::Duration;

use kubelab_tests::Lab;

pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

pub fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

pub fn rss_mb(pid: Option<u32>) -> f64 {
    status_mb(pid, "VmRSS:")
}

/// The process's own memory (RssAnon): what is not pages of files such as the kubelabd
/// binary, which every process of a lab shares.
pub fn anon_mb(pid: Option<u32>) -> f64 {
    status_mb(pid, "RssAnon:")
}

fn status_mb(pid: Option<u32>, field: &str) -> f64 {
    let kb = pid
        .and_then(|p| std::fs::read_to_string(format!("/proc/{p}/status")).ok())
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse::<f64>().ok())
        })
        .unwrap_or(0.0);
    kb / 1024.0
}

pub fn creds(lab: &Lab) -> kubelab_proto::credential::Credential {
    kubelab_proto::credential::Credential::load(&lab.admin_config()).expect("admin credential")
}

/// With BENCH_KEEP_LOGS=DIR, the lab's logs are copied there (`row-apiserver.log`, ...)
/// before the lab is removed: for profiling.
pub fn keep_logs(lab: &Lab, row: &str) {
    let Some(dir) = std::env::var_os("BENCH_KEEP_LOGS") else {
        return;
    };
    let dir = std::path::PathBuf::from(dir);
    let _ = std::fs::create_dir_all(&dir);
    for entry in std::fs::read_dir(lab.dir.path())
        .into_iter()
        .flatten()
        .flatten()
    {
        let path = entry.path();
        if path.extension().is_some_and(|x| x == "log") {
            let name = format!("{row}-{}", entry.file_name().to_string_lossy());
            let _ = std::fs::copy(&path, dir.join(name));
        }
    }
}
