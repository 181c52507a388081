//! The kubelet's CRI log format: one record per line, `TIME STREAM TAG TEXT`.
//!
//! `2026-11-26T10:00:00.123456789Z stdout F hello` — the time in RFC 3339 with
//! nanoseconds, the stream (`stdout` or `stderr`), the tag (`F` for a full line, `P` for
//! part of a line too long to buffer), then the text. The shim writes it (`Writer`, which
//! also rotates the file by size); the agent's logs service reads it back (`parse`).
//! Owns the format only: no knowledge of where files live.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

/// Longest piece of a line kept waiting for its end; longer ones go out as `P` records.
const MAX_PARTIAL: usize = 16 * 1024;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

impl Stream {
    fn as_str(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }
}

/// Writes a container's output as CRI records, rotating `path` to `path.1`, `path.2`, …
/// once it would grow past `max_bytes` (keeping `max_files` files in all).
pub struct Writer {
    path: PathBuf,
    file: File,
    written: u64,
    max_bytes: u64,
    max_files: u32,
    /// The unfinished line of each stream.
    partial: [Vec<u8>; 2],
}

impl Writer {
    pub fn open(path: &Path, max_bytes: u64, max_files: u32) -> std::io::Result<Writer> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)?;
        let written = file.metadata()?.len();
        Ok(Writer {
            path: path.to_path_buf(),
            file,
            written,
            max_bytes: max_bytes.max(1024),
            max_files: max_files.max(1),
            partial: [Vec::new(), Vec::new()],
        })
    }

    /// Output as read from the container: complete lines become `F` records at once.
    pub fn write(&mut self, stream: Stream, mut data: &[u8]) -> std::io::Result<()> {
        let i = stream as usize;
        while let Some(end) = data.iter().position(|b| *b == b'\n') {
            let mut line = std::mem::take(&mut self.partial[i]);
            line.extend_from_slice(&data[..end]);
            self.record(stream, 'F', &line)?;
            data = &data[end + 1..];
        }
        self.partial[i].extend_from_slice(data);
        if self.partial[i].len() >= MAX_PARTIAL {
            let part = std::mem::take(&mut self.partial[i]);
            self.record(stream, 'P', &part)?;
        }
        Ok(())
    }

    /// The container is gone: what is left of a line is written as a full one.
    pub fn finish(&mut self) -> std::io::Result<()> {
        for stream in [Stream::Stdout, Stream::Stderr] {
            let rest = std::mem::take(&mut self.partial[stream as usize]);
            if !rest.is_empty() {
                self.record(stream, 'F', &rest)?;
            }
        }
        self.file.flush()
    }

    fn record(&mut self, stream: Stream, tag: char, text: &[u8]) -> std::io::Result<()> {
        let time = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Nanos, true);
        let mut line = Vec::with_capacity(text.len() + 48);
        line.extend_from_slice(format!("{time} {} {tag} ", stream.as_str()).as_bytes());
        line.extend_from_slice(text);
        line.push(b'\n');
        if self.written > 0 && self.written + line.len() as u64 > self.max_bytes {
            self.rotate()?;
        }
        self.file.write_all(&line)?;
        self.written += line.len() as u64;
        Ok(())
    }

    /// `N.log` → `N.log.1` → `N.log.2` …; the oldest beyond `max_files` is dropped.
    fn rotate(&mut self) -> std::io::Result<()> {
        let numbered = |n: u32| PathBuf::from(format!("{}.{n}", self.path.display()));
        if self.max_files > 1 {
            for n in (1..self.max_files - 1).rev() {
                let _ = std::fs::rename(numbered(n), numbered(n + 1));
            }
            std::fs::rename(&self.path, numbered(1))?;
        } else {
            std::fs::remove_file(&self.path)?;
        }
        self.file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)?;
        self.written = 0;
        Ok(())
    }
}

/// One record read back from a log file.
#[derive(Debug, PartialEq, Eq)]
pub struct Record<'a> {
    pub time: &'a str,
    pub stream: &'a str,
    /// False for a `P` record: the line goes on in the next record.
    pub full: bool,
    pub text: &'a [u8],
}

/// Parses one line of a log file (without its `\n`); `None` for a malformed line.
pub fn parse(line: &[u8]) -> Option<Record<'_>> {
    let mut parts = line.splitn(4, |b| *b == b' ');
    let time = std::str::from_utf8(parts.next()?).ok()?;
    let stream = std::str::from_utf8(parts.next()?).ok()?;
    let tag = parts.next()?;
    let text = parts.next().unwrap_or_default();
    Some(Record {
        time,
        stream,
        full: tag != b"P",
        text,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_become_records_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("0.log");
        let mut w = Writer::open(&path, 1 << 20, 2).unwrap();
        w.write(Stream::Stdout, b"hello\nwor").unwrap();
        w.write(Stream::Stderr, b"oops\n").unwrap();
        w.write(Stream::Stdout, b"ld\nno newline").unwrap();
        w.finish().unwrap();
        let text = std::fs::read(&path).unwrap();
        let records: Vec<_> = text
            .split(|b| *b == b'\n')
            .filter(|l| !l.is_empty())
            .map(|l| parse(l).unwrap())
            .map(|r| {
                (
                    r.stream.to_string(),
                    r.full,
                    String::from_utf8_lossy(r.text).into_owned(),
                )
            })
            .collect();
        assert_eq!(
            records,
            [
                ("stdout".into(), true, "hello".into()),
                ("stderr".into(), true, "oops".into()),
                ("stdout".into(), true, "world".into()),
                ("stdout".into(), true, "no newline".into()),
            ]
        );
        let first = parse(text.split(|b| *b == b'\n').next().unwrap()).unwrap();
        assert!(
            chrono::DateTime::parse_from_rfc3339(first.time).is_ok(),
            "{}",
            first.time
        );
    }

    #[test]
    fn files_rotate_by_size() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("0.log");
        let mut w = Writer::open(&path, 1024, 3).unwrap();
        for i in 0..100 {
            w.write(Stream::Stdout, format!("line {i}\n").as_bytes())
                .unwrap();
        }
        w.finish().unwrap();
        assert!(std::fs::metadata(&path).unwrap().len() <= 1024);
        assert!(dir.path().join("0.log.1").exists());
        assert!(dir.path().join("0.log.2").exists());
        assert!(!dir.path().join("0.log.3").exists());
        let last = std::fs::read_to_string(&path).unwrap();
        assert!(last.trim_end().ends_with("line 99"), "{last}");
    }
}
