//! Fuzz target: any text given as a duration (the daemons' flags, `kubelab wait` and
//! `drain --timeout`) parses or is refused, never a panic; what parses is within Go's
//! limit and reads back the same when written out in nanoseconds or in seconds.
#![no_main]

use kubelab_proto::duration;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(d) = duration::parse(text) {
        assert!(d.as_nanos() <= i64::MAX as u128, "{text:?}");
        assert_eq!(
            duration::parse(&format!("{}ns", d.as_nanos())),
            Ok(d),
            "{text:?}"
        );
        let seconds = format!("{}.{:09}s", d.as_secs(), d.subsec_nanos());
        assert_eq!(duration::parse(&seconds), Ok(d), "{text:?}");
    }
});
