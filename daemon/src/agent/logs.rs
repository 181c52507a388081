//! Reading a container's logs back, as `kubectl logs` shows them.
//!
//! The shim writes `<pod log dir>/<container>/<restart>.log` in the CRI format; this module
//! picks the file (the current run, or the previous one), turns records back into the
//! container's lines (optionally with their times), keeps the last N, and with `follow`
//! goes on as the file grows, woken by inotify, until the shim closes the file. It only
//! reads files.

use std::path::{Path, PathBuf};

use futures::StreamExt;
use inotify::{Inotify, WatchMask};
use tokio::io::AsyncReadExt;
use tokio::sync::mpsc;

use crate::cri_log;

#[derive(Debug, thiserror::Error)]
pub enum LogsError {
    #[error("previous terminated container {0:?} not found")]
    NoPrevious(String),
    #[error("container {0:?} has not started yet")]
    NotStarted(String),
    #[error("{0}: {1}")]
    Io(PathBuf, std::io::Error),
}

#[derive(Clone, Debug, Default)]
pub struct LogOptions {
    pub tail_lines: Option<i64>,
    pub timestamps: bool,
    pub follow: bool,
    /// Only lines written at or after this time (ms since the epoch; 0: all).
    pub since_ms: i64,
}

/// The file of the container's current run, or of the run before it.
pub fn select_file(
    container_dir: &Path,
    container: &str,
    previous: bool,
) -> Result<PathBuf, LogsError> {
    let mut runs: Vec<u64> = std::fs::read_dir(container_dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.strip_suffix(".log")?.parse().ok())
        .collect();
    runs.sort_unstable();
    let run = if previous {
        runs.iter()
            .rev()
            .nth(1)
            .ok_or_else(|| LogsError::NoPrevious(container.into()))?
    } else {
        runs.last()
            .ok_or_else(|| LogsError::NotStarted(container.into()))?
    };
    Ok(container_dir.join(format!("{run}.log")))
}

/// Turns CRI records back into output lines; keeps an unfinished (`P`) line until its end.
#[derive(Default)]
struct Renderer {
    timestamps: bool,
    /// Lines that began before this time are left out (ms; 0: none are).
    since_ms: i64,
    /// Whether the line being rebuilt is one left out.
    skipping: bool,
    /// Bytes of the file after its last `\n` (a record still being written).
    pending: Vec<u8>,
    /// The line being rebuilt from `P` records.
    line: Vec<u8>,
    line_started: bool,
}

impl Renderer {
    /// Feeds file bytes; returns the complete output lines they finish.
    fn feed(&mut self, data: &[u8]) -> Vec<Vec<u8>> {
        self.pending.extend_from_slice(data);
        let mut out = Vec::new();
        let Some(end) = self.pending.iter().rposition(|b| *b == b'\n') else {
            return out;
        };
        let complete: Vec<u8> = self.pending.drain(..=end).collect();
        for record in complete.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
            let Some(r) = cri_log::parse(record) else {
                continue;
            };
            if !self.line_started {
                self.line_started = true;
                self.skipping = self.since_ms > 0
                    && chrono::DateTime::parse_from_rfc3339(r.time)
                        .is_ok_and(|t| t.timestamp_millis() < self.since_ms);
                if self.timestamps {
                    self.line.extend_from_slice(r.time.as_bytes());
                    self.line.push(b' ');
                }
            }
            self.line.extend_from_slice(r.text);
            if r.full {
                self.line.push(b'\n');
                let line = std::mem::take(&mut self.line);
                if !self.skipping {
                    out.push(line);
                }
                self.line_started = false;
            }
        }
        out
    }
}

