//! The two end-to-end workloads, shared by the criterion benches
//! (`benches/end_to_end.rs`, `benches/expat.rs`) and the interleaved one
//! (`benches/interleaved.rs`), so that both ways of measuring run the very
//! same parse states and callbacks. Each workload offers its state type,
//! its handler pairs for the three ways of reaching the state (a raw
//! pointer, `restore`, `with` inside a scope), and one whole parse.
//! Included with `#[path = "common/parses.rs"] mod parses;`.

// Each bench uses one workload or the other.
#![allow(dead_code)]

use std::ffi::{c_int, c_void};

/// Blocks in the demo library's input, elements in expat's.
pub const ITEMS: usize = 200_000;

/// The handler pairs of one workload: for the raw pointer, for `restore`
/// and for `restore_with` (plain, or inside a lend), for `with` inside a
/// scope.
pub struct Ways<H> {
    pub direct: H,
    pub restore: H,
    pub restore_with: H,
    pub with: H,
}

/// The demo library's `traverse_file` on a file of `{x}` blocks: `start`
/// at `{`, `end` at `}`.
#[cfg(feature = "demo")]
pub mod demo {
    use super::*;
    use handle_registry::demo::ffi;
    use std::ffi::CString;
    use std::path::PathBuf;

    /// What the handlers keep: the shape of a small parse state.
    #[derive(Default)]
    pub struct Counts {
        depth: i32,
        pub max_depth: i32,
        pub blocks: u64,
        bytes: i64,
    }

    impl Counts {
        fn start(&mut self, depth: c_int) {
            self.depth = depth;
            self.max_depth = self.max_depth.max(depth);
        }
        fn end(&mut self, open: c_int, close: c_int) {
            self.blocks += 1;
            self.bytes += i64::from(close - open);
        }
    }

    unsafe extern "C" fn direct_start(user_data: *mut c_void, depth: c_int) {
        // SAFETY: the baseline passes a pointer to a live, unaliased `Counts`.
        unsafe { &mut *user_data.cast::<Counts>() }.start(depth)
    }
    unsafe extern "C" fn direct_end(user_data: *mut c_void, open: c_int, close: c_int) {
        // SAFETY: as above.
        unsafe { &mut *user_data.cast::<Counts>() }.end(open, close)
    }
    unsafe extern "C" fn restore_start(user_data: *mut c_void, depth: c_int) {
        if let Ok(mut c) = handle_registry::restore::<Counts>(user_data) {
            c.start(depth)
        }
    }
    unsafe extern "C" fn restore_end(user_data: *mut c_void, open: c_int, close: c_int) {
        if let Ok(mut c) = handle_registry::restore::<Counts>(user_data) {
            c.end(open, close)
        }
    }
    unsafe extern "C" fn restore_with_start(user_data: *mut c_void, depth: c_int) {
        let _ = handle_registry::restore_with(user_data, |c: &mut Counts| c.start(depth));
    }
    unsafe extern "C" fn restore_with_end(user_data: *mut c_void, open: c_int, close: c_int) {
        let _ = handle_registry::restore_with(user_data, |c: &mut Counts| c.end(open, close));
    }
    unsafe extern "C" fn with_start(user_data: *mut c_void, depth: c_int) {
        let _ = handle_registry::with(user_data, |c: &mut Counts| c.start(depth));
    }
    unsafe extern "C" fn with_end(user_data: *mut c_void, open: c_int, close: c_int) {
        let _ = handle_registry::with(user_data, |c: &mut Counts| c.end(open, close));
    }

    fn cbs(
        start: unsafe extern "C" fn(*mut c_void, c_int),
        end: unsafe extern "C" fn(*mut c_void, c_int, c_int),
    ) -> ffi::Callbacks {
        ffi::Callbacks {
            start: Some(start),
            end: Some(end),
        }
    }

    /// The callbacks of each way.
    pub fn ways() -> Ways<ffi::Callbacks> {
        Ways {
            direct: cbs(direct_start, direct_end),
            restore: cbs(restore_start, restore_end),
            restore_with: cbs(restore_with_start, restore_with_end),
            with: cbs(with_start, with_end),
        }
    }

    /// Reference floors for `lend` and `scope`: what the least a lend
    /// keyed by a thread-local record costs, with no registry at all.
    ///
    /// Every lent callback must find its record from `user_data` alone, so
    /// it reads a thread-local, compares, and reaches the value through a
    /// pointer. `one_compare` does only that. `with_word` adds what any
    /// sound lend needs on top: a busy flag set around the body (a second
    /// claim is refused while a guard lives) and a compare of a shared,
    /// line-aligned word (another thread's `unref` must be seen). The
    /// registry's lent path adds the registry and type checks to the
    /// second. If a floor itself misses a target, no form of those checks
    /// can meet it on that machine.
    pub mod floor {
        use super::{c_int, c_void, cbs, ffi, Counts};
        use std::cell::Cell;
        use std::ptr;
        use std::sync::atomic::{AtomicUsize, Ordering};

