//! Fuzz target: any text given to `kubelab image build` as a Containerfile parses to
//! instructions or to an error naming a line, and any instruction's words expand (or
//! fail) without a panic. The parser is the builder's own (`kubelab_daemon::build`).
#![no_main]

use kubelab_daemon::build::containerfile;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let vars = std::collections::BTreeMap::from([("A".to_string(), "x y".to_string())]);
    match containerfile::parse(text) {
        Ok(instructions) => {
            for i in instructions {
                let _ = containerfile::words(&i.text, &vars);
                let _ = containerfile::pairs(&i.text, &vars, true);
            }
        }
        Err(e) => assert!(e.line >= 1),
    }
});
