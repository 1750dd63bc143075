//! Generates the C header with cbindgen and gives the shared library its
//! soname.
//!
//! The header is written to `$OUT_DIR/dss.h` always, and copied to
//! `include/dss.h` (the committed copy) when it differs, except under CI
//! (`CI` set): there the committed copy must already be current, which the
//! test `header_is_current` checks.

use std::path::PathBuf;

fn main() {
    let crate_dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap());
    let out_dir = PathBuf::from(std::env::var("OUT_DIR").unwrap());
    let major = std::env::var("CARGO_PKG_VERSION_MAJOR").unwrap();

    println!("cargo::rerun-if-changed=src/ffi");
    println!("cargo::rerun-if-changed=cbindgen.toml");
    println!("cargo::rerun-if-env-changed=CI");
    println!("cargo::rustc-cdylib-link-arg=-Wl,-soname,libdss.so.{major}");

    let config = cbindgen::Config::from_file(crate_dir.join("cbindgen.toml"))
        .expect("cbindgen.toml is readable");
    let generated = out_dir.join("dss.h");
    cbindgen::Builder::new()
        .with_config(config)
        // Follows the `mod` declarations of src/ffi/mod.rs.
        .with_src(crate_dir.join("src/ffi/mod.rs"))
        .generate()
        .expect("cbindgen can parse src/ffi/")
        .write_to_file(&generated);

    if std::env::var_os("CI").is_none() {
        let committed = crate_dir.join("include/dss.h");
        let new = std::fs::read(&generated).unwrap();
        if std::fs::read(&committed).ok().as_deref() != Some(&new[..]) {
            std::fs::create_dir_all(crate_dir.join("include")).unwrap();
            std::fs::write(&committed, new).unwrap();
        }
    }
}
