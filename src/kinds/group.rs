//! Groups: every handle of one connection, plugin or C object, freed in
//! one call, with a capacity limit.
//!
//! # Why
//!
//! A plugin is unloaded, a connection closed, a C object destroyed: every
//! `user_data` handed out on its behalf must go, and C may or may not call
//! each destroy-notify. A [`Group`] remembers the handles saved through it;
//! [`Group::clear`] (and dropping the group) removes every one still live,
//! with [`unref`](crate::Registry::unref) semantics: each answers
//! [`Error::Stale`] from then on, its value is dropped exactly once (a
//! borrowed one when its last guard ends, on that guard's thread), and a
//! [`retain`](crate::Registry::retain)ed one goes with all its references.
//! Handles C already freed are skipped quietly.
//!
//! Each handle becomes stale when `clear` reaches it (they are removed one
//! by one, in save order); once `clear` returns, all that were members
//! when it started are. A callback racing `clear` on another thread may
//! thus still see some of the group's handles live and others stale. A
//! handle saved into the group while `clear` runs (by a removed value's
//! `Drop`, say) is not one of them: it stays a member until the next
//! `clear`, so that a `Drop` that always saves again cannot keep `clear`
//! from returning. (Dropping the group is not affected: nothing can save
//! into a group while it is dropped.) Until `clear` has made it stale, a
//! handle is still a member: it counts in [`Group::len`] and against the
//! limit, also for a value's `Drop` that saves into the group while
//! `clear` runs.
//! A `clear` started meanwhile (from such a `Drop`, or another thread)
//! shares the remaining work; so when two threads clear one group at once,
//! one may return while the other is still removing one of the handles
//! (it turns stale a moment later, and counts as a member until then).
//!
//! # Capacity
//!
//! [`Group::with_limit`] bounds how many handles of the group may be live
//! at once: past it, [`Group::try_save`] gives the value back with
//! [`Error::Full`] and [`Group::save`] panics with a report naming the
//! types holding the most handles ([`Group::full_report`]), which is what
//! one wants to read when a C library forgets its destroy-notifies.
//!
//! # Cost
//!
//! A group's save is a registry save plus a push under the group's lock;
//! handles freed by C are pruned from the group's list whenever it doubles
//! (or reaches the limit), so the list stays within twice the live count.
//! Restores do not know groups exist.

use std::any::Any;
use std::collections::BTreeMap;
use std::ffi::c_void;
use std::fmt;

use crate::sync::Mutex;
use crate::{handle, Error, Registry};

/// Handles saved together and freed together. See the
/// [module notes](crate::kinds::group).
///
/// ```
/// use handle_registry::{Error, Registry};
///
/// let r = Registry::new();
/// let plugin = r.group();
/// let a = plugin.save(String::from("callback state"));
/// let b = plugin.save(42u32);
/// assert_eq!(plugin.len(), 2);
/// plugin.clear(); // the plugin is unloaded
/// assert_eq!(r.restore::<String>(a).err(), Some(Error::Stale));
/// assert_eq!(r.unref(b), Err(Error::Stale));
/// ```
pub struct Group<'r> {
    registry: &'r Registry,
    state: Mutex<Members>,
    limit: Option<usize>,
}

struct Members {
    handles: Vec<u64>,
    /// Handles a [`clear`](Group::clear) took out of `handles` and has not
    /// removed yet, the next one last. Still members until removed: they
    /// count against the limit and in `len`, so a value's `Drop` (or
    /// another thread) saving into the group while `clear` runs sees them.
    clearing: Vec<u64>,
    /// Handles a `clear` took from `clearing` and is removing now (one
    /// per clear running): members while still live, or a save on another
    /// thread could pass the limit in that moment.
    removing: Vec<u64>,
    /// Prune handles freed by C when `handles` reaches this length.
    next_prune: usize,
}

impl Members {
    /// Every member: saved and not yet removed by a `clear`.
    fn all(&self) -> impl Iterator<Item = u64> + '_ {
        let queued = self.clearing.iter().chain(&self.removing);
        self.handles.iter().chain(queued).copied()
    }
}

impl Registry {
    /// A new, empty [`Group`] of handles in this registry, without a
    /// capacity limit.
    ///
    /// ```
    /// let r = handle_registry::Registry::new();
    /// let g = r.group();
    /// let _ = g.save(1u8);
    /// drop(g); // clears
    /// assert!(r.is_empty());
    /// ```
    pub fn group(&self) -> Group<'_> {
        Group {
            registry: self,
            state: Mutex::new(Members {
                handles: Vec::new(),
                clearing: Vec::new(),
                removing: Vec::new(),
                next_prune: 16,
            }),
            limit: None,
        }
    }
}

