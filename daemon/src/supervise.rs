//! Words for how a task that should have run forever ended, so that whoever supervises it
//! (the apiserver for its controllers, `kubelabd up` for the scheduler) can say so.
//! Owns nothing; starts and stops nothing.

/// "it returned", "it panicked: MESSAGE", or why the task was cancelled.
pub fn task_end<T>(ended: Result<T, tokio::task::JoinError>) -> String {
    match ended {
        Ok(_) => "it returned".into(),
        Err(e) if e.is_panic() => {
            let payload = e.into_panic();
            let message = payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            format!("it panicked: {message}")
        }
        Err(e) => e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    #[tokio::test]
    async fn a_panicking_task_is_described_with_its_message() {
        let ended = tokio::spawn(async { panic!("boom") }).await;
        assert_eq!(super::task_end(ended), "it panicked: boom");
        let ended = tokio::spawn(async {}).await;
        assert_eq!(super::task_end(ended), "it returned");
    }
}
