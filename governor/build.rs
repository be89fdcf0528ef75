//! Compiles `proto/huntgate/v1/governor.proto` with protox (no system `protoc`) into the
//! tonic server and client, and writes the descriptor set that server reflection serves.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    // Without the `runtime` feature (the fuzz build) there is no gRPC API to generate.
    if std::env::var_os("CARGO_FEATURE_RUNTIME").is_none() {
        return Ok(());
    }
    let descriptors = protox::compile(["huntgate/v1/governor.proto"], ["proto"])?;
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(
        out.join("governor_descriptor.bin"),
        prost::Message::encode_to_vec(&descriptors),
    )?;
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        // huntgatectl's --json prints the messages as they are.
        .type_attribute(".huntgate.v1", "#[derive(serde::Serialize)]")
        .compile_fds(descriptors)?;
    Ok(())
}
