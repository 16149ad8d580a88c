//! With the `demo` feature only: builds the C library in `native/` (every
//! `*.c` there) with `cc`. Without it, the crate is pure Rust and this
//! script does nothing.
//!
//! The C code is this crate's test bed and demo: a stand-in for any C
//! library that reports events through callbacks plus `user_data`.
//!
//! The C compiler's warnings are errors only when `HANDLE_REGISTRY_WERROR`
//! is set (CI sets it), so that a newer compiler on someone else's machine
//! cannot break their build.

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    #[cfg(feature = "demo")]
    demo::build();
}

#[cfg(feature = "demo")]
mod demo {
    use std::path::Path;

    pub fn build() {
        let native = Path::new("native");
        println!("cargo:rerun-if-changed=native");
        println!("cargo:rerun-if-env-changed=HANDLE_REGISTRY_WERROR");
        if std::env::var_os("CARGO_CFG_MIRI").is_some() {
            // Miri interprets Rust only: FFI tests are compiled out under
            // `cfg(miri)`, and nothing is linked, so skip the C compiler
            // (which may not even target Miri's target, e.g. i686 without
            // multilib).
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
        let werror = std::env::var_os("HANDLE_REGISTRY_WERROR").is_some_and(|v| v == "1");
        let mut build = cc::Build::new();
        build
            .files(&sources)
            .include(native)
            .std("c99")
            .warnings(true)
            .extra_warnings(true)
            .warnings_into_errors(werror)
            .define("_POSIX_C_SOURCE", "200809L")
            .define("_XOPEN_SOURCE", "700");
        build.compile("handle_registry_native");
        if std::env::var("CARGO_CFG_TARGET_FAMILY").as_deref() == Ok("unix") {
            println!("cargo:rustc-link-lib=pthread");
        }
    }
}