impl<'r> Group<'r> {
    /// This group, with at most `limit` live handles at once.
    ///
    /// ```
    /// use handle_registry::Error;
    ///
    /// let r = handle_registry::Registry::new();
    /// let g = r.group().with_limit(1);
    /// let _ = g.save(1u8);
    /// assert_eq!(g.try_save(2u8).err().map(|(e, v)| (e, v)), Some((Error::Full, 2u8)));
    /// ```
    pub fn with_limit(mut self, limit: usize) -> Group<'r> {
        self.limit = Some(limit);
        self
    }

    /// Saves `value` in the registry as a member of this group and returns
    /// its handle (an ordinary one: restore, retain and unref it as any).
    ///
    /// # Panics
    ///
    /// When the group is at its limit or the registry is full; the message
    /// names the types holding the most handles of the group
    /// ([`full_report`](Group::full_report)). The value is dropped first.
    ///
    /// ```
    /// let r = handle_registry::Registry::new();
    /// let g = r.group();
    /// let p = g.save(vec![1, 2]);
    /// assert_eq!(r.restore::<Vec<i32>>(p).unwrap().len(), 2);
    /// ```
    #[track_caller]
    pub fn save<T: Any + Send>(&self, value: T) -> *mut c_void {
        match self.try_save(value) {
            Ok(p) => p,
            Err((e, value)) => {
                drop(value);
                let report = self.full_report();
                let at_limit = self.limit.is_some_and(|l| self.len() >= l);
                if at_limit {
                    panic!("handle_registry: group is at its limit: {report}")
                } else {
                    panic!("handle_registry: {e}; group: {report}")
                }
            }
        }
    }

    /// Like [`save`](Group::save), but a full group (or registry) is
    /// [`Error::Full`] with the value given back.
    ///
    /// ```
    /// let r = handle_registry::Registry::new();
    /// let g = r.group().with_limit(2);
    /// assert!(g.try_save(1u8).is_ok());
    /// assert!(g.try_save(2u8).is_ok());
    /// assert!(g.try_save(3u8).is_err());
    /// g.clear();
    /// assert!(g.try_save(3u8).is_ok());
    /// ```
    #[track_caller]
    pub fn try_save<T: Any + Send>(&self, value: T) -> Result<*mut c_void, (Error, T)> {
        let mut members = self.state.lock();
        // A member being removed counts while it is live: between a clear
        // taking it and making it stale (its `Drop` then runs stale).
        let at_limit = |m: &Members| {
            let removing = m.removing.iter().filter(|&&h| self.is_live(h)).count();
            self.limit
                .is_some_and(|l| m.handles.len() + m.clearing.len() + removing >= l)
        };
        if members.handles.len() >= members.next_prune || at_limit(&members) {
            self.prune(&mut members);
        }
        if at_limit(&members) {
            return Err((Error::Full, value));
        }
        // Saving runs no user code: it is fine under the group's lock, and
        // keeps a concurrent save from passing the limit.
        let ptr = self.registry.try_save(value)?;
        members.handles.push(handle::from_ptr(ptr));
        Ok(ptr)
    }

    /// Whether the member `h` is still live (not freed by C or a `clear`).
    fn is_live(&self, h: u64) -> bool {
        self.registry.is_live(handle::to_ptr(h))
    }

    /// Forgets the members C already freed.
    fn prune(&self, members: &mut Members) {
        members.handles.retain(|&h| self.is_live(h));
        members.clearing.retain(|&h| self.is_live(h));
        members.next_prune = (members.handles.len() * 2).max(16);
    }

    /// How many of the group's handles are live (saved through it and not
    /// yet freed, by [`clear`](Group::clear) or by anyone's `unref`/`take`).
    ///
    /// ```
    /// let r = handle_registry::Registry::new();
    /// let g = r.group();
    /// let p = g.save(1u8);
    /// let _q = g.save(2u8);
    /// r.unref(p).unwrap(); // a destroy-notify from C
    /// assert_eq!(g.len(), 1);
    /// ```
    pub fn len(&self) -> usize {
        let members = self.state.lock();
        members.all().filter(|&h| self.is_live(h)).count()
    }

    /// Whether none of the group's handles is live.
    ///
    /// ```
    /// let r = handle_registry::Registry::new();
    /// assert!(r.group().is_empty());
    /// ```
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Removes every handle that was a live member when it started (see
    /// the [module notes](crate::kinds::group), also for handles saved
    /// into the group meanwhile) and returns how many it removed. The
    /// group stays usable.
    ///
    /// If values' `Drop` panic, every handle is still removed, and the
    /// first panic is resumed after.
    ///
    /// ```
    /// let r = handle_registry::Registry::new();
    /// let g = r.group();
    /// let p = g.save(String::from("a"));
    /// let guard = r.restore::<String>(p).unwrap();
    /// assert_eq!(g.clear(), 1); // stale at once; dropped with the guard
    /// assert_eq!(*guard, "a");
    /// drop(guard);
    /// assert!(r.is_empty());
    /// ```
    pub fn clear(&self) -> usize {
        // Move the list to `clearing`, then remove one handle at a time
        // with no lock held: values' `Drop` (user code) may use the group.
        // A clear that starts meanwhile (from such a `Drop`, or another
        // thread) queues its handles behind these and shares the work, so
        // each returns only once every handle it took is removed or being
        // removed by another clear.
        {
            let mut members = self.state.lock();
            let taken = std::mem::take(&mut members.handles);
            members.clearing.splice(0..0, taken.into_iter().rev());
        }
        let next = || {
            let mut members = self.state.lock();
            let h = members.clearing.pop()?;
            members.removing.push(h);
            Some(h)
        };
        let done = |h| {
            let mut members = self.state.lock();
            if let Some(at) = members.removing.iter().position(|&r| r == h) {
                members.removing.swap_remove(at);
            }
        };
        let mut removed = 0;
        let mut panic = None;
        while let Some(h) = next() {
            let unref = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                self.registry.unref_with(handle::to_ptr(h), true)
            }));
            done(h);
            match unref {
                Ok(Ok(())) => removed += 1,
                Ok(Err(_)) => {} // C freed it already
                Err(payload) => {
                    removed += 1;
                    crate::panic::keep_first(&mut panic, payload);
                }
            }
        }
        if let Some(payload) = panic {
            crate::panic::resume_unless_unwinding(payload);
        }
        removed
    }

    /// The group's live handles counted by type, most first: what fills
    /// it. [`save`](Group::save)'s panic message on a full group is this.
    ///
    /// ```
    /// let r = handle_registry::Registry::new();
    /// let g = r.group();
    /// for i in 0..3 {
    ///     let _ = g.save(i as u64);
    /// }
    /// let _ = g.save("x");
    /// let report = g.full_report();
    /// assert_eq!(report.top()[0], ("u64", 3));
    /// assert!(report.to_string().contains("3 x u64"));
    /// ```
    pub fn full_report(&self) -> GroupReport {
        let mut members: Vec<u64> = self.state.lock().all().collect();
        members.sort_unstable();
        let mut by_type: BTreeMap<&'static str, usize> = BTreeMap::new();
        for entry in self.registry.leak_report().entries() {
            if members
                .binary_search(&handle::from_ptr(entry.handle()))
                .is_ok()
            {
                *by_type.entry(entry.type_name()).or_default() += 1;
            }
        }
        let mut top: Vec<(&'static str, usize)> = by_type.into_iter().collect();
        top.sort_by_key(|&(name, n)| (std::cmp::Reverse(n), name));
        GroupReport {
            top,
            limit: self.limit,
        }
    }
}

