//! The `completion` module from other threads, pure Rust (runs under Miri):
//! completions racing the first poll, double, late and dropped completions,
//! destroy-notify without completion, stream order per thread, overflow and
//! many concurrent completions. The executor is a hand-written `block_on`
//! with a thread-park waker (`tests/executor/`).

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Barrier};
use std::task::{Context, Wake, Waker};
use std::thread;
use std::time::{Duration, Instant};

use handle_registry::completion::{
    complete, complete_from_c, oneshot, push, push_from_c, stream, Canceled, SendError,
};
use handle_registry::{c_unref, Error};

mod common;
mod executor;
use common::{rounds, Counted};
use executor::{block_on, next, park_waker, Sendable};

// ---- One-shot --------------------------------------------------------------

#[test]
fn completed_on_another_thread_before_the_first_poll() {
    let (user_data, done) = oneshot::<String>();
    let h = Sendable::new(user_data);
    thread::spawn(move || complete(h.get(), String::from("early")).unwrap())
        .join()
        .unwrap();
    assert_eq!(block_on(done), Ok(String::from("early")));
}

#[test]
fn completed_on_another_thread_after_the_first_poll() {
    let (user_data, mut done) = oneshot::<u64>();
    let h = Sendable::new(user_data);
    let (go, wait) = mpsc::channel::<()>();
    let worker = thread::spawn(move || {
        wait.recv().unwrap();
        complete(h.get(), 64u64).unwrap();
    });
    let waker = park_waker();
    assert!(Pin::new(&mut done)
        .poll(&mut Context::from_waker(&waker))
        .is_pending());
    go.send(()).unwrap();
    assert_eq!(block_on(done), Ok(64));
    worker.join().unwrap();
}

#[test]
fn completion_racing_the_first_poll_is_never_lost() {
    for i in 0..rounds(500, 20) {
        let (user_data, done) = oneshot::<usize>();
        let h = Sendable::new(user_data);
        let worker = thread::spawn(move || complete(h.get(), i).unwrap());
        // If the wake-up were lost, this would park forever.
        assert_eq!(block_on(done), Ok(i));
        worker.join().unwrap();
    }
}

#[test]
fn racing_double_completion_has_one_winner_and_gives_the_other_value_back() {
    for _ in 0..rounds(200, 10) {
        let drops = Arc::new(AtomicUsize::new(0));
        let (user_data, done) = oneshot::<Counted>();
        let h = Sendable::new(user_data);
        let barrier = Arc::new(Barrier::new(2));
        let racers: Vec<_> = (0..2)
            .map(|_| {
                let (barrier, drops) = (barrier.clone(), drops.clone());
                thread::spawn(move || {
                    barrier.wait();
                    match complete(h.get(), Counted(drops)) {
                        Ok(()) => true,
                        Err((error, value)) => {
                            assert_eq!(error, SendError::Handle(Error::Stale));
                            drop(value);
                            false
                        }
                    }
                })
            })
            .collect();
        let wins: usize = racers.into_iter().map(|r| r.join().unwrap() as usize).sum();
        assert_eq!(wins, 1);
        assert_eq!(drops.load(Ordering::SeqCst), 1, "the loser's value");
        drop(block_on(done).unwrap());
        assert_eq!(drops.load(Ordering::SeqCst), 2, "the winner's value");
    }
}

#[test]
fn late_completion_after_the_future_was_dropped_is_stale() {
    let drops = Arc::new(AtomicUsize::new(0));
    let (user_data, done) = oneshot::<Counted>();
    drop(done);
    let h = Sendable::new(user_data);
    let d = drops.clone();
    let refused = thread::spawn(move || complete(h.get(), Counted(d)).map_err(|(e, _)| e))
        .join()
        .unwrap();
    assert_eq!(refused, Err(SendError::Handle(Error::Stale)));
    assert_eq!(drops.load(Ordering::SeqCst), 1, "the value was dropped");
    // The `_from_c` variant drops it itself.
    assert_eq!(
        complete_from_c(user_data, Counted(drops.clone())),
        Err(SendError::Handle(Error::Stale))
    );
    assert_eq!(drops.load(Ordering::SeqCst), 2);
}

#[test]
fn dropping_the_future_while_completing_never_leaks_the_value() {
    for _ in 0..rounds(300, 15) {
        let drops = Arc::new(AtomicUsize::new(0));
        let (user_data, done) = oneshot::<Counted>();
        let h = Sendable::new(user_data);
        let d = drops.clone();
        let worker = thread::spawn(move || {
            let _ = complete(h.get(), Counted(d)); // Ok, or Err with the value (dropped)
        });
        drop(done);
        worker.join().unwrap();
        assert_eq!(drops.load(Ordering::SeqCst), 1);
    }
}

#[test]
fn destroy_notify_without_completion_resolves_with_canceled() {
    let (user_data, mut done) = oneshot::<u8>();
    let waker = park_waker();
    assert!(Pin::new(&mut done)
        .poll(&mut Context::from_waker(&waker))
        .is_pending());
    let h = Sendable::new(user_data);
    // C's worker thread destroys the request: `c_unref` as destroy-notify.
    thread::spawn(move || c_unref(h.get())).join().unwrap();
    assert_eq!(block_on(done), Err(Canceled));
    // A completion after the destroy is stale.
    assert_eq!(
        complete(user_data, 1u8),
        Err((SendError::Handle(Error::Stale), 1))
    );
}

