//! Generates the kubelet APIs' Rust code into OUT_DIR (never into src/).
//! Needs `protoc` (Debian package protobuf-compiler; .ci/setup installs it).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = ["deviceplugin/v1beta1/api.proto", "podresources/v1/api.proto"];
    for proto in protos {
        println!("cargo:rerun-if-changed={proto}");
    }
    tonic_prost_build::configure().build_server(true).build_client(true).compile_protos(&protos, &["."])?;
    Ok(())
}