impl Drop for Group<'_> {
    fn drop(&mut self) {
        self.clear();
    }
}

impl fmt::Debug for Group<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Group")
            .field("len", &self.len())
            .field("limit", &self.limit)
            .finish()
    }
}

/// What holds a group's handles: see [`Group::full_report`].
///
/// ```
/// let r = handle_registry::Registry::new();
/// let g = r.group().with_limit(4);
/// let _ = g.save(1u8);
/// assert_eq!(g.full_report().to_string(), "1 live handle(s) of at most 4: 1 x u8");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupReport {
    top: Vec<(&'static str, usize)>,
    limit: Option<usize>,
}

impl GroupReport {
    /// Type names and live handle counts, most first.
    ///
    /// ```
    /// let r = handle_registry::Registry::new();
    /// let g = r.group();
    /// assert!(g.full_report().top().is_empty());
    /// ```
    pub fn top(&self) -> &[(&'static str, usize)] {
        &self.top
    }
}

impl fmt::Display for GroupReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let total: usize = self.top.iter().map(|&(_, n)| n).sum();
        write!(f, "{total} live handle(s)")?;
        if let Some(limit) = self.limit {
            write!(f, " of at most {limit}")?;
        }
        for (i, (name, n)) in self.top.iter().take(5).enumerate() {
            write!(f, "{}{n} x {name}", if i == 0 { ": " } else { ", " })?;
        }
        if self.top.len() > 5 {
            write!(f, ", ...")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    struct Tracked(Arc<AtomicUsize>);
    impl Drop for Tracked {
        fn drop(&mut self) {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }

    #[test]
    fn clear_drops_each_once_and_every_handle_goes_stale() {
        let r = Registry::new();
        let drops = Arc::new(AtomicUsize::new(0));
        let g = r.group();
        let ps: Vec<_> = (0..10).map(|_| g.save(Tracked(drops.clone()))).collect();
        r.unref(ps[3]).unwrap(); // C freed one
        r.retain(ps[4]).unwrap(); // C holds two references to another
        let guard = r.restore_ref::<Tracked>(ps[5]).unwrap();
        assert_eq!(g.len(), 9);
        assert_eq!(g.clear(), 9);
        assert_eq!(drops.load(Ordering::Relaxed), 9);
        for &p in &ps {
            assert_eq!(r.unref(p), Err(Error::Stale));
        }
        drop(guard);
        assert_eq!(drops.load(Ordering::Relaxed), 10);
        assert!(r.is_empty());
        assert!(r.counts_is_empty());
        assert_eq!(g.clear(), 0);
        drop(g);
        assert_eq!(drops.load(Ordering::Relaxed), 10);
    }

    #[test]
    fn limit_counts_live_members_only() {
        let r = Registry::new();
        let g = r.group().with_limit(3);
        let ps: Vec<_> = (0..3).map(|i| g.save(i as u8)).collect();
        let (e, v) = g.try_save(String::from("no room")).unwrap_err();
        assert_eq!((e, v.as_str()), (Error::Full, "no room"));
        r.unref(ps[0]).unwrap();
        assert!(g.try_save(9u8).is_ok());
        assert_eq!(g.len(), 3);
        // Other saves in the registry do not count.
        let outside = r.save(0u8);
        assert!(g.try_save(1u8).is_err());
        r.unref(outside).unwrap();
    }

    #[test]
    fn members_a_clear_has_not_reached_still_count_against_the_limit() {
        // The first member's `Drop` runs inside `clear` and saves into the
        // group: the second member, not removed yet, is still live and
        // must count, or the group would hold three under a limit of two.
        use std::sync::OnceLock;
        static R: OnceLock<Registry> = OnceLock::new();
        static G: OnceLock<Group<'static>> = OnceLock::new();
        static SEEN: std::sync::Mutex<Vec<(bool, bool, usize, usize)>> =
            std::sync::Mutex::new(Vec::new());
        struct SavesWhenDropped;
        impl Drop for SavesWhenDropped {
            fn drop(&mut self) {
                let g = G.get().unwrap();
                let (a, b) = (g.try_save(0u8).is_ok(), g.try_save(1u8).is_ok());
                SEEN.lock()
                    .unwrap()
                    .push((a, b, g.len(), R.get().unwrap().len()));
            }
        }
        let r = R.get_or_init(Registry::new);
        let g = G.get_or_init(|| r.group().with_limit(2));
        let first = g.save(SavesWhenDropped);
        let _second = g.save(String::from("second"));
        assert_eq!(
            g.clear(),
            2,
            "the two it took (the re-entrant save is newer)"
        );
        // In the `Drop`: the second member and one new save make two.
        assert_eq!(*SEEN.lock().unwrap(), [(true, false, 2, 2)]);
        assert_eq!(
            r.restore::<SavesWhenDropped>(first).err(),
            Some(Error::Stale)
        );
        assert_eq!(
            (g.len(), r.len()),
            (1, 1),
            "the save made during the clear stays"
        );
        assert_eq!(g.clear(), 1);
        assert!(r.is_empty());
    }

    #[test]
    fn a_clear_started_from_a_members_drop_finishes_the_outer_clears_work() {
        use std::sync::OnceLock;
        static R: OnceLock<Registry> = OnceLock::new();
        static G: OnceLock<Group<'static>> = OnceLock::new();
        struct ClearsWhenDropped(Arc<AtomicUsize>);
        impl Drop for ClearsWhenDropped {
            fn drop(&mut self) {
                self.0.fetch_add(1, Ordering::Relaxed);
                G.get().unwrap().clear();
            }
        }
        let r = R.get_or_init(Registry::new);
        let g = G.get_or_init(|| r.group());
        let drops = Arc::new(AtomicUsize::new(0));
        for _ in 0..3 {
            let _ = g.save(ClearsWhenDropped(drops.clone()));
            let _ = g.save(Tracked(drops.clone()));
        }
        // The first member's `Drop` clears the rest: the outer `clear`
        // finds nothing left, and every value is dropped exactly once.
        assert_eq!(g.clear(), 1);
        assert_eq!(drops.load(Ordering::Relaxed), 6);
        assert!(r.is_empty() && g.is_empty());
    }

    #[test]
    fn a_member_being_removed_still_counts_against_the_limit() {
        // Another thread's `clear` has taken a member off its queue and
        // not yet made it stale: a save here must still see it. (Found
        // with 2 000 000 rounds: limit 1, two live values 4 188 times.)
        use std::sync::atomic::AtomicBool;
        let r = Registry::new();
        let g = r.group().with_limit(1);
        let rounds = if cfg!(miri) { 50 } else { 300_000 };
        let (stop, over) = (AtomicBool::new(false), AtomicUsize::new(0));
        std::thread::scope(|s| {
            s.spawn(|| {
                for _ in 0..rounds {
                    let _ = g.try_save(1u8);
                    g.clear();
                }
                stop.store(true, Ordering::SeqCst);
            });
            s.spawn(|| {
                while !stop.load(Ordering::SeqCst) {
                    if let Ok(p) = g.try_save(2u8) {
                        // Only this group's values live in `r`.
                        if r.len() > 1 {
                            over.fetch_add(1, Ordering::SeqCst);
                        }
                        let _ = r.unref(p);
                    }
                }
            });
        });
        assert_eq!(over.load(Ordering::SeqCst), 0);
        g.clear();
        assert!(r.is_empty());
    }

    #[test]
    fn a_full_groups_panic_names_the_top_types() {
        let r = Registry::new();
        let g = r.group().with_limit(3);
        let _ = g.save(1u16);
        let _ = g.save(2u16);
        let _ = g.save('c');
        let msg =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| g.save(0u8))).unwrap_err();
        let msg = crate::panic::message(&*msg).unwrap().to_string();
        assert!(msg.contains("group is at its limit"), "{msg}");
        assert!(msg.contains("2 x u16, 1 x char"), "{msg}");
    }

