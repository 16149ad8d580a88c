//! Shared by the integration tests that drive the C traverse library.
#![allow(dead_code)] // each test file uses a different part

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use handle_registry::demo::ffi::TRAVERSE_MAX_DEPTH;
use handle_registry::demo::traverse::{TraverseError, Visitor};

/// A file in the temp dir, removed on drop.
pub struct TempFile {
    path: PathBuf,
}

impl TempFile {
    pub fn new(contents: impl AsRef<[u8]>) -> TempFile {
        let file = TempFile::empty();
        std::fs::write(&file.path, contents).unwrap();
        file
    }

    /// A sparse file of `len` zero bytes: cheap even at gigabytes.
    pub fn sparse(len: u64) -> TempFile {
        let file = TempFile::empty();
        std::fs::File::create(&file.path)
            .unwrap()
            .set_len(len)
            .unwrap();
        file
    }

    fn empty() -> TempFile {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let name = format!("handle-registry-test-{}-{n}", std::process::id());
        TempFile {
            path: std::env::temp_dir().join(name),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    Start(i32),
    End(i32, i32),
}

/// Records every event, in order.
#[derive(Debug, Default)]
pub struct Recorder(pub Vec<Event>);

impl Visitor for Recorder {
    fn start(&mut self, depth: i32) {
        self.0.push(Event::Start(depth));
    }

    fn end(&mut self, open: i32, close: i32) {
        self.0.push(Event::End(open, close));
    }
}

/// What the C scanner must report for `bytes`, per the header: written
/// independently of the C code, so that both can be checked against it.
pub fn expected(bytes: &[u8]) -> (Vec<Event>, Result<(), TraverseError>) {
    let mut events = Vec::new();
    let mut open = Vec::new();
    for (offset, &byte) in bytes.iter().enumerate() {
        let offset = offset as i32;
        match byte {
            0 => return (events, Err(TraverseError::NotText)),
            b'{' if open.len() == TRAVERSE_MAX_DEPTH as usize => {
                return (events, Err(TraverseError::TooDeep))
            }
            b'{' => {
                open.push(offset);
                events.push(Event::Start(open.len() as i32));
            }
            b'}' => match open.pop() {
                Some(at) => events.push(Event::End(at, offset)),
                None => return (events, Err(TraverseError::UnmatchedClose)),
            },
            _ => {}
        }
    }
    let result = if open.is_empty() {
        Ok(())
    } else {
        Err(TraverseError::Unclosed)
    };
    (events, result)
}

/// A file of `blocks` sibling blocks, each holding one nested block.
pub fn nested_pairs(blocks: usize) -> String {
    "{ {} }\n".repeat(blocks)
}

/// The bundled sample input of the demo.
pub fn sample(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("examples/data")
        .join(name)
}