/// Streams the log file's lines into `tx` (in chunks), then, with `follow`, what is
/// written to it until the shim closes it.
///
/// `still_writing` tells, once the watch is in place, whether the shim still has the file
/// open: a file closed before the watch began would never say so, and `-f` would hang.
pub async fn stream(
    path: PathBuf,
    options: LogOptions,
    still_writing: impl Fn() -> bool + Send + Sync + 'static,
    tx: mpsc::Sender<Vec<u8>>,
) -> Result<(), LogsError> {
    let io = |e| LogsError::Io(path.clone(), e);
    // Watch first, read second: nothing written in between is missed.
    let events = if options.follow {
        let inotify = Inotify::init().map_err(io)?;
        let mask = WatchMask::MODIFY | WatchMask::CLOSE_WRITE | WatchMask::MOVE_SELF;
        inotify.watches().add(&path, mask).map_err(io)?;
        still_writing()
            .then(|| inotify.into_event_stream([0u8; 1024]))
            .transpose()
            .map_err(io)?
    } else {
        None
    };
    let mut file = tokio::fs::File::open(&path).await.map_err(io)?;
    let mut renderer = Renderer {
        timestamps: options.timestamps,
        since_ms: options.since_ms,
        ..Default::default()
    };
    let mut all = Vec::new();
    file.read_to_end(&mut all).await.map_err(io)?;
    let mut lines = renderer.feed(&all);
    if let Some(n) = options.tail_lines {
        let keep = (n.max(0) as usize).min(lines.len());
        lines.drain(..lines.len() - keep);
    }
    if !send(&tx, lines).await {
        return Ok(());
    }
    let Some(mut events) = events else {
        return Ok(());
    };
    let mut buf = vec![0u8; 64 * 1024];
    while let Some(event) = events.next().await {
        let event = event.map_err(io)?;
        // Whatever happened, read what is new first.
        loop {
            let n = file.read(&mut buf).await.map_err(io)?;
            if n == 0 {
                break;
            }
            if !send(&tx, renderer.feed(&buf[..n])).await {
                return Ok(());
            }
        }
        if event.mask.contains(inotify::EventMask::MOVE_SELF) {
            // Rotated: the run goes on in a new file at the same path.
            let rest = LogOptions {
                tail_lines: None,
                ..options
            };
            return Box::pin(stream(path.clone(), rest, still_writing, tx)).await;
        }
        if event.mask.contains(inotify::EventMask::CLOSE_WRITE) {
            return Ok(()); // the container has ended
        }
    }
    Ok(())
}

async fn send(tx: &mpsc::Sender<Vec<u8>>, lines: Vec<Vec<u8>>) -> bool {
    if lines.is_empty() {
        return true;
    }
    tx.send(lines.concat()).await.is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_become_lines_with_optional_times() {
        let text = b"2026-01-01T00:00:00.000000001Z stdout P hel\n2026-01-01T00:00:00.000000002Z stdout F lo\n2026-01-01T00:00:01Z stderr F oops\n2026-01-01T00:00:02Z stdout F unfin";
        let mut r = Renderer::default();
        assert_eq!(r.feed(text).concat(), b"hello\noops\n");
        assert_eq!(r.feed(b"ished\n").concat(), b"unfinished\n");
        let mut r = Renderer {
            timestamps: true,
            ..Default::default()
        };
        let first_two = b"2026-01-01T00:00:00.000000001Z stdout P hel\n2026-01-01T00:00:00.000000002Z stdout F lo\n";
        assert_eq!(
            r.feed(first_two).concat(),
            b"2026-01-01T00:00:00.000000001Z hello\n".to_vec()
        );
    }

    #[test]
    fn the_previous_run_is_the_second_newest_file() {
        let dir = tempfile::tempdir().unwrap();
        for n in [0, 1, 2, 10] {
            std::fs::write(dir.path().join(format!("{n}.log")), "").unwrap();
        }
        assert!(select_file(dir.path(), "c", false)
            .unwrap()
            .ends_with("10.log"));
        assert!(select_file(dir.path(), "c", true)
            .unwrap()
            .ends_with("2.log"));
        let empty = tempfile::tempdir().unwrap();
        assert!(select_file(empty.path(), "c", true).is_err());
    }
}
