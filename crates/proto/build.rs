//! Compiles `proto/culprit/v1/*.proto` with protox (pure Rust, no system `protoc`) and
//! generates prost messages and tonic services from the resulting descriptor set.

use std::error::Error;
use std::path::{Path, PathBuf};

fn main() -> Result<(), Box<dyn Error>> {
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?).join("../../proto");
    let dir = root.join("culprit/v1");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "proto"))
        .collect();
    files.sort();
    println!("cargo:rerun-if-changed={}", dir.display());
    for f in &files {
        println!("cargo:rerun-if-changed={}", f.display());
    }

    let mut compiler = protox::Compiler::new([&root])?;
    // Imports (google/protobuf/*) are included so reflection clients can resolve every type.
    compiler.include_imports(true).include_source_info(true);
    let relative: Vec<&Path> = files
        .iter()
        .map(|f| f.strip_prefix(&root))
        .collect::<Result<_, _>>()?;
    compiler.open_files(relative)?;

    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(
        out.join("culprit_descriptor.bin"),
        compiler.encode_file_descriptor_set(),
    )?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(compiler.file_descriptor_set())?;
    Ok(())
}
