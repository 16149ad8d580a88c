//! Asks the compiler whether `TypeId::of` works in a constant (see
//! `const_type_id` below), and, with the `demo` feature only, builds the C
//! library in `native/` (every `*.c` there) with `cc`. Without `demo` the
//! crate is pure Rust and needs no C compiler.
//!
//! The C code is this crate's test bed and demo: a stand-in for any C
//! library that reports events through callbacks plus `user_data`.
//!
//! The C compiler's warnings are errors only when `HANDLE_REGISTRY_WERROR`
//! is set (CI sets it), so that a newer compiler on someone else's machine
//! cannot break their build.

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    if const_type_id() {
        println!("cargo:rustc-cfg=handle_registry_const_type_id");
    }
    #[cfg(feature = "demo")]
    demo::build();
}

/// Whether this compiler computes `TypeId::of` in a constant (Rust 1.91
/// and later), so that each type's vtable holds its id as data: asked of
/// the compiler itself, with a one-line probe, rather than inferred from
/// its version. Any failure answers no, which is always correct (the id is
/// then reached through a function pointer).
fn const_type_id() -> bool {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let (Some(rustc), Some(out_dir)) = (std::env::var_os("RUSTC"), std::env::var_os("OUT_DIR"))
    else {
        return false;
    };
    // The compiler cargo will run: through its wrapper, if it has one.
    let mut probe = match std::env::var_os("RUSTC_WRAPPER").filter(|w| !w.is_empty()) {
        Some(wrapper) => {
            let mut probe = Command::new(wrapper);
            probe.arg(rustc);
            probe
        }
        None => Command::new(rustc),
    };
    probe.args([
        "--crate-type=lib",
        "--emit=metadata",
        "--crate-name=const_type_id_probe",
    ]);
    probe.arg("--out-dir").arg(out_dir);
    if let Some(target) = std::env::var_os("TARGET") {
        probe.arg("--target").arg(target);
    }
    probe
        .arg("-")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let Ok(mut child) = probe.spawn() else {
        return false;
    };
    let source = b"pub const ID: std::any::TypeId = std::any::TypeId::of::<u8>();";
    let written = child
        .stdin
        .take()
        .is_some_and(|mut stdin| stdin.write_all(source).is_ok());
    child.wait().is_ok_and(|status| status.success()) && written
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
