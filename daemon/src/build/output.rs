//! What the build prints as it goes: one line a step and a line of what it did, with
//! digests and sizes as `docker build` shows them.

use std::io::Write;

/// Prints a line of the build's progress at once (the output may be a pipe).
pub(super) fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

/// An instruction as an error names it: the first 60 characters (the line says the rest).
pub(super) fn abbreviated(text: &str) -> String {
    match text.char_indices().nth(60) {
        Some((i, _)) => format!("{}…", &text[..i]),
        None => text.to_string(),
    }
}

/// The first 12 hex digits, as `docker images` shows them.
pub(super) fn short(digest: &str) -> &str {
    let hex = digest.split_once(':').map(|(_, h)| h).unwrap_or(digest);
    &hex[..hex.len().min(12)]
}

/// A size as `docker` prints one: `4.2 MB`, `812.0 kB`, `96 B`.
pub(super) fn human_bytes(n: u64) -> String {
    match n {
        n if n >= 1 << 20 => format!("{:.1} MB", n as f64 / 1e6),
        n if n >= 1 << 10 => format!("{:.1} kB", n as f64 / 1e3),
        n => format!("{n} B"),
    }
}

/// `1 layer`, `5 layers`: a count with its noun, singular when it is one.
pub fn count(n: usize, noun: &str) -> String {
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{n} {noun}s")
    }
}
