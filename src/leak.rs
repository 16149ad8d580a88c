//! Finding handles that were never released.
//!
//! Every slot remembers its type and where it was saved (`#[track_caller]`),
//! so a test or a shutdown hook can list what is still live and point at
//! the line that leaked it.

use std::ffi::c_void;
use std::fmt;
use std::panic::Location;

use crate::handle::{self, Layout};
use crate::slot::{self, LIVE};
use crate::sync::atomic::{fence, Ordering};
use crate::Registry;

impl Registry {
    /// Every live value's handle, type and save site: what a test or a
    /// shutdown hook prints to find handles that were never released.
    ///
    /// A value unreffed while a guard of it was leaked with `mem::forget`
    /// is not listed (nor counted by [`len`](Registry::len)): its handle
    /// is no longer live, though the value is dropped only with the
    /// registry (see README, "Threads and re-entrancy").
    ///
    /// ```
    /// let r = handle_registry::Registry::new();
    /// let p = r.save(3.5f64);
    /// let report = r.leak_report();
    /// assert_eq!(report.entries().len(), 1);
    /// assert_eq!(report.entries()[0].type_name(), "f64");
    /// assert!(report.to_string().contains("f64"));
    /// # r.unref(p).unwrap();
    /// ```
    pub fn leak_report(&self) -> LeakReport {
        let mut entries = Vec::new();
        for (index, slot) in self.pages().slots() {
            let word = slot.state.load(Ordering::Acquire);
            if word & LIVE == 0 {
                continue;
            }
            let (vtable, site) = (slot.vtable(), slot.site());
            // A seqlock read: keep the entry only if the slot still holds
            // the same value.
            fence(Ordering::Acquire);
            // (A retain's `COUNTED` does not change the value either.)
            let same = !(slot::BORROW_BITS | slot::COUNTED);
            if slot.state.load(Ordering::Relaxed) & same != word & same {
                continue;
            }
            if let (Some(vtable), Some(site)) = (vtable, site) {
                let generation = slot::generation(word);
                entries.push(LiveEntry {
                    handle: Layout::NATIVE.encode(index, self.id(), generation) as usize,
                    type_name: (vtable.type_name)(),
                    site,
                });
            }
        }
        LeakReport { entries }
    }
}

/// One live value, as listed by [`Registry::leak_report`].
///
/// ```
/// let r = handle_registry::Registry::new();
/// let p = r.save(1i32);
/// let entry = r.leak_report().entries()[0];
/// assert_eq!(entry.handle(), p);
/// assert_eq!(entry.site().file(), file!());
/// # r.unref(p).unwrap();
/// ```
#[derive(Debug, Clone, Copy)]
pub struct LiveEntry {
    handle: usize,
    type_name: &'static str,
    site: &'static Location<'static>,
}

impl LiveEntry {
    /// The handle, as C sees it.
    ///
    /// ```
    /// let r = handle_registry::Registry::new();
    /// let p = r.save('x');
    /// assert_eq!(r.leak_report().entries()[0].handle(), p);
    /// # r.unref(p).unwrap();
    /// ```
    pub fn handle(&self) -> *mut c_void {
        handle::to_ptr(self.handle as u64)
    }

    /// The saved value's type, as [`std::any::type_name`] spells it;
    /// wrapped in the crate's record type for weak, local and scope
    /// handles (`…::WeakRecord<T>`, `…::LocalRecord<T>`, `…::Scoped<S>`,
    /// `…::SharedScoped<S>`).
    ///
    /// ```
    /// let r = handle_registry::Registry::new();
    /// let p = r.save(0u16);
    /// assert_eq!(r.leak_report().entries()[0].type_name(), "u16");
    /// # r.unref(p).unwrap();
    /// ```
    pub fn type_name(&self) -> &'static str {
        self.type_name
    }

    /// Where the value was saved (`#[track_caller]`).
    ///
    /// ```
    /// let r = handle_registry::Registry::new();
    /// let line = line!() + 1;
    /// let p = r.save(0u16);
    /// assert_eq!(r.leak_report().entries()[0].site().line(), line);
    /// # r.unref(p).unwrap();
    /// ```
    pub fn site(&self) -> &'static Location<'static> {
        self.site
    }
}

impl fmt::Display for LiveEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:#x}: {} saved at {}",
            self.handle, self.type_name, self.site
        )
    }
}

