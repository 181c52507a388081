//! Fuzz target: any text given to `kubelab apply` parses to pods or to an error, never a
//! panic. The module is the CLI's own file, compiled in here (the CLI is a binary crate).
#![no_main]

#[path = "../../cli/src/manifest.rs"]
#[allow(dead_code)]
mod manifest;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = manifest::parse_pods(text);
    }
});
