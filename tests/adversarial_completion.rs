//! Adversarial review of the `completion` module (feature `async`): futures
//! and streams completed by C callbacks through a handle. Public API only.
//!
//! Each test names, in its doc comment, the promise it attacks (quoting or
//! paraphrasing `src/completion/*.rs` and README's "C calls that complete
//! later"). "C" is an `extern "C" fn` called from Rust, or a plain thread
//! standing for a C worker thread. Loops are bounded and scaled down under
//! Miri; tests that could deadlock run under a watchdog.

#![cfg(feature = "async")]

use std::cell::RefCell;
use std::ffi::c_void;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Barrier, Mutex};
use std::task::{Context, Poll, RawWaker, RawWakerVTable, Waker};
use std::thread;
use std::time::{Duration, Instant};

use futures_core::future::FusedFuture;
use futures_core::stream::FusedStream;
use futures_core::Stream;
use handle_registry::completion::{
    complete, complete_from_c, oneshot, push, push_from_c, stream, CallbackStream, Canceled,
    Completion, SendError,
};
use handle_registry::{c_unref, Error, Registry};

mod common;
mod executor;
use common::{in_child, rounds, watchdog, PanicOnDrop};
use executor::{block_on, next, Sendable};

// ---- Helpers ----------------------------------------------------------------

