//! Fuzz target: any text given as a resource quantity (requests, limits, emptyDir sizes)
//! parses or is refused, never a panic or an overflow; what parses agrees with itself in
//! both units (whole units are the thousandths rounded up, as Kubernetes rounds).
#![no_main]

use kubelab_proto::quantity::{parse_millis, parse_units};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let (Ok(millis), Ok(units)) = (parse_millis(text), parse_units(text)) {
        let magnitude = millis.unsigned_abs().div_ceil(1000);
        assert_eq!(units.unsigned_abs(), magnitude, "{text:?}");
        assert_eq!(millis.signum() * units.signum() >= 0, true, "{text:?}");
    }
    // A value that fits in thousandths fits in whole units too.
    if parse_millis(text).is_ok() {
        assert!(parse_units(text).is_ok(), "{text:?}");
    }
});