/// The values still live in a registry. `Display` prints one line per type
/// and save site, with a count, so that a leak of many handles from one
/// place reads as one line.
///
/// ```
/// let r = handle_registry::Registry::new();
/// assert!(r.leak_report().is_empty());
/// let p = r.save(vec![0u8; 4]);
/// let text = r.leak_report().to_string();
/// assert!(text.starts_with("1 live handle"));
/// let vec = std::any::type_name::<Vec<u8>>(); // "alloc::vec::Vec<u8>" today
/// assert!(text.contains(&format!("{vec} saved at ")));
/// # r.unref(p).unwrap();
/// ```
#[derive(Debug, Clone)]
pub struct LeakReport {
    entries: Vec<LiveEntry>,
}

impl LeakReport {
    /// The live entries, in handle-index order.
    ///
    /// ```
    /// let r = handle_registry::Registry::new();
    /// let (a, b) = (r.save(1u8), r.save(2u8));
    /// assert_eq!(r.leak_report().entries().len(), 2);
    /// # r.unref(a).unwrap(); r.unref(b).unwrap();
    /// ```
    pub fn entries(&self) -> &[LiveEntry] {
        &self.entries
    }

    /// The live values grouped by type and save site, largest group first.
    ///
    /// ```
    /// let r = handle_registry::Registry::new();
    /// let handles: Vec<_> = (0..1000).map(|i| r.save(i)).collect();
    /// let one = r.save("odd one out");
    /// let groups = r.leak_report().groups();
    /// assert_eq!(groups.len(), 2);
    /// assert_eq!((groups[0].count(), groups[0].type_name()), (1000, "i32"));
    /// assert_eq!(groups[1].count(), 1);
    /// # for p in handles { r.unref(p).unwrap(); } r.unref(one).unwrap();
    /// ```
    pub fn groups(&self) -> Vec<LeakGroup> {
        let mut groups: Vec<LeakGroup> = Vec::new();
        for entry in &self.entries {
            // By value: one call site need not give one `Location`
            // address (under Miri each call makes its own).
            let same =
                |g: &&mut LeakGroup| g.type_name == entry.type_name && *g.site == *entry.site;
            match groups.iter_mut().find(same) {
                Some(group) => group.count += 1,
                None => groups.push(LeakGroup {
                    type_name: entry.type_name,
                    site: entry.site,
                    count: 1,
                }),
            }
        }
        groups.sort_by_key(|g| std::cmp::Reverse(g.count));
        groups
    }

    /// Whether nothing is live.
    ///
    /// ```
    /// assert!(handle_registry::Registry::new().leak_report().is_empty());
    /// ```
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

impl fmt::Display for LeakReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.entries.len();
        writeln!(f, "{n} live handle{}", if n == 1 { "" } else { "s" })?;
        for group in self.groups() {
            writeln!(f, "  {group}")?;
        }
        Ok(())
    }
}

/// Live values of one type saved at one place, as
/// [`LeakReport::groups`] lists them.
///
/// ```
/// let r = handle_registry::Registry::new();
/// let (a, b) = (r.save(1u8), r.save(2u8)); // two save sites
/// let groups = r.leak_report().groups();
/// assert_eq!(groups.len(), 2);
/// assert!(groups[0].to_string().starts_with("1 × u8 saved at "));
/// # r.unref(a).unwrap(); r.unref(b).unwrap();
/// ```
#[derive(Debug, Clone, Copy)]
pub struct LeakGroup {
    type_name: &'static str,
    site: &'static Location<'static>,
    count: usize,
}

impl LeakGroup {
    /// The values' type.
    ///
    /// ```
    /// let r = handle_registry::Registry::new();
    /// let p = r.save(1u64);
    /// assert_eq!(r.leak_report().groups()[0].type_name(), "u64");
    /// # r.unref(p).unwrap();
    /// ```
    pub fn type_name(&self) -> &'static str {
        self.type_name
    }

    /// Where they were saved.
    ///
    /// ```
    /// let r = handle_registry::Registry::new();
    /// let p = r.save(1u64);
    /// assert_eq!(r.leak_report().groups()[0].site().file(), file!());
    /// # r.unref(p).unwrap();
    /// ```
    pub fn site(&self) -> &'static Location<'static> {
        self.site
    }

    /// How many are live.
    ///
    /// ```
    /// let r = handle_registry::Registry::new();
    /// let ps: Vec<_> = (0..3).map(|_| r.save(())).collect();
    /// assert_eq!(r.leak_report().groups()[0].count(), 3);
    /// # for p in ps { r.unref(p).unwrap(); }
    /// ```
    pub fn count(&self) -> usize {
        self.count
    }
}

impl fmt::Display for LeakGroup {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} × {} saved at {}",
            self.count, self.type_name, self.site
        )
    }
}