/// Counts its drops.
#[derive(Debug)]
struct Counted(Arc<AtomicUsize>, usize);
impl Drop for Counted {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

fn poll_once<F: Future + Unpin>(f: &mut F, waker: &Waker) -> Poll<F::Output> {
    Pin::new(f).poll(&mut Context::from_waker(waker))
}

fn poll_next_once<S: Stream + Unpin>(s: &mut S, waker: &Waker) -> Poll<Option<S::Item>> {
    Pin::new(s).poll_next(&mut Context::from_waker(waker))
}

/// Is the handle still a live value of the global registry?
fn live(user_data: *mut c_void) -> bool {
    Registry::global().ref_count(user_data).is_ok()
}

/// A waker whose `wake`, `wake_by_ref` and `drop` run hooks: to panic, to
/// re-enter, to count.
struct Hooks {
    woken: AtomicUsize,
    dropped: AtomicUsize,
    on_wake: Box<dyn Fn() + Send + Sync>,
    on_drop: Box<dyn Fn() + Send + Sync>,
}

fn hooked(
    on_wake: impl Fn() + Send + Sync + 'static,
    on_drop: impl Fn() + Send + Sync + 'static,
) -> (Waker, Arc<Hooks>) {
    let hooks = Arc::new(Hooks {
        woken: AtomicUsize::new(0),
        dropped: AtomicUsize::new(0),
        on_wake: Box::new(on_wake),
        on_drop: Box::new(on_drop),
    });
    let data = Arc::into_raw(hooks.clone()) as *const ();
    // SAFETY: the vtable below follows RawWaker's contract for an Arc.
    (
        unsafe { Waker::from_raw(RawWaker::new(data, &VTABLE)) },
        hooks,
    )
}

static VTABLE: RawWakerVTable = RawWakerVTable::new(h_clone, h_wake, h_wake_by_ref, h_drop);

unsafe fn h_clone(data: *const ()) -> RawWaker {
    // SAFETY: `data` is an `Arc<Hooks>` pointer we own a count of.
    unsafe { Arc::increment_strong_count(data as *const Hooks) };
    RawWaker::new(data, &VTABLE)
}
unsafe fn h_wake(data: *const ()) {
    // SAFETY: as above; consumes this waker's count.
    let hooks = unsafe { Arc::from_raw(data as *const Hooks) };
    hooks.woken.fetch_add(1, Ordering::SeqCst);
    (hooks.on_wake)();
}
unsafe fn h_wake_by_ref(data: *const ()) {
    // SAFETY: as above, borrowed.
    let hooks = unsafe { &*(data as *const Hooks) };
    hooks.woken.fetch_add(1, Ordering::SeqCst);
    (hooks.on_wake)();
}
unsafe fn h_drop(data: *const ()) {
    // SAFETY: as above; consumes this waker's count (also if the hook panics).
    let hooks = unsafe { Arc::from_raw(data as *const Hooks) };
    hooks.dropped.fetch_add(1, Ordering::SeqCst);
    (hooks.on_drop)();
}

fn nothing() {}

// ---- One-shot: who completes, how often, with what handle -------------------

/// Promise (`complete`, oneshot module "Exactly once"): of any number of
/// racing completions one wins, every other gets `Stale` with its value
/// back; no value is lost or duplicated (each dropped exactly once).
#[test]
fn many_racing_completions_one_winner_every_value_dropped_once() {
    for _ in 0..rounds(100, 3) {
        let threads = 6;
        let drops = Arc::new(AtomicUsize::new(0));
        let (user_data, done) = oneshot::<Counted>();
        let h = Sendable::new(user_data);
        let barrier = Arc::new(Barrier::new(threads));
        let racers: Vec<_> = (0..threads)
            .map(|i| {
                let (barrier, drops) = (barrier.clone(), drops.clone());
                thread::spawn(move || {
                    barrier.wait();
                    match complete(h.get(), Counted(drops, i)) {
                        Ok(()) => Some(i),
                        Err((e, v)) => {
                            assert_eq!(e, SendError::Handle(Error::Stale));
                            assert_eq!(v.1, i, "its own value handed back");
                            None
                        }
                    }
                })
            })
            .collect();
        let winners: Vec<usize> = racers
            .into_iter()
            .filter_map(|r| r.join().unwrap())
            .collect();
        assert_eq!(winners.len(), 1);
        assert_eq!(drops.load(Ordering::SeqCst), threads - 1);
        let got = block_on(done).unwrap();
        assert_eq!(got.1, winners[0]);
        drop(got);
        assert_eq!(drops.load(Ordering::SeqCst), threads);
        assert!(!live(user_data));
    }
}

/// Promise (`SendError::Handle` docs; `complete` errors; "never causes
/// UB"): garbage, NULL, stale, other-registry, other-type and stream
/// handles are refused with a clear error, the value handed back, and the
/// real request is not consumed.
#[test]
fn garbage_stale_and_foreign_handles_are_refused_and_request_survives() {
    let (user_data, done) = oneshot::<u32>();
    let (stream_ud, items) = stream::<u32>(4);
    let plain = handle_registry::save(7u32);
    let other = Registry::new();
    let foreign = other.save(0u32);
    let (stale, dropped) = oneshot::<u32>();
    drop(dropped);

    let raw = user_data.addr();
    // One generation up: bit 32 of a 64-bit handle, bit 20 of a 32-bit one
    // (src/handle.rs).
    let generation_one: usize = 1 << (usize::BITS - if usize::BITS == 64 { 32 } else { 12 });
    let mut candidates: Vec<*mut c_void> = vec![
        std::ptr::null_mut(),
        std::ptr::without_provenance_mut(1),
        std::ptr::without_provenance_mut(usize::MAX),
        std::ptr::without_provenance_mut(raw ^ 1),
        std::ptr::without_provenance_mut(raw.wrapping_add(generation_one)),
        std::ptr::without_provenance_mut(raw.wrapping_sub(generation_one)),
        std::ptr::without_provenance_mut(raw ^ (1 << 20)),
        stale,
        foreign,
        plain,
        stream_ud,
    ];
    // A pointer to real memory, as C might pass by mistake.
    let real = Box::new(0u64);
    candidates.push(&*real as *const u64 as *mut c_void);
    for &p in &candidates {
        let (e, v) = complete(p, 1u32).unwrap_err();
        assert_eq!(v, 1);
        assert!(!e.to_string().is_empty());
        assert!(complete_from_c(p, 2u32).is_err());
        if p != stream_ud {
            let (_, v) = push(p, 3u32).unwrap_err();
            assert_eq!(v, 3);
            assert!(push_from_c(p, 4u32).is_err());
        }
    }
    assert_eq!(
        complete(stale, 1u32),
        Err((SendError::Handle(Error::Stale), 1))
    );
    assert!(matches!(
        complete(plain, 1u32),
        Err((SendError::Handle(Error::WrongType { .. }), 1))
    ));
    assert!(matches!(
        complete(stream_ud, 1u32),
        Err((SendError::Handle(Error::WrongType { .. }), 1))
    ));
    assert!(matches!(
        push(user_data, 1u32),
        Err((SendError::Handle(Error::WrongType { .. }), 1))
    ));
    // Wrong item type on the right handle.
    assert!(matches!(
        complete(user_data, 1u64),
        Err((SendError::Handle(Error::WrongType { .. }), 1))
    ));
    // Nothing was consumed.
    assert_eq!(handle_registry::take::<u32>(plain), Ok(7));
    assert_eq!(other.take::<u32>(foreign), Ok(0));
    assert_eq!(complete(user_data, 42u32), Ok(()));
    assert_eq!(block_on(done), Ok(42));
    assert_eq!(push(stream_ud, 5u32), Ok(()));
    drop(items);
    // `c_unref` on garbage is harmless too.
    for &p in &candidates[..7] {
        c_unref(p);
    }
}

/// Promise (oneshot "Cancel on drop", `Completion` docs): dropping the
/// future while C completes on another thread never leaks or duplicates:
/// the value is dropped exactly once, by whichever side holds it; the
/// handle is gone afterwards. Also with the destroy-notify racing.
#[test]
fn drop_complete_and_destroy_notify_racing_drop_each_value_once() {
    for i in 0..rounds(300, 6) {
        let drops = Arc::new(AtomicUsize::new(0));
        let (user_data, done) = oneshot::<Counted>();
        let h = Sendable::new(user_data);
        let barrier = Arc::new(Barrier::new(3));
        let c = {
            let (barrier, drops) = (barrier.clone(), drops.clone());
            thread::spawn(move || {
                barrier.wait();
                complete(h.get(), Counted(drops, 0)).map_err(|(e, _v)| e)
            })
        };
        let u = {
            let barrier = barrier.clone();
            thread::spawn(move || {
                barrier.wait();
                if i % 2 == 0 {
                    c_unref(h.get());
                }
            })
        };
        barrier.wait();
        if i % 3 == 0 {
            drop(done);
        } else {
            drop(block_on(done));
        }
        let r = c.join().unwrap();
        u.join().unwrap();
        if let Err(e) = r {
            assert_eq!(e, SendError::Handle(Error::Stale));
        }
        assert_eq!(drops.load(Ordering::SeqCst), 1, "iteration {i}");
        assert!(!live(user_data));
    }
}

/// Promise (oneshot "Destroy without completing", "Orderings": "destroy
/// vs. complete races decide exactly one outcome"): the future resolves
/// `Ok` exactly when `complete` returned `Ok`, otherwise `Canceled`.
#[test]
fn destroy_notify_vs_complete_decides_one_outcome() {
    for _ in 0..rounds(300, 6) {
        let (user_data, done) = oneshot::<u8>();
        let h = Sendable::new(user_data);
        let barrier = Arc::new(Barrier::new(2));
        let b = barrier.clone();
        let c = thread::spawn(move || {
            b.wait();
            complete(h.get(), 9u8).is_ok()
        });
        barrier.wait();
        c_unref(user_data);
        let completed = c.join().unwrap();
        let out = block_on(done);
        assert_eq!(out.is_ok(), completed, "{out:?}");
        if completed {
            assert_eq!(out, Ok(9));
        } else {
            assert_eq!(out, Err(Canceled));
        }
    }
}

/// Promise (`complete` docs on retained requests, "Exactly once"): a
/// request C holds in several places is completed once whatever the race
/// of completions and destroy-notifies; the future's outcome matches the
/// one `Ok`; every value is dropped once; the handle is gone at the end.
#[test]
fn retained_request_with_racing_completions_and_destroy_notifies() {
    for i in 0..rounds(150, 4) {
        let drops = Arc::new(AtomicUsize::new(0));
        let (user_data, done) = oneshot::<Counted>();
        let refs = 3;
        for _ in 1..refs {
            handle_registry::retain(user_data).unwrap();
        }
        let h = Sendable::new(user_data);
        let barrier = Arc::new(Barrier::new(2 + refs));
        let mut threads = Vec::new();
        for k in 0..2 {
            let (barrier, drops) = (barrier.clone(), drops.clone());
            threads.push(thread::spawn(move || {
                barrier.wait();
                match complete(h.get(), Counted(drops, k)) {
                    Ok(()) => 1,
                    Err((e, _)) => {
                        assert_eq!(e, SendError::Handle(Error::Stale));
                        0
                    }
                }
            }));
        }
        for _ in 0..refs {
            let barrier = barrier.clone();
            threads.push(thread::spawn(move || {
                barrier.wait();
                c_unref(h.get());
                0
            }));
        }
        let oks: usize = threads.into_iter().map(|t| t.join().unwrap()).sum();
        assert!(oks <= 1, "iteration {i}: {oks} winners");
        let out = block_on(done);
        assert_eq!(out.is_ok(), oks == 1, "iteration {i}");
        drop(out);
        assert_eq!(drops.load(Ordering::SeqCst), 2, "iteration {i}");
        assert!(!live(user_data));
    }
}

/// Promise (`Completion` docs): a completion after the future was dropped,
/// after it resolved, or after the destroy-notify is `Stale` and hands the
/// value back; `complete_from_c` drops it. `FusedFuture` reports the end.
#[test]
fn late_completions_in_every_state_are_stale() {
    let drops = Arc::new(AtomicUsize::new(0));
    let (a, done) = oneshot::<Counted>();
    complete(a, Counted(drops.clone(), 1)).unwrap();
    let mut done = done;
    let v = block_on(&mut done).unwrap();
    assert!(done.is_terminated());
    let (e, back) = complete(a, Counted(drops.clone(), 2)).unwrap_err();
    assert_eq!((e, back.1), (SendError::Handle(Error::Stale), 2));
    drop(back);
    assert_eq!(
        complete_from_c(a, Counted(drops.clone(), 3)),
        Err(SendError::Handle(Error::Stale))
    );
    c_unref(a);
    drop(done);
    drop(v);
    assert_eq!(drops.load(Ordering::SeqCst), 3);
    // After the destroy-notify.
    let (b, done) = oneshot::<Counted>();
    c_unref(b);
    assert_eq!(
        complete_from_c(b, Counted(drops.clone(), 4)),
        Err(SendError::Handle(Error::Stale))
    );
    assert_eq!(block_on(done).unwrap_err(), Canceled);
    assert_eq!(drops.load(Ordering::SeqCst), 4);
}

/// Promise (`Completion` docs): "Polling it again after it returned
/// `Ready` panics"; a `CallbackStream` yields `None` forever after its end.
/// The panic is an ordinary Rust panic (no UB, no abort), and the
/// future's drop after it is clean.
#[test]
fn polling_after_ready() {
    let (user_data, mut done) = oneshot::<u8>();
    complete(user_data, 1u8).unwrap();
    assert_eq!(poll_once(&mut done, Waker::noop()), Poll::Ready(Ok(1)));
    let again = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let _ = poll_once(&mut done, Waker::noop());
    }));
    assert!(again.is_err());
    drop(done);
    let (user_data, mut items) = stream::<u8>(1);
    c_unref(user_data);
    for _ in 0..3 {
        assert_eq!(poll_next_once(&mut items, Waker::noop()), Poll::Ready(None));
        assert!(items.is_terminated());
        assert_eq!(items.size_hint(), (0, Some(0)));
    }
}

