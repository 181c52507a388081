//! Fuzz target: any text a client sends as a label selector (`list` and `watch` of pods and
//! nodes, `kubelab get -l`) parses or is refused with an error, never a panic; what
//! parses matches labels without one. The parser is the apiserver's own
//! (`kubelab_daemon::apiserver::selector`).
#![no_main]

use std::collections::HashMap;

use kubelab_daemon::apiserver::selector::LabelSelector;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(selector) = LabelSelector::parse(text) {
        let labels = HashMap::from([
            ("app".to_string(), "web".to_string()),
            ("env".to_string(), "prod".to_string()),
        ]);
        let _ = selector.matches(&labels);
        let _ = selector.matches(&HashMap::new());
        if text.trim().is_empty() {
            assert!(selector.is_empty(), "{text:?}");
        }
    }
});
