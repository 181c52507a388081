//! Compiles `kubelab/v1/api.proto` with protox (a protobuf compiler written in Rust),
//! so building kubelab needs no system `protoc`.
fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto = "kubelab/v1/api.proto";
    println!("cargo:rerun-if-changed={proto}");
    let descriptors = protox::compile([proto], ["."])?;
    tonic_prost_build::configure().compile_fds(descriptors)?;
    Ok(())
}
