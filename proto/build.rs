//! Compiles `liandong/v1/*.proto` with protox (pure Rust, no system `protoc`)
//! and generates the prost messages and tonic services from the result.

use std::path::PathBuf;

const PROTOS: &[&str] = &[
    "liandong/v1/options.proto",
    "liandong/v1/exchange.proto",
    "liandong/v1/operations.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    for proto in PROTOS {
        println!("cargo:rerun-if-changed={proto}");
    }
    let mut compiler = protox::Compiler::new(["."])?;
    compiler
        .include_imports(true)
        .include_source_info(true)
        .open_files(PROTOS)?;
    // Encoded by protox itself: custom options (liandong.v1.sensitivity)
    // survive, which a round trip through prost-types would drop.
    let descriptor_path = PathBuf::from(std::env::var("OUT_DIR")?).join("liandong_descriptor.bin");
    std::fs::write(&descriptor_path, compiler.encode_file_descriptor_set())?;

    tonic_prost_build::configure()
        .skip_protoc_run()
        .codec_path("crate::codec::StrictCodec")
        .file_descriptor_set_path(&descriptor_path)
        .compile_protos(PROTOS, &["."])?;
    Ok(())
}