    #[test]
    fn list_is_pruned_as_c_frees_members() {
        let r = Registry::new();
        let g = r.group();
        for i in 0..200u32 {
            let p = g.save(i);
            r.unref(p).unwrap();
        }
        assert!(g.state.lock().handles.len() <= 32);
        assert!(g.is_empty());
    }

    #[test]
    fn groups_are_kept_apart_and_usable_from_threads() {
        let r = Registry::new();
        let a = r.group();
        let b = r.group();
        let n = if cfg!(miri) { 4 } else { 100 };
        std::thread::scope(|s| {
            for _ in 0..2 {
                s.spawn(|| {
                    for i in 0..n {
                        let _ = a.save(i);
                        let _ = b.save(i as u8);
                    }
                });
            }
        });
        assert_eq!(a.len(), 2 * n);
        assert_eq!(a.clear(), 2 * n);
        assert_eq!(b.len(), 2 * n);
        assert_eq!(r.len(), 2 * n);
        drop(b);
        assert!(r.is_empty());
    }

    #[test]
    fn a_panicking_drop_still_clears_the_rest() {
        struct Boom;
        impl Drop for Boom {
            fn drop(&mut self) {
                panic!("boom");
            }
        }
        let r = Registry::new();
        let g = r.group();
        let _ = g.save(Boom);
        let p = g.save(1u8);
        let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| g.clear()));
        assert!(caught.is_err());
        assert_eq!(r.unref(p), Err(Error::Stale));
        assert!(r.is_empty());
    }

    #[test]
    fn payloads_that_panic_when_dropped_never_abort_a_clear() {
        // The second panic's payload used to be dropped unguarded: its
        // panic unwound past the first payload, whose drop then aborted.
        use crate::panic::tests::NestedPanic;
        let r = Registry::new();
        let g = r.group();
        let _ = g.save(NestedPanic(2));
        let _ = g.save(NestedPanic(2));
        let p = g.save(1u8);
        let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| g.clear()));
        // The first panic is resumed; dropping its payload here panics
        // again, outside any unwind: caught too.
        let again = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| drop(caught)));
        assert!(again.is_err());
        assert_eq!(r.unref(p), Err(Error::Stale));
        assert!(r.is_empty());
    }
}