// ---- Wakers ------------------------------------------------------------------

/// Promise (module "Wakers": "a completion racing the first poll is never
/// lost"; "the latest waker replaces older ones"): every `Pending` is
/// followed by a wake of the waker of that poll, while a C thread
/// completes at an arbitrary moment and the future is polled with a fresh
/// waker each time, from alternating threads.
#[test]
fn no_lost_wakeup_with_a_new_waker_per_poll_across_threads() {
    let _w = watchdog("no_lost_wakeup_with_a_new_waker_per_poll_across_threads");
    for i in 0..rounds(200, 4) {
        let (user_data, done) = oneshot::<usize>();
        let h = Sendable::new(user_data);
        let producer = thread::spawn(move || {
            for _ in 0..(i % 7) * 10 {
                std::hint::spin_loop();
            }
            complete(h.get(), i).unwrap();
        });
        let mut done = Some(done);
        let mut polls = 0;
        loop {
            let flag = Arc::new(AtomicBool::new(false));
            let f = flag.clone();
            let (waker, _hooks) = hooked(move || f.store(true, Ordering::SeqCst), nothing);
            let mut fut = done.take().unwrap();
            // Poll from a different thread every other time.
            let (fut, res) = if polls % 2 == 0 {
                let r = poll_once(&mut fut, &waker);
                (fut, r)
            } else {
                let w = waker.clone();
                thread::spawn(move || {
                    let r = poll_once(&mut fut, &w);
                    (fut, r)
                })
                .join()
                .unwrap()
            };
            polls += 1;
            match res {
                Poll::Ready(v) => {
                    assert_eq!(v, Ok(i));
                    break;
                }
                Poll::Pending => {
                    done = Some(fut);
                    let start = Instant::now();
                    while !flag.load(Ordering::SeqCst) {
                        assert!(
                            start.elapsed() < Duration::from_secs(10),
                            "lost wake-up: iteration {i}, poll {polls}"
                        );
                        thread::yield_now();
                    }
                }
            }
        }
        producer.join().unwrap();
    }
}

/// Promise (stream: "a push that makes an item available takes the waker
/// and wakes it"): no lost wake-up for a stream fed by two C threads and
/// ended by a destroy-notify; each `Pending` is followed by a wake of that
/// poll's waker; every accepted item arrives once, in per-thread order.
#[test]
fn stream_no_lost_wakeup_and_per_thread_order() {
    let _w = watchdog("stream_no_lost_wakeup_and_per_thread_order");
    let per = rounds(2000, 30);
    let (user_data, mut items) = stream::<(u8, usize)>(8);
    let h = Sendable::new(user_data);
    let accepted = Arc::new(AtomicUsize::new(0));
    let producers: Vec<_> = (0..2u8)
        .map(|t| {
            let accepted = accepted.clone();
            thread::spawn(move || {
                let mut k = 0;
                while k < per {
                    match push(h.get(), (t, k)) {
                        Ok(()) => {
                            k += 1;
                            accepted.fetch_add(1, Ordering::SeqCst);
                        }
                        Err((SendError::Full, _)) => thread::yield_now(),
                        Err((e, _)) => panic!("unexpected {e:?}"),
                    }
                }
            })
        })
        .collect();
    let ender = thread::spawn(move || {
        for p in producers {
            p.join().unwrap();
        }
        c_unref(h.get());
    });
    let mut seen = [0usize; 2];
    loop {
        let flag = Arc::new(AtomicBool::new(false));
        let f = flag.clone();
        let (waker, _hooks) = hooked(move || f.store(true, Ordering::SeqCst), nothing);
        match poll_next_once(&mut items, &waker) {
            Poll::Ready(Some((t, k))) => {
                assert_eq!(seen[t as usize], k, "order of thread {t}");
                seen[t as usize] += 1;
            }
            Poll::Ready(None) => break,
            Poll::Pending => {
                let start = Instant::now();
                while !flag.load(Ordering::SeqCst) {
                    assert!(start.elapsed() < Duration::from_secs(10), "lost wake-up");
                    thread::yield_now();
                }
            }
        }
    }
    ender.join().unwrap();
    assert_eq!(seen, [per, per]);
    assert_eq!(accepted.load(Ordering::SeqCst), 2 * per);
}

