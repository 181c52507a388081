//! Fuzz target: any text given to `kubelab image build` as a Containerfile parses to
//! instructions or to an error naming a line, and any instruction's words expand (or
//! fail) without a panic. The module is the builder's own file, compiled in here.
#![no_main]

#[path = "../../daemon/src/build/containerfile.rs"]
#[allow(dead_code)]
mod containerfile;

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