        /// The word a slot would hold while lent, on a line of its own.
        #[repr(align(64))]
        struct Line(AtomicUsize);

        /// `expect` while a body runs: a word `Line` never holds.
        const BUSY: usize = usize::MAX;
        const LENT: usize = 0x55;

        /// One active floor lend, in `lend`'s stack frame.
        struct Record {
            handle: usize,
            value: *mut Counts,
            word: *const AtomicUsize,
            expect: Cell<usize>,
        }

        thread_local! {
            static TOP: Cell<*const Record> = const { Cell::new(ptr::null()) };
        }

        /// The active record, if `user_data` is its handle.
        #[inline(always)]
        fn record(user_data: *mut c_void) -> Option<&'static Record> {
            let top = TOP.try_with(Cell::get).unwrap_or(ptr::null());
            // SAFETY: a non-null `TOP` is the record of a `lend` frame
            // still running on this thread: `lend` clears it before that
            // frame ends, also on unwind. The `'static` never leaves the
            // callback that asked.
            let record = unsafe { top.as_ref() }?;
            (record.handle == user_data as usize).then_some(record)
        }

        #[inline(always)]
        fn one_compare(user_data: *mut c_void, f: impl FnOnce(&mut Counts)) {
            if let Some(record) = record(user_data) {
                // SAFETY: `lend` holds the `&mut Counts` for the whole C
                // call, and the demo library makes one callback at a time
                // and never re-enters, so this is the only reference.
                f(unsafe { &mut *record.value })
            }
        }

        #[inline(always)]
        fn with_word(user_data: *mut c_void, f: impl FnOnce(&mut Counts)) {
            if let Some(record) = record(user_data) {
                // SAFETY: `word` is `lend`'s `Line`, alive while `TOP` is.
                let word = unsafe { &*record.word };
                if word.load(Ordering::Relaxed) == record.expect.get() {
                    record.expect.set(BUSY);
                    // SAFETY: as in `one_compare`; and the busy flag
                    // refuses any re-entrant claim while `f` runs.
                    f(unsafe { &mut *record.value });
                    record.expect.set(LENT);
                }
            }
        }

        unsafe extern "C" fn one_compare_start(user_data: *mut c_void, depth: c_int) {
            one_compare(user_data, |c| c.start(depth))
        }
        unsafe extern "C" fn one_compare_end(user_data: *mut c_void, open: c_int, close: c_int) {
            one_compare(user_data, |c| c.end(open, close))
        }
        unsafe extern "C" fn with_word_start(user_data: *mut c_void, depth: c_int) {
            with_word(user_data, |c| c.start(depth))
        }
        unsafe extern "C" fn with_word_end(user_data: *mut c_void, open: c_int, close: c_int) {
            with_word(user_data, |c| c.end(open, close))
        }

        /// The callbacks of the two floors: one compare, and with the word.
        pub fn ways() -> (ffi::Callbacks, ffi::Callbacks) {
            (
                cbs(one_compare_start, one_compare_end),
                cbs(with_word_start, with_word_end),
            )
        }