/// Promise (`complete_from_c`/`push_from_c`: "never unwinds"; `c_unref`
/// never unwinds): a waker that panics on wake never unwinds into C, from
/// any producer-side event (complete, retained complete, push,
/// destroy-notify of a request and of a stream). The value still arrives.
#[test]
fn a_waker_panicking_on_wake_never_reaches_c() {
    let boom = || panic!("waker panicked on wake");
    // complete_from_c.
    let (ud, mut done) = oneshot::<u8>();
    let (w, _) = hooked(boom, nothing);
    assert!(poll_once(&mut done, &w).is_pending());
    assert_eq!(complete_from_c(ud, 1u8), Err(SendError::Panicked));
    assert_eq!(block_on(done), Ok(1), "delivered despite Panicked");
    // Retained request, completed in place.
    let (ud, mut done) = oneshot::<u8>();
    handle_registry::retain(ud).unwrap();
    assert!(poll_once(&mut done, &w).is_pending());
    assert_eq!(complete_from_c(ud, 2u8), Err(SendError::Panicked));
    assert_eq!(block_on(done), Ok(2));
    // Destroy-notify without completion.
    let (ud, mut done) = oneshot::<u8>();
    assert!(poll_once(&mut done, &w).is_pending());
    c_unref(ud);
    assert_eq!(block_on(done), Err(Canceled));
    // push_from_c and the stream's end.
    let (ud, mut items) = stream::<u8>(2);
    assert!(poll_next_once(&mut items, &w).is_pending());
    assert_eq!(push_from_c(ud, 3u8), Err(SendError::Panicked));
    assert_eq!(next(&mut items), Some(3));
    assert!(poll_next_once(&mut items, &w).is_pending());
    c_unref(ud);
    assert_eq!(next(&mut items), None);
    // A payload that panics when dropped, from a waker.
    struct Nasty;
    impl Drop for Nasty {
        fn drop(&mut self) {
            panic!("payload drop panicked");
        }
    }
    let (w2, _) = hooked(|| std::panic::panic_any(Nasty), nothing);
    let (ud, mut done) = oneshot::<u8>();
    assert!(poll_once(&mut done, &w2).is_pending());
    assert_eq!(complete_from_c(ud, 4u8), Err(SendError::Panicked));
    assert_eq!(block_on(done), Ok(4));
}

/// Promise (module "Wakers": "No waker code ... ever runs under the
/// lock"): a waker whose drop panics, replaced by a later poll, panics out
/// of that poll only (Rust side); the future stays usable; the new waker
/// is the one woken. Dropping a future that holds such a waker propagates
/// the panic to the Rust caller, and the handle is gone.
#[test]
fn a_waker_panicking_on_drop() {
    let armed = Arc::new(AtomicBool::new(true));
    let a = armed.clone();
    let (bad, _bad_hooks) = hooked(nothing, move || {
        if a.load(Ordering::SeqCst) {
            panic!("waker panicked on drop")
        }
    });
    let (ud, mut done) = oneshot::<u8>();
    assert!(poll_once(&mut done, &bad).is_pending());
    let (good, good_hooks) = hooked(nothing, nothing);
    let replaced =
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| poll_once(&mut done, &good)));
    assert!(replaced.is_err(), "the old waker's drop panicked in poll");
    complete(ud, 5u8).unwrap();
    assert_eq!(good_hooks.woken.load(Ordering::SeqCst), 1);
    assert_eq!(poll_once(&mut done, &good), Poll::Ready(Ok(5)));
    drop(done);
    // Dropped with the bad waker stored.
    let (ud, mut done) = oneshot::<u8>();
    assert!(poll_once(&mut done, &bad).is_pending());
    let dropped = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| drop(done)));
    assert!(dropped.is_err());
    assert!(!live(ud));
    assert_eq!(complete(ud, 1u8), Err((SendError::Handle(Error::Stale), 1)));
    // The same for a stream.
    let (ud, mut items) = stream::<u8>(2);
    assert!(poll_next_once(&mut items, &bad).is_pending());
    let dropped = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| drop(items)));
    assert!(dropped.is_err());
    assert!(!live(ud));
    armed.store(false, Ordering::SeqCst);
    drop(bad);
}

/// Promise (module "Who wakes whom": the waker is woken "after the lock is
/// released", so an executor that runs or cancels the task inside `wake`
/// cannot deadlock): a waker whose `wake` synchronously polls the future,
/// or drops it (cancel), on the C thread, from every producer event.
#[test]
fn a_waker_that_polls_or_drops_the_future_inside_wake() {
    let _w = watchdog("a_waker_that_polls_or_drops_the_future_inside_wake");
    for event in 0..5 {
        for cancel in [false, true] {
            let drops = Arc::new(AtomicUsize::new(0));
            let got = Arc::new(Mutex::new(None::<String>));
            let is_stream = event >= 3;
            let (ud, fut, st) = if is_stream {
                let (ud, s) = stream::<Counted>(4);
                (ud, None, Some(s))
            } else {
                let (ud, f) = oneshot::<Counted>();
                (ud, Some(f), None)
            };
            let slot_f: Arc<Mutex<Option<Completion<Counted>>>> = Arc::new(Mutex::new(fut));
            let slot_s: Arc<Mutex<Option<CallbackStream<Counted>>>> = Arc::new(Mutex::new(st));
            let (sf, ss, g) = (slot_f.clone(), slot_s.clone(), got.clone());
            let (waker, _hooks) = hooked(
                move || {
                    if cancel {
                        drop(sf.lock().unwrap().take());
                        drop(ss.lock().unwrap().take());
                        return;
                    }
                    let cx = &mut Context::from_waker(Waker::noop());
                    if let Some(f) = sf.lock().unwrap().as_mut() {
                        if let Poll::Ready(r) = Pin::new(f).poll(cx) {
                            *g.lock().unwrap() = Some(format!("{:?}", r.map(|c| c.1)));
                        }
                    }
                    if let Some(s) = ss.lock().unwrap().as_mut() {
                        if let Poll::Ready(r) = Pin::new(s).poll_next(cx) {
                            *g.lock().unwrap() = Some(format!("{:?}", r.map(|c| c.1)));
                        }
                    }
                },
                nothing,
            );
            if let Some(f) = slot_f.lock().unwrap().as_mut() {
                assert!(poll_once(f, &waker).is_pending());
            }
            if let Some(s) = slot_s.lock().unwrap().as_mut() {
                assert!(poll_next_once(s, &waker).is_pending());
            }
            drop(waker);
            let h = Sendable::new(ud);
            let d = drops.clone();
            thread::spawn(move || match event {
                0 => {
                    let _ = complete_from_c(h.get(), Counted(d, 1));
                }
                1 => {
                    handle_registry::retain(h.get()).unwrap();
                    let _ = complete_from_c(h.get(), Counted(d, 1));
                    c_unref(h.get());
                    c_unref(h.get());
                }
                2 | 4 => c_unref(h.get()),
                _ => {
                    let _ = push_from_c(h.get(), Counted(d, 1));
                }
            })
            .join()
            .unwrap();
            let expect_value = matches!(event, 0 | 1 | 3);
            if !cancel {
                let g = got.lock().unwrap().clone();
                let want = match (expect_value, is_stream) {
                    (true, false) => "Ok(1)",
                    (true, true) => "Some(1)",
                    (false, false) => "Err(Canceled)",
                    (false, true) => "None",
                };
                assert_eq!(g.as_deref(), Some(want), "event {event}");
            } else {
                assert!(slot_f.lock().unwrap().is_none() && slot_s.lock().unwrap().is_none());
            }
            drop(slot_f.lock().unwrap().take());
            drop(slot_s.lock().unwrap().take());
            assert_eq!(
                drops.load(Ordering::SeqCst),
                usize::from(expect_value),
                "event {event} cancel {cancel}"
            );
            assert!(!live(ud), "event {event} cancel {cancel}");
        }
    }
}

