//! Generates the protobuf types from `proto/` with a pure-Rust compiler
//! (protox), so a fresh machine needs no `protoc`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/tickcast.proto");
    let descriptors = protox::compile(["proto/tickcast.proto"], ["proto"])?;
    prost_build::Config::new().compile_fds(descriptors)?;
    Ok(())
}
