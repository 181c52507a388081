//! How single values read in kubectl's output: ages and `<none>`.
//! Pure functions of their arguments (and of the clock, for ages).

/// `5s`, `3m`, `2h`, `4d`, as kubectl prints ages.
pub fn age(since_ms: i64) -> String {
    if since_ms <= 0 {
        return "<unknown>".into();
    }
    let s = ((kubelab_proto::now_ms() - since_ms) / 1000).max(0);
    match s {
        0..=119 => format!("{s}s"),
        120..=7199 => format!("{}m", s / 60),
        7200..=172_799 => format!("{}h", s / 3600),
        _ => format!("{}d", s / 86400),
    }
}

/// A value as kubectl shows it, `<none>` when there is none.
pub fn or_none(value: &str) -> String {
    if value.is_empty() {
        "<none>".into()
    } else {
        value.into()
    }
}