/// Promise (module "No waker code ... ever runs under the lock"; "a
/// waker that re-enters ... cannot deadlock"): a waker whose *drop* or
/// *wake* re-enters `complete`/`push`/`c_unref` on its own handle.
#[test]
fn a_waker_whose_drop_or_wake_reenters_its_own_handle() {
    let _w = watchdog("a_waker_whose_drop_or_wake_reenters_its_own_handle");
    // Drop of the replaced waker completes the request during poll.
    let (ud, mut done) = oneshot::<u8>();
    let h = Sendable::new(ud);
    let (first, _) = hooked(nothing, move || {
        let _ = complete(h.get(), 7u8);
    });
    assert!(poll_once(&mut done, &first).is_pending());
    drop(first); // our own clone; the registry holds another
    let (second, hooks2) = hooked(nothing, nothing);
    // Replacing `first` drops it, which completes: woken or ready.
    let r = poll_once(&mut done, &second);
    if r.is_pending() {
        assert_eq!(hooks2.woken.load(Ordering::SeqCst), 1, "lost wake-up");
        assert_eq!(poll_once(&mut done, &second), Poll::Ready(Ok(7)));
    } else {
        assert_eq!(r, Poll::Ready(Ok(7)));
    }
    // Wake of the waker completes again / destroys / pushes again.
    let (ud, mut done) = oneshot::<u8>();
    let h = Sendable::new(ud);
    let second_result = Arc::new(Mutex::new(None));
    let sr = second_result.clone();
    let (w, _) = hooked(
        move || {
            *sr.lock().unwrap() = Some(complete(h.get(), 8u8));
            c_unref(h.get());
        },
        nothing,
    );
    assert!(poll_once(&mut done, &w).is_pending());
    complete(ud, 1u8).unwrap();
    assert_eq!(
        *second_result.lock().unwrap(),
        Some(Err((SendError::Handle(Error::Stale), 8)))
    );
    assert_eq!(block_on(done), Ok(1));
    let (ud, mut items) = stream::<u32>(1000);
    let h = Sendable::new(ud);
    let count = Arc::new(AtomicUsize::new(0));
    let c = count.clone();
    let (w, _) = hooked(
        move || {
            if c.fetch_add(1, Ordering::SeqCst) < 3 {
                push(h.get(), 100u32).unwrap();
            }
        },
        nothing,
    );
    assert!(poll_next_once(&mut items, &w).is_pending());
    push(ud, 1u32).unwrap(); // wakes once; the waker is taken, so one more push wakes no one
    assert_eq!(count.load(Ordering::SeqCst), 1);
    assert_eq!(next(&mut items), Some(1));
    assert_eq!(next(&mut items), Some(100));
    drop(items);
    drop(w);
}