#[test]
fn destroy_notify_after_completion_is_ignored() {
    let (user_data, done) = oneshot::<u8>();
    let h = Sendable::new(user_data);
    thread::spawn(move || {
        complete(h.get(), 3u8).unwrap();
        c_unref(h.get()); // what C does next: harmless
    })
    .join()
    .unwrap();
    assert_eq!(block_on(done), Ok(3));
}

#[test]
fn a_panicking_waker_does_not_unwind_out_of_complete_from_c() {
    struct Boom;
    impl Wake for Boom {
        fn wake(self: Arc<Self>) {
            panic!("waker panicked");
        }
    }
    let (user_data, mut done) = oneshot::<u8>();
    let waker = Waker::from(Arc::new(Boom));
    assert!(Pin::new(&mut done)
        .poll(&mut Context::from_waker(&waker))
        .is_pending());
    assert_eq!(complete_from_c(user_data, 1u8), Err(SendError::Panicked));
    // The value was delivered before the wake-up panicked.
    assert_eq!(block_on(done), Ok(1));
}

#[test]
fn many_concurrent_completions_all_resolve_in_bounded_time() {
    let count = rounds(2000, 40);
    let workers = 4;
    let started = Instant::now();
    let (handles, futures): (Vec<_>, Vec<_>) = (0..count)
        .map(|_| {
            let (user_data, done) = oneshot::<usize>();
            (Sendable::new(user_data), done)
        })
        .unzip();
    let handles = Arc::new(handles);
    let threads: Vec<_> = (0..workers)
        .map(|w| {
            let handles = handles.clone();
            thread::spawn(move || {
                for i in (w..handles.len()).step_by(workers) {
                    complete(handles[i].get(), i).unwrap();
                }
            })
        })
        .collect();
    for (i, done) in futures.into_iter().enumerate() {
        assert_eq!(block_on(done), Ok(i));
    }
    for t in threads {
        t.join().unwrap();
    }
    if !cfg!(miri) {
        assert!(started.elapsed() < Duration::from_secs(20));
    }
}

// ---- Streams ---------------------------------------------------------------

#[test]
fn stream_keeps_each_threads_order_and_ends_on_destroy_notify() {
    let threads = 4;
    let per_thread = rounds(500, 15);
    let (user_data, mut items) = stream::<(usize, usize)>(8);
    let h = Sendable::new(user_data);
    let pushers: Vec<_> = (0..threads)
        .map(|t| {
            thread::spawn(move || {
                for seq in 0..per_thread {
                    let mut item = (t, seq);
                    // Overflow policy is "refuse": this producer retries.
                    loop {
                        match push(h.get(), item) {
                            Ok(()) => break,
                            Err((SendError::Full, back)) => {
                                item = back;
                                thread::yield_now();
                            }
                            Err((e, _)) => panic!("unexpected {e}"),
                        }
                    }
                }
            })
        })
        .collect();
    let closer = thread::spawn(move || {
        for p in pushers {
            p.join().unwrap();
        }
        c_unref(h.get()); // end of stream, from "C"
    });
    let mut expected = vec![0; threads];
    let mut total = 0;
    while let Some((t, seq)) = next(&mut items) {
        assert_eq!(seq, expected[t], "thread {t}'s items out of order");
        expected[t] += 1;
        total += 1;
    }
    assert_eq!(total, threads * per_thread);
    closer.join().unwrap();
}

#[test]
fn stream_overflow_refuses_and_gives_the_item_back() {
    let (user_data, mut items) = stream::<String>(2);
    let h = Sendable::new(user_data);
    let refused = thread::spawn(move || {
        push(h.get(), "a".to_string()).unwrap();
        push(h.get(), "b".to_string()).unwrap();
        push(h.get(), "c".to_string()).unwrap_err()
    })
    .join()
    .unwrap();
    assert_eq!(refused, (SendError::Full, "c".to_string()));
    assert_eq!(
        push_from_c(user_data, "d".to_string()),
        Err(SendError::Full)
    );
    assert_eq!(next(&mut items).as_deref(), Some("a"));
    push(user_data, "e".to_string()).unwrap();
    assert_eq!(next(&mut items).as_deref(), Some("b"));
    assert_eq!(next(&mut items).as_deref(), Some("e"));
}

#[test]
fn pushes_after_the_stream_was_dropped_are_stale_and_dropped() {
    let drops = Arc::new(AtomicUsize::new(0));
    let (user_data, items) = stream::<Counted>(4);
    push(user_data, Counted(drops.clone())).unwrap();
    drop(items); // the unread item is dropped with the stream
    assert_eq!(drops.load(Ordering::SeqCst), 1);
    let h = Sendable::new(user_data);
    let d = drops.clone();
    let result = thread::spawn(move || push_from_c(h.get(), Counted(d)))
        .join()
        .unwrap();
    assert_eq!(result, Err(SendError::Handle(Error::Stale)));
    assert_eq!(drops.load(Ordering::SeqCst), 2);
}

#[test]
fn dropping_the_stream_while_pushing_never_leaks() {
    for _ in 0..rounds(100, 5) {
        let drops = Arc::new(AtomicUsize::new(0));
        let (user_data, items) = stream::<Counted>(64);
        let h = Sendable::new(user_data);
        let n = rounds(50, 5);
        let d = drops.clone();
        let pusher = thread::spawn(move || {
            for _ in 0..n {
                let _ = push_from_c(h.get(), Counted(d.clone()));
            }
        });
        drop(items);
        pusher.join().unwrap();
        assert_eq!(drops.load(Ordering::SeqCst), n);
    }
}
