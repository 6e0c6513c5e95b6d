fn main() {
    println!("cargo:rerun-if-changed=pgpilot.proto");
    if std::env::var_os("PROTOC").is_none() && which("protoc").is_none() {
        panic!(
            "protoc was not found: install it (Debian: `apt-get install protobuf-compiler`) \
             or point PROTOC at a protoc binary"
        );
    }
    tonic_prost_build::configure()
        .compile_protos(&["pgpilot.proto"], &["."])
        .expect("compiling pgpilot.proto");
}

fn which(program: &str) -> Option<std::path::PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(program))
            .find(|candidate| candidate.is_file())
    })
}
