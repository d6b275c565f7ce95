//! Compiles `proto/` into the server's gRPC code, plus a file descriptor set that the
//! reflection service serves (so `grpcurl list` works without proto files).
use std::{env, path::PathBuf};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // SAFETY-free: build scripts are single-threaded; the vendored protoc means a fresh
    // machine needs no system package.
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    std::env::set_var("PROTOC", protoc);
    let out = PathBuf::from(env::var("OUT_DIR")?);
    tonic_prost_build::configure()
        .build_client(false)
        .file_descriptor_set_path(out.join("auth_sync_descriptor.bin"))
        .compile_protos(&["proto/capydb/auth_sync/v1/auth_sync.proto"], &["proto"])?;
    println!("cargo:rerun-if-changed=proto");
    Ok(())
}