/// Promise (`Completion` docs: the future is a plain `Send` future that
/// "works with any runtime"; README: a late `on_done` after a
/// `tokio::time::timeout` dropped it gets `Stale`): under a multi-thread
/// tokio runtime, futures canceled by timeouts race late completions.
#[cfg(not(miri))]
#[test]
fn tokio_timeouts_race_late_completions() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_time()
        .build()
        .unwrap();
    let drops = Arc::new(AtomicUsize::new(0));
    let sent = Arc::new(AtomicUsize::new(0));
    rt.block_on(async {
        let mut tasks = Vec::new();
        for i in 0..200u64 {
            let (drops, sent) = (drops.clone(), sent.clone());
            tasks.push(tokio::spawn(async move {
                let (ud, done) = oneshot::<Counted>();
                let h = Sendable::new(ud);
                #[allow(unused_variables)]
                let ud = ();
                let c = thread::spawn(move || {
                    thread::sleep(Duration::from_micros(i % 13 * 50));
                    sent.fetch_add(1, Ordering::SeqCst);
                    let _ = complete_from_c(h.get(), Counted(drops, i as usize));
                });
                let r = tokio::time::timeout(Duration::from_micros(i % 11 * 50), done).await;
                drop(r);
                tokio::task::spawn_blocking(move || c.join().unwrap())
                    .await
                    .unwrap();
                assert!(!live(h.get()));
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
    });
    assert_eq!(drops.load(Ordering::SeqCst), sent.load(Ordering::SeqCst));
}

// ---- Panics in user values ----------------------------------------------------

/// Promise (`complete_from_c`: "A panic (... from dropping a refused
/// value) is caught"; `push_from_c` likewise): refused values that panic
/// when dropped never unwind into C, and leave the request intact.
#[test]
fn refused_values_that_panic_on_drop_never_reach_c() {
    let drops = Arc::new(AtomicUsize::new(0));
    let (ud, done) = oneshot::<PanicOnDrop>();
    drop(done);
    assert_eq!(
        complete_from_c(ud, PanicOnDrop(drops.clone())),
        Err(SendError::Panicked)
    );
    assert_eq!(drops.load(Ordering::SeqCst), 1);
    let (ud, mut items) = stream::<PanicOnDrop>(1);
    push(ud, PanicOnDrop(drops.clone()))
        .map_err(|e| e.0)
        .unwrap();
    assert_eq!(
        push_from_c(ud, PanicOnDrop(drops.clone())),
        Err(SendError::Panicked)
    );
    assert_eq!(drops.load(Ordering::SeqCst), 2);
    // The stream is intact: the buffered item is still there.
    let item = next(&mut items).unwrap();
    assert!(std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| drop(item))).is_err());
    c_unref(ud);
    assert!(next(&mut items).is_none());
    // Wrong type with a panicking value: the request survives.
    let (ud, done) = oneshot::<u8>();
    assert!(matches!(
        complete_from_c(ud, PanicOnDrop(drops.clone())),
        Err(SendError::Panicked)
    ));
    complete(ud, 3u8).unwrap();
    assert_eq!(block_on(done), Ok(3));
}

/// Promise (`end_consumer`/`drop_leftovers`: each leftover is dropped, the
/// first panic propagates, "unless this thread is already unwinding, where
/// it is discarded rather than abort"): a stream dropped with unread
/// panicking items, normally and during an unwind; a future dropped by
/// its waker on the C thread with a delivered panicking value.
#[test]
fn unread_panicking_values_dropped_with_the_consumer() {
    let drops = Arc::new(AtomicUsize::new(0));
    let (ud, items) = stream::<PanicOnDrop>(8);
    for _ in 0..5 {
        push(ud, PanicOnDrop(drops.clone()))
            .map_err(|e| e.0)
            .unwrap();
    }
    assert!(std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| drop(items))).is_err());
    assert_eq!(drops.load(Ordering::SeqCst), 5, "every item dropped");
    assert!(!live(ud));
    let (ud, items) = stream::<PanicOnDrop>(8);
    for _ in 0..5 {
        push(ud, PanicOnDrop(drops.clone()))
            .map_err(|e| e.0)
            .unwrap();
    }
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || {
        let _items = items;
        panic!("body");
    }));
    assert!(r.is_err());
    assert_eq!(drops.load(Ordering::SeqCst), 10);
    // The future is dropped from its waker on the C thread, taking a
    // delivered value whose drop panics: `complete_from_c` reports it.
    let (ud, done) = oneshot::<PanicOnDrop>();
    let slot = Arc::new(Mutex::new(Some(done)));
    let s = slot.clone();
    let (w, _) = hooked(move || drop(s.lock().unwrap().take()), nothing);
    assert!(poll_once(slot.lock().unwrap().as_mut().unwrap(), &w).is_pending());
    drop(w);
    let h = Sendable::new(ud);
    let d = drops.clone();
    let r = thread::spawn(move || complete_from_c(h.get(), PanicOnDrop(d)))
        .join()
        .unwrap();
    assert_eq!(r, Err(SendError::Panicked));
    assert_eq!(drops.load(Ordering::SeqCst), 11);
    assert!(!live(ud));
}

/// Promise (module "No ... user `Drop` ever runs under the lock": "a value
/// whose `Drop` completes another request cannot deadlock"): a stream's
/// unread items whose `Drop` push into the same stream (now gone: `Stale`,
/// the refused item dropped in turn), or complete another request.
#[test]
fn values_whose_drop_reenters_the_module() {
    let _w = watchdog("values_whose_drop_reenters_the_module");
    struct Reenter(Sendable, Sendable, usize, Arc<AtomicUsize>);
    impl Drop for Reenter {
        fn drop(&mut self) {
            self.3.fetch_add(1, Ordering::SeqCst);
            if self.2 > 0 {
                let me = Reenter(self.0, self.1, self.2 - 1, self.3.clone());
                let r = push(self.0.get(), me);
                assert!(matches!(r, Err((SendError::Handle(Error::Stale), _))));
            }
            let _ = complete(self.1.get(), self.2);
        }
    }
    let drops = Arc::new(AtomicUsize::new(0));
    let (sud, items) = stream::<Reenter>(4);
    let (oud, done) = oneshot::<usize>();
    let (s, o) = (Sendable::new(sud), Sendable::new(oud));
    push(sud, Reenter(s, o, 3, drops.clone()))
        .map_err(|e| e.0)
        .unwrap();
    push(sud, Reenter(s, o, 0, drops.clone()))
        .map_err(|e| e.0)
        .unwrap();
    drop(items);
    // 4 from the first item's chain (3, 2, 1, 0) and 1 from the second.
    assert_eq!(drops.load(Ordering::SeqCst), 5);
    // The chain drops depth first: the innermost (0) completes first.
    assert_eq!(block_on(done), Ok(0), "the first complete wins");
}

// ---- Streams -------------------------------------------------------------------

/// Promise (`stream()`: "holding at most `capacity` items not yet read";
/// overflow "refused ... the item handed back"): with many concurrent
/// pushers and no reader, exactly `capacity` pushes are accepted; each
/// refused item comes back (`Full`); nothing is dropped twice.
#[test]
fn the_bound_is_exact_under_concurrent_pushes() {
    for cap in [1usize, 3, 17] {
        let drops = Arc::new(AtomicUsize::new(0));
        let (ud, mut items) = stream::<Counted>(cap);
        let h = Sendable::new(ud);
        let barrier = Arc::new(Barrier::new(4));
        let per = rounds(50, 5);
        let pushers: Vec<_> = (0..4)
            .map(|_| {
                let (barrier, drops) = (barrier.clone(), drops.clone());
                thread::spawn(move || {
                    barrier.wait();
                    let mut ok = 0;
                    for k in 0..per {
                        match push(h.get(), Counted(drops.clone(), k)) {
                            Ok(()) => ok += 1,
                            Err((SendError::Full, v)) => assert_eq!(v.1, k),
                            Err((e, _)) => panic!("{e:?}"),
                        }
                    }
                    ok
                })
            })
            .collect();
        let ok: usize = pushers.into_iter().map(|p| p.join().unwrap()).sum();
        assert_eq!(ok, cap);
        assert_eq!(drops.load(Ordering::SeqCst), 4 * per - cap);
        assert_eq!(items.size_hint(), (cap, None));
        drop(next(&mut items));
        push(ud, Counted(drops.clone(), 0))
            .map_err(|e| e.0)
            .unwrap();
        drop(items);
        assert_eq!(drops.load(Ordering::SeqCst), 4 * per + 1);
    }
}

