//! Generates the gRPC code from `proto/` with `protox` (a pure-Rust protobuf compiler, so no
//! `protoc` is needed on the machine) and `tonic-prost-build`, and writes the compiled file
//! descriptor set to `OUT_DIR/bank_descriptor.bin` for gRPC server reflection.

use prost::Message;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = [
        "proto/banks.proto",
        "proto/bank/peer/v1/peer.proto",
        "proto/bank/v1/bank.proto",
        "proto/bank/admin/v1/members.proto",
        "proto/bank/admin/v1/backup.proto",
    ];
    for file in files {
        println!("cargo:rerun-if-changed={file}");
    }
    let descriptors = protox::compile(files, ["proto"])?;
    let out_dir = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(
        out_dir.join("bank_descriptor.bin"),
        descriptors.encode_to_vec(),
    )?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(descriptors)?;
    Ok(())
}
