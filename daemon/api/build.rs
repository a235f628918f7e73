//! Compiles the .proto files with protox (pure Rust; no protoc needed).
fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = ["kserve/grpc_service.proto", "kiln/v1/daemon.proto"];
    let fds = protox::compile(files, ["proto"])?;
    tonic_prost_build::configure().compile_fds(fds)?;
    for f in files {
        println!("cargo:rerun-if-changed=proto/{f}");
    }
    Ok(())
}
