//! Fuzz target: any text read as an image reference (by the apiserver, the agent, the
//! CLI and the builder) parses or is refused, never panics; what parses, written out
//! again, parses to the same reference.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(r) = kubelab_proto::image_ref::parse(text) {
        let whole = r.to_string();
        assert_eq!(kubelab_proto::image_ref::parse(&whole).as_ref(), Ok(&r), "{whole}");
    }
});
