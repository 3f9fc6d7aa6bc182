//! Compiles `proto/` with protox (a pure-Rust protobuf compiler), so building Ferrid
//! needs no system `protoc`.
fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../proto");
    let files = [
        "ferrid/types/v1/types.proto",
        "ferrid/node/v1/node.proto",
        "ferrid/admin/v1/admin.proto",
        "ferrid/exchange/v1/exchange.proto",
        "ferrid/revocation/v1/revocation.proto",
        "spiffe/workload/workload.proto",
    ];
    for f in &files {
        println!("cargo:rerun-if-changed={}", root.join(f).display());
    }
    let fds = protox::compile(files, [&root])?;
    tonic_prost_build::configure().build_client(true).build_server(true).compile_fds(fds)?;
    Ok(())
}
