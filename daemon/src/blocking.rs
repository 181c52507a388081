//! Blocking work (removing a container's files, mounts, namespaces, reaping orphans) kept
//! off the async worker threads: with two cores, one thread waiting on the disk is half of
//! everything the agent does. Owns no state.

/// Runs `f` here, telling a multi-threaded tokio runtime first that this thread will
/// block, so that its other tasks move to another thread meanwhile (`block_in_place`).
/// Elsewhere (a current-thread runtime in a test, no runtime) it simply runs `f`.
pub fn here<T>(f: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(tokio::runtime::RuntimeFlavor::MultiThread) => tokio::task::block_in_place(f),
        _ => f(),
    }
}

/// Runs `f` on tokio's blocking pool and waits for it without holding a worker thread.
pub async fn off_thread<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    match tokio::task::spawn_blocking(f).await {
        Ok(value) => value,
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        // Cancelled: only when the runtime is shutting down, and then nothing waits.
        Err(_) => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn blocking_work_leaves_the_other_tasks_running() {
        let ticker = tokio::spawn(async {
            let mut ticks = 0;
            let start = std::time::Instant::now();
            while start.elapsed() < std::time::Duration::from_millis(300) {
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                ticks += 1;
            }
            ticks
        });
        let a = super::off_thread(|| std::thread::sleep(std::time::Duration::from_millis(300)));
        let b = async { super::here(|| std::thread::sleep(std::time::Duration::from_millis(300))) };
        tokio::join!(a, b);
        assert!(ticker.await.unwrap_or(0) > 10, "the ticker was starved");
    }
}
