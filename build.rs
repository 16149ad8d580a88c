//! Builds the C library in `native/` (every `*.c` there) with `cc`.
//!
//! The C code is this crate's test bed and demo: a stand-in for any C
//! library that reports events through callbacks plus `user_data`.

use std::path::Path;

fn main() {
    let native = Path::new("native");
    println!("cargo:rerun-if-changed=native");
    if std::env::var_os("CARGO_CFG_MIRI").is_some() {
        // Miri interprets Rust only: FFI tests are compiled out under
        // `cfg(miri)`, and nothing is linked, so skip the C compiler (which
        // may not even target Miri's target, e.g. i686 without multilib).
        return;
    }
    let mut sources: Vec<_> = std::fs::read_dir(native)
        .expect("native/ is part of the crate")
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|path| path.extension().is_some_and(|ext| ext == "c"))
        .collect();
    sources.sort();
    if sources.is_empty() {
        return;
    }
    let mut build = cc::Build::new();
    build
        .files(&sources)
        .include(native)
        .std("c99")
        .warnings(true)
        .extra_warnings(true)
        .warnings_into_errors(true)
        .define("_POSIX_C_SOURCE", "200809L")
        .define("_XOPEN_SOURCE", "700");
    build.compile("handle_registry_native");
    if std::env::var("CARGO_CFG_TARGET_FAMILY").as_deref() == Ok("unix") {
        println!("cargo:rustc-link-lib=pthread");
    }
}