/// Promise (`stream()`: "`usize::MAX` is a stream without a bound"):
/// many items are accepted without a reader and read in order.
#[test]
fn an_unbounded_stream_takes_everything() {
    let n = rounds(100_000, 200);
    let (ud, mut items) = stream::<u32>(usize::MAX);
    for i in 0..n as u32 {
        push(ud, i).unwrap();
    }
    c_unref(ud);
    for i in 0..n as u32 {
        assert_eq!(next(&mut items), Some(i));
    }
    assert_eq!(next(&mut items), None);
}

/// Promise (stream "End of stream, from C": "the items already buffered
/// are still delivered, then the stream ends"; "If a push is still running
/// on another thread, the registry drops the `Feeder` when that push ends,
/// so the end never overtakes an accepted item"): a destroy-notify racing
/// pushes from two threads; every `Ok` push is read exactly once before
/// `None`, nothing refused is read, and no push succeeds after the end.
#[test]
fn destroy_notify_racing_pushes_never_overtakes_an_accepted_item() {
    for round in 0..rounds(100, 3) {
        let (ud, mut items) = stream::<(u8, u32)>(usize::MAX);
        let h = Sendable::new(ud);
        let barrier = Arc::new(Barrier::new(3));
        let pushers: Vec<_> = (0..2u8)
            .map(|t| {
                let barrier = barrier.clone();
                thread::spawn(move || {
                    barrier.wait();
                    let mut accepted = 0u32;
                    loop {
                        match push(h.get(), (t, accepted)) {
                            Ok(()) => accepted += 1,
                            Err((e, _)) => {
                                assert_eq!(e, SendError::Handle(Error::Stale));
                                return accepted;
                            }
                        }
                    }
                })
            })
            .collect();
        barrier.wait();
        for _ in 0..(round % 10) * 100 {
            std::hint::spin_loop();
        }
        c_unref(ud);
        let accepted: Vec<u32> = pushers.into_iter().map(|p| p.join().unwrap()).collect();
        let mut seen = [0u32; 2];
        while let Some((t, k)) = next(&mut items) {
            assert_eq!(seen[t as usize], k);
            seen[t as usize] += 1;
        }
        assert_eq!(seen.to_vec(), accepted, "round {round}");
    }
}

/// Promise (stream "End of stream, from Rust": later pushes are `Stale`
/// with the item back, and unread items are dropped, once): a stream
/// dropped while two threads push; every item is dropped exactly once.
#[test]
fn dropping_the_stream_while_pushing_drops_each_item_once() {
    for _ in 0..rounds(100, 3) {
        let drops = Arc::new(AtomicUsize::new(0));
        let made = Arc::new(AtomicUsize::new(0));
        let (ud, items) = stream::<Counted>(4);
        let h = Sendable::new(ud);
        let barrier = Arc::new(Barrier::new(3));
        let pushers: Vec<_> = (0..2)
            .map(|_| {
                let (barrier, drops, made) = (barrier.clone(), drops.clone(), made.clone());
                thread::spawn(move || {
                    barrier.wait();
                    loop {
                        made.fetch_add(1, Ordering::SeqCst);
                        match push(h.get(), Counted(drops.clone(), 0)) {
                            Ok(()) | Err((SendError::Full, _)) => {}
                            Err((e, _)) => {
                                assert_eq!(e, SendError::Handle(Error::Stale));
                                return;
                            }
                        }
                    }
                })
            })
            .collect();
        barrier.wait();
        drop(items);
        for p in pushers {
            p.join().unwrap();
        }
        assert_eq!(drops.load(Ordering::SeqCst), made.load(Ordering::SeqCst));
        assert!(!live(ud));
    }
}

// ---- Thread-local teardown, mem::forget ------------------------------------------

/// Promise ("any thread, at any time"; README: `c_unref` and the
/// trampolines "accept any pointer, on any thread, at any time"):
/// completing, pushing, destroying, and dropping futures and streams from
/// thread-local destructors works, or is at worst refused with the value
/// handed back, never a panic or abort. Observed: everything works.
#[test]
fn from_thread_local_destructors() {
    struct AtExit(Box<dyn FnMut()>);
    impl Drop for AtExit {
        fn drop(&mut self) {
            (self.0)();
        }
    }
    thread_local! {
        static FIRST: RefCell<Option<AtExit>> = const { RefCell::new(None) };
        static SECOND: RefCell<Option<AtExit>> = const { RefCell::new(None) };
    }
    let results = Arc::new(Mutex::new(Vec::<String>::new()));
    let (ud1, done1) = oneshot::<u32>();
    let (ud2, mut items2) = stream::<u32>(4);
    let (ud3, done3) = oneshot::<u32>();
    let (h1, h2, h3) = (Sendable::new(ud1), Sendable::new(ud2), Sendable::new(ud3));
    let r = results.clone();
    let r2 = results.clone();
    thread::spawn(move || {
        // A future and a stream owned by a thread-local, dropped at exit.
        let (own_ud, own) = oneshot::<u32>();
        let (own_sud, own_s) = stream::<u32>(1);
        push(own_sud, 1u32).unwrap();
        let mut own = Some((own, own_s));
        FIRST.with(|f| {
            *f.borrow_mut() = Some(AtExit(Box::new(move || {
                let out = format!(
                    "complete={:?} push={:?}",
                    complete(h1.get(), 1u32),
                    push(h2.get(), 2u32)
                );
                r.lock().unwrap().push(out);
                c_unref(h2.get());
                drop(own.take());
                r.lock()
                    .unwrap()
                    .push(format!("own gone={}", !live(own_ud) && !live(own_sud)));
            })))
        });
        SECOND.with(|f| {
            *f.borrow_mut() = Some(AtExit(Box::new(move || {
                r2.lock()
                    .unwrap()
                    .push(format!("from_c={:?}", complete_from_c(h3.get(), 3u32)));
            })))
        });
    })
    .join()
    .unwrap();
    let results = results.lock().unwrap().clone();
    assert!(
        results.contains(&"complete=Ok(()) push=Ok(())".to_string()),
        "{results:?}"
    );
    assert!(
        results.contains(&"own gone=true".to_string()),
        "{results:?}"
    );
    assert!(
        results.contains(&"from_c=Ok(())".to_string()),
        "{results:?}"
    );
    assert_eq!(block_on(done1), Ok(1));
    assert_eq!(next(&mut items2), Some(2));
    assert_eq!(next(&mut items2), None);
    assert_eq!(block_on(done3), Ok(3));
}

