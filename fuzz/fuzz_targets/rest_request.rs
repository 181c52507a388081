//! Fuzz target: any REST request kubelab's apiserver could be sent — its path, query,
//! selectors, a body read as a Pod, a patch of each type, a DeleteOptions in JSON or
//! protobuf, an applied configuration — is read or refused, never a panic. The code is
//! the apiserver's own (`kubelab_daemon::apiserver::rest::decode_hostile`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = kubelab_daemon::apiserver::rest::decode_hostile(data);
});
