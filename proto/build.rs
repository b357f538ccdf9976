//! Compiles `liandong/v1/*.proto` with protox (pure Rust, no system `protoc`)
//! and generates the prost messages and tonic services from the result.

use std::path::PathBuf;

use prost::Message;

const PROTOS: &[&str] = &["liandong/v1/options.proto", "liandong/v1/exchange.proto"];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    for proto in PROTOS {
        println!("cargo:rerun-if-changed={proto}");
    }
    let descriptors = protox::compile(PROTOS, ["."])?;
    let descriptor_path = PathBuf::from(std::env::var("OUT_DIR")?).join("liandong_descriptor.bin");
    std::fs::write(&descriptor_path, descriptors.encode_to_vec())?;

    tonic_prost_build::configure()
        .skip_protoc_run()
        .codec_path("crate::codec::StrictCodec")
        .file_descriptor_set_path(&descriptor_path)
        .compile_protos(PROTOS, &["."])?;
    Ok(())
}