/// Promise (as above), late in teardown: the thread-local destructor is
/// registered before the thread's first registry call, so it runs after
/// the registry's own thread-locals (owner-id lease, reader record,
/// spill vector) are destroyed. Observed: everything still works.
#[test]
fn from_a_thread_local_destructor_after_the_registrys_own() {
    struct Late(Sendable, Sendable, Sendable, Arc<Mutex<Vec<String>>>);
    impl Drop for Late {
        fn drop(&mut self) {
            let (own_ud, own) = oneshot::<u8>();
            let out = format!(
                "complete={:?} push={:?} from_c={:?} retained_complete={:?}",
                complete(self.0.get(), 1u32),
                push(self.1.get(), 2u32),
                push_from_c(self.1.get(), 3u32),
                {
                    handle_registry::retain(self.2.get()).unwrap();
                    complete(self.2.get(), 4u32)
                },
            );
            c_unref(self.1.get());
            c_unref(self.2.get());
            c_unref(self.2.get());
            drop(own);
            self.3.lock().unwrap().push(out);
            self.3
                .lock()
                .unwrap()
                .push(format!("own gone={}", !live(own_ud)));
        }
    }
    thread_local! {
        static LATE: RefCell<Option<Late>> = const { RefCell::new(None) };
    }
    let results = Arc::new(Mutex::new(Vec::<String>::new()));
    let (a, done_a) = oneshot::<u32>();
    let (b, mut items_b) = stream::<u32>(4);
    let (c, done_c) = oneshot::<u32>();
    let late = Late(
        Sendable::new(a),
        Sendable::new(b),
        Sendable::new(c),
        results.clone(),
    );
    thread::spawn(move || {
        LATE.with(|l| *l.borrow_mut() = Some(late));
        // Now the registry's thread-locals, registered after ours.
        let (ud, mut f) = oneshot::<u8>();
        let (sud, s) = stream::<u8>(1);
        push(sud, 1u8).unwrap();
        complete(ud, 1u8).unwrap();
        assert_eq!(poll_once(&mut f, Waker::noop()), Poll::Ready(Ok(1)));
        drop(s);
    })
    .join()
    .unwrap();
    let results = results.lock().unwrap().clone();
    assert_eq!(
        results,
        [
            "complete=Ok(()) push=Ok(()) from_c=Ok(()) retained_complete=Ok(())",
            "own gone=true"
        ]
    );
    assert_eq!(block_on(done_a), Ok(1));
    assert_eq!(next(&mut items_b), Some(2));
    assert_eq!(next(&mut items_b), Some(3));
    assert_eq!(next(&mut items_b), None);
    assert_eq!(block_on(done_c), Ok(4));
}

/// Promise: none documented for `mem::forget`; checks it is only a leak,
/// never UB: C's later calls still behave (complete `Ok`, then `Stale`;
/// pushes until `Full`; destroy-notify ends the handle). The forgotten
/// side's values are leaked (not dropped), as with any forgotten owner.
#[test]
#[cfg_attr(miri, ignore = "leaks on purpose")]
fn forgotten_futures_and_streams_only_leak() {
    let drops = Arc::new(AtomicUsize::new(0));
    let (ud, done) = oneshot::<Counted>();
    std::mem::forget(done);
    assert!(live(ud), "the request stays registered until C completes");
    assert!(complete(ud, Counted(drops.clone(), 1)).is_ok());
    assert!(!live(ud));
    let (e, v) = complete(ud, Counted(drops.clone(), 2)).unwrap_err();
    assert_eq!(e, SendError::Handle(Error::Stale));
    drop(v);
    assert_eq!(drops.load(Ordering::SeqCst), 1, "the delivered value leaks");
    let (ud, items) = stream::<Counted>(2);
    std::mem::forget(items);
    push(ud, Counted(drops.clone(), 3))
        .map_err(|e| e.0)
        .unwrap();
    push(ud, Counted(drops.clone(), 4))
        .map_err(|e| e.0)
        .unwrap();
    assert_eq!(
        push_from_c(ud, Counted(drops.clone(), 5)),
        Err(SendError::Full)
    );
    c_unref(ud);
    assert!(!live(ud));
    assert_eq!(
        push_from_c(ud, Counted(drops.clone(), 6)),
        Err(SendError::Handle(Error::Stale))
    );
    assert_eq!(drops.load(Ordering::SeqCst), 3);
    // A forgotten, never-completed request stays in the registry until
    // C's destroy-notify; then nothing is left.
    let (ud, done) = oneshot::<u8>();
    std::mem::forget(done);
    c_unref(ud);
    assert!(!live(ud));
}

/// Promise (module "Nothing leaks"): a future completed with its own
/// future (a cycle through the shared state) is not detected; it leaks
/// like an `Arc` cycle. No UB, no panic. Documents the limit.
#[test]
#[cfg_attr(miri, ignore = "leaks on purpose")]
fn a_future_completed_with_itself_leaks_quietly() {
    let drops = Arc::new(AtomicUsize::new(0));
    type Any = Box<dyn std::any::Any + Send>;
    let (ud, done) = oneshot::<(Any, Counted)>();
    complete(ud, (Box::new(done) as Any, Counted(drops.clone(), 0)))
        .map_err(|e| e.0)
        .unwrap();
    assert!(!live(ud));
    assert_eq!(drops.load(Ordering::SeqCst), 0, "leaked through the cycle");
}

// ---- Waker drop panicking during an unwind (may abort) ---------------------------

/// Promise (`Completion`'s docs: a panic from the stored waker's `Drop`
/// is "caught and discarded when the thread is already unwinding: never
/// an abort"): a future dropped by an unwinding task while it holds a
/// waker whose `drop` panics. The crate once dropped the waker plainly
/// (`end_consumer`), and the process aborted; found by this review. Run
/// in a child process, where an abort fails the test rather than the
/// whole run.
#[test]
fn a_panicking_waker_drop_during_unwind() {
    if !in_child("a_panicking_waker_drop_during_unwind") {
        return;
    }
    let armed = Arc::new(AtomicBool::new(false));
    let arm = armed.clone();
    let (bad, hooks) = hooked(nothing, move || {
        if arm.load(Ordering::SeqCst) {
            panic!("waker panicked on drop")
        }
    });
    let (ud, mut done) = oneshot::<u8>();
    assert!(poll_once(&mut done, &bad).is_pending());
    drop(bad); // our own clone, unarmed: only the future's panics
    armed.store(true, Ordering::SeqCst);
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || {
        let _done = done;
        panic!("task body");
    }));
    assert!(r.is_err());
    assert_eq!(hooks.dropped.load(Ordering::SeqCst), 2);
    assert!(!live(ud));
}