        /// Runs `f` with `counts` lent under the handle `user_data`.
        pub fn lend(user_data: *mut c_void, counts: &mut Counts, f: impl FnOnce()) {
            /// Clears `TOP` however `f` ends.
            struct Pop;
            impl Drop for Pop {
                fn drop(&mut self) {
                    TOP.with(|top| top.set(ptr::null()));
                }
            }
            let line = Box::new(Line(AtomicUsize::new(LENT)));
            let record = Record {
                handle: user_data as usize,
                value: counts,
                word: &line.0,
                expect: Cell::new(LENT),
            };
            TOP.with(|top| {
                assert!(top.get().is_null(), "floor lends do not nest");
                top.set(&record)
            });
            let _pop = Pop;
            f();
        }
    }

    /// The input file, in a directory of its own, removed on drop.
    pub struct Input {
        dir: PathBuf,
        name: CString,
    }

    impl Input {
        /// Writes a file of `ITEMS` blocks.
        pub fn new(tag: &str) -> Input {
            let dir =
                std::env::temp_dir().join(format!("handle-registry-{tag}-{}", std::process::id()));
            std::fs::create_dir_all(&dir).unwrap();
            let path = dir.join("blocks.txt");
            std::fs::write(&path, "{x}\n".repeat(ITEMS)).unwrap();
            let name = CString::new(path.to_str().unwrap()).unwrap();
            Input { dir, name }
        }

        /// One whole parse with these callbacks and `user_data`.
        pub fn parse(&self, cbs: ffi::Callbacks, user_data: *mut c_void) {
            // SAFETY: a valid C string; every callback accepts this user_data.
            let code = unsafe { ffi::traverse_file(self.name.as_ptr(), cbs, user_data) };
            assert_eq!(code, ffi::TRAVERSE_OK);
        }
    }

    impl Drop for Input {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// expat (the system's libexpat) with start- and end-element handlers.
#[cfg(feature = "bench-expat")]
pub mod expat {
    use super::*;
    use std::ffi::c_char;

    /// `XML_Parser`: an opaque pointer.
    type Parser = *mut c_void;
    pub type StartHandler =
        unsafe extern "C" fn(user_data: *mut c_void, name: *const c_char, atts: *mut *const c_char);
    pub type EndHandler = unsafe extern "C" fn(user_data: *mut c_void, name: *const c_char);
    /// `XML_STATUS_OK`.
    const STATUS_OK: c_int = 1;

    // The few declarations of `expat.h` the benches need.
    #[link(name = "expat")]
    extern "C" {
        fn XML_ParserCreate(encoding: *const c_char) -> Parser;
        fn XML_ParserFree(parser: Parser);
        fn XML_SetUserData(parser: Parser, user_data: *mut c_void);
        fn XML_SetElementHandler(parser: Parser, start: StartHandler, end: EndHandler);
        fn XML_Parse(parser: Parser, s: *const c_char, len: c_int, is_final: c_int) -> c_int;
    }

    /// What the handlers keep: the shape of a small parse state.
    #[derive(Default)]
    pub struct Depths {
        pub depth: u32,
        pub max_depth: u32,
        pub elements: u64,
    }

    impl Depths {
        fn start(&mut self) {
            self.depth += 1;
            self.max_depth = self.max_depth.max(self.depth);
            self.elements += 1;
        }
        fn end(&mut self) {
            self.depth -= 1;
        }
    }

    unsafe extern "C" fn direct_start(ud: *mut c_void, _: *const c_char, _: *mut *const c_char) {
        // SAFETY: the baseline passes a pointer to a live, unaliased `Depths`.
        unsafe { &mut *ud.cast::<Depths>() }.start()
    }
    unsafe extern "C" fn direct_end(ud: *mut c_void, _: *const c_char) {
        // SAFETY: as above.
        unsafe { &mut *ud.cast::<Depths>() }.end()
    }
    unsafe extern "C" fn restore_start(ud: *mut c_void, _: *const c_char, _: *mut *const c_char) {
        if let Ok(mut d) = handle_registry::restore::<Depths>(ud) {
            d.start()
        }
    }
    unsafe extern "C" fn restore_end(ud: *mut c_void, _: *const c_char) {
        if let Ok(mut d) = handle_registry::restore::<Depths>(ud) {
            d.end()
        }
    }
    unsafe extern "C" fn restore_with_start(
        ud: *mut c_void,
        _: *const c_char,
        _: *mut *const c_char,
    ) {
        let _ = handle_registry::restore_with(ud, |d: &mut Depths| d.start());
    }
    unsafe extern "C" fn restore_with_end(ud: *mut c_void, _: *const c_char) {
        let _ = handle_registry::restore_with(ud, |d: &mut Depths| d.end());
    }
    unsafe extern "C" fn with_start(ud: *mut c_void, _: *const c_char, _: *mut *const c_char) {
        let _ = handle_registry::with(ud, |d: &mut Depths| d.start());
    }
    unsafe extern "C" fn with_end(ud: *mut c_void, _: *const c_char) {
        let _ = handle_registry::with(ud, |d: &mut Depths| d.end());
    }

    /// The handlers of each way.
    pub fn ways() -> Ways<(StartHandler, EndHandler)> {
        Ways {
            direct: (direct_start, direct_end),
            restore: (restore_start, restore_end),
            restore_with: (restore_with_start, restore_with_end),
            with: (with_start, with_end),
        }
    }

    /// A document of `ITEMS` `<e/>` elements in a root: the smallest
    /// element there is, so that expat's own work per element is the least
    /// and the handlers' share the largest (the harshest ratio).
    pub fn document() -> Vec<u8> {
        let mut doc = String::from("<doc>");
        for _ in 0..ITEMS {
            doc.push_str("<e/>");
        }
        doc.push_str("</doc>");
        doc.into_bytes()
    }

    /// Parses `doc` in one call with these handlers and `user_data`.
    pub fn parse(doc: &[u8], (start, end): (StartHandler, EndHandler), ud: *mut c_void) {
        // SAFETY: a parser is created, used with a buffer of the given length
        // and handlers that accept this `user_data`, and freed.
        unsafe {
            let parser = XML_ParserCreate(std::ptr::null());
            assert!(!parser.is_null());
            XML_SetUserData(parser, ud);
            XML_SetElementHandler(parser, start, end);
            let len = c_int::try_from(doc.len()).unwrap();
            let status = XML_Parse(parser, doc.as_ptr().cast(), len, 1);
            XML_ParserFree(parser);
            assert_eq!(status, STATUS_OK);
        }
    }
}
