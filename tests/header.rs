//! The committed include/dss.h is what cbindgen generates from src/ffi.rs.

#[test]
fn header_is_current() {
    let generated = include_str!(concat!(env!("OUT_DIR"), "/dss.h"));
    let committed = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/include/dss.h"))
        .expect("include/dss.h exists");
    assert!(
        generated == committed,
        "include/dss.h is out of date: build outside CI (cargo build) to regenerate it, and commit it"
    );
}
