//! Compiles `proto/wardengate.proto` with protox (a pure-Rust protobuf compiler: no `protoc`
//! needed on the build machine) and generates the tonic client and server.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/wardengate.proto");
    let fds = protox::compile(["proto/wardengate.proto"], ["proto"])?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(fds)?;
    Ok(())
}
