//! Property test: random sequences of operations on two registries,
//! checked step by step against a plain model (a list of what was issued
//! and what each handle should hold now).
//!
//! Forged integers, NULL, stale handles, wrong types and handles of the
//! other registry are all in the mix. Pure Rust: runs under Miri too, with
//! fewer and shorter cases.
//!
//! The other kinds are in it too: `retain` (a reference count per handle),
//! weak handles (an `Arc` the model drops, then sweeps), and thread-affine
//! handles (restored here, and from another thread: `WrongThread`).

use std::cell::Cell;
use std::ffi::c_void;
use std::sync::Arc;

use handle_registry::{Error, Registry};
use proptest::prelude::*;

#[derive(Clone, Debug, PartialEq)]
enum Val {
    Num(u32),
    Text(String),
    /// A weak handle to an `Arc<u64>` holding this.
    Weak(u64),
    /// A local handle to a `Cell<u16>` holding this.
    Local(u16),
}

/// The name a `WrongType` gives for a record type the crate keeps private.
const PRIVATE: &str = "(private record)";

impl Val {
    fn type_name(&self) -> &'static str {
        match self {
            Val::Num(_) => std::any::type_name::<u32>(),
            Val::Text(_) => std::any::type_name::<String>(),
            Val::Weak(_) | Val::Local(_) => PRIVATE,
        }
    }
}

/// `got == want`, where a `WrongType` whose model name is [`PRIVATE`]
/// matches any `found` name.
fn same<T: PartialEq>(got: &Result<T, Error>, want: &Result<T, Error>) -> bool {
    match (got, want) {
        (
            Err(Error::WrongType { expected: a, .. }),
            Err(Error::WrongType {
                expected: b,
                found: PRIVATE,
            }),
        ) => a == b,
        _ => got == want,
    }
}

#[derive(Clone, Copy, Debug)]
enum Kind {
    Num,
    Text,
}

#[derive(Clone, Debug)]
enum Op {
    Save(usize, Val),
    Restore(usize, usize, Kind),
    RestoreRef(usize, usize, Kind),
    Take(usize, usize, Kind),
    Unref(usize, usize),
    /// Restore a real handle with one bit flipped.
    BitFlip(usize, usize, u8),
    /// Restore an arbitrary integer.
    Forged(usize, u64),
    Retain(usize, usize),
    SaveWeak(usize, u64),
    RestoreWeak(usize, usize),
    /// Drop the model's `Arc` of a weak handle, then sweep its registry.
    DropStrong(usize),
    SaveLocal(usize, u16),
    RestoreLocal(usize, usize),
    /// `restore_local` from another thread: `WrongThread` when live.
    RestoreLocalElsewhere(usize, usize),
}

fn val() -> impl Strategy<Value = Val> {
    prop_oneof![
        any::<u32>().prop_map(Val::Num),
        "[a-z]{0,4}".prop_map(Val::Text)
    ]
}

fn kind() -> impl Strategy<Value = Kind> {
    prop_oneof![Just(Kind::Num), Just(Kind::Text)]
}

fn op() -> impl Strategy<Value = Op> {
    let reg = 0..2usize;
    let pick = any::<usize>();
    prop_oneof![
        3 => (reg.clone(), val()).prop_map(|(r, v)| Op::Save(r, v)),
        3 => (pick, reg.clone(), kind()).prop_map(|(p, r, k)| Op::Restore(p, r, k)),
        1 => (pick, reg.clone(), kind()).prop_map(|(p, r, k)| Op::RestoreRef(p, r, k)),
        2 => (pick, reg.clone(), kind()).prop_map(|(p, r, k)| Op::Take(p, r, k)),
        2 => (pick, reg.clone()).prop_map(|(p, r)| Op::Unref(p, r)),
        1 => (pick, reg.clone(), 0..64u8).prop_map(|(p, r, b)| Op::BitFlip(p, r, b)),
        1 => (reg.clone(), prop_oneof![Just(0u64), any::<u64>(), 0..4096u64])
            .prop_map(|(r, raw)| Op::Forged(r, raw)),
        2 => (pick, reg.clone()).prop_map(|(p, r)| Op::Retain(p, r)),
        1 => (reg.clone(), any::<u64>()).prop_map(|(r, v)| Op::SaveWeak(r, v)),
        1 => (pick, reg.clone()).prop_map(|(p, r)| Op::RestoreWeak(p, r)),
        1 => pick.prop_map(Op::DropStrong),
        1 => (reg.clone(), any::<u16>()).prop_map(|(r, v)| Op::SaveLocal(r, v)),
        1 => (pick, reg.clone()).prop_map(|(p, r)| Op::RestoreLocal(p, r)),
        1 => (pick, reg).prop_map(|(p, r)| Op::RestoreLocalElsewhere(p, r)),
    ]
}

/// What the model knows about one issued handle.
struct Issued {
    ptr: *mut c_void,
    registry: usize,
    value: Option<Val>,
    /// References out: 1, plus one per successful retain.
    refs: usize,
    /// A weak handle's object, while the model keeps it alive.
    strong: Option<Arc<u64>>,
}

struct World {
    registries: [Registry; 2],
    issued: Vec<Issued>,
}

impl World {
    fn new() -> World {
        World {
            registries: [Registry::new(), Registry::new()],
            issued: Vec::new(),
        }
    }

    /// The model's answer for a lookup of issued handle `i` in `reg`.
    fn expect(&self, i: usize, reg: usize, kind: Option<Kind>) -> Result<&Val, Error> {
        let h = &self.issued[i];
        if h.registry != reg {
            return Err(Error::WrongRegistry);
        }
        let v = h.value.as_ref().ok_or(Error::Stale)?;
        let expected = match kind {
            None => return Ok(v),
            Some(Kind::Num) => std::any::type_name::<u32>(),
            Some(Kind::Text) => std::any::type_name::<String>(),
        };
        if expected != v.type_name() {
            return Err(Error::WrongType {
                expected,
                found: v.type_name(),
            });
        }
        Ok(v)
    }

    fn restore(&self, ptr: *mut c_void, reg: usize, kind: Kind) -> Result<Val, Error> {
        let r = &self.registries[reg];
        Ok(match kind {
            Kind::Num => Val::Num(*r.restore::<u32>(ptr)?),
            Kind::Text => Val::Text(r.restore::<String>(ptr)?.clone()),
        })
    }

    fn apply(&mut self, op: Op) -> Result<(), TestCaseError> {
        let n = self.issued.len();
        match op {
            Op::Save(reg, v) => {
                let ptr = match &v {
                    Val::Num(x) => self.registries[reg].save(*x),
                    Val::Text(s) => self.registries[reg].save(s.clone()),
                    Val::Weak(_) | Val::Local(_) => unreachable!("saved by their own ops"),
                };
                prop_assert!(!ptr.is_null());
                self.issue(ptr, reg, v, None)?;
            }
            Op::SaveWeak(reg, v) => {
                let strong = Arc::new(v);
                let ptr = self.registries[reg].save_weak(&strong);
                self.issue(ptr, reg, Val::Weak(v), Some(strong))?;
            }
            Op::SaveLocal(reg, v) => {
                let ptr = self.registries[reg].save_local(Cell::new(v));
                self.issue(ptr, reg, Val::Local(v), None)?;
            }
            Op::Retain(p, reg) if n > 0 => {
                let i = p % n;
                let want = self.expect(i, reg, None).map(drop);
                let got = self.registries[reg].retain(self.issued[i].ptr);
                prop_assert_eq!(got, want);
                if got.is_ok() {
                    self.issued[i].refs += 1;
                }
            }
            Op::RestoreWeak(p, reg) if n > 0 => {
                let i = p % n;
                let want = match self.expect(i, reg, None) {
                    Ok(Val::Weak(v)) => Ok(*v),
                    Ok(_) => Err(Error::WrongType {
                        expected: "",
                        found: "",
                    }),
                    Err(e) => Err(e),
                };
                let got = self.registries[reg]
                    .restore_weak::<u64>(self.issued[i].ptr)
                    .map(|a| *a);
                match want {
                    Err(Error::WrongType { .. }) => {
                        prop_assert!(matches!(got, Err(Error::WrongType { .. })), "{got:?}")
                    }
                    want => prop_assert_eq!(got, want),
                }
            }
            Op::DropStrong(p) if n > 0 => {
                let i = p % n;
                if self.issued[i].strong.take().is_some() {
                    let reg = self.issued[i].registry;
                    self.registries[reg].sweep_weak();
                    // Swept (whatever its count) unless already removed.
                    self.issued[i].value = None;
                }
            }
            Op::RestoreLocal(p, reg) if n > 0 => {
                let i = p % n;
                let want = match self.expect(i, reg, None) {
                    Ok(Val::Local(v)) => Ok(*v),
                    Ok(_) => Err(Error::WrongType {
                        expected: "",
                        found: "",
                    }),
                    Err(e) => Err(e),
                };
                let got = self.registries[reg]
                    .restore_local::<Cell<u16>>(self.issued[i].ptr)
                    .map(|c| {
                        let v = c.get();
                        c.set(v.wrapping_add(1));
                        v
                    });
                match want {
                    Err(Error::WrongType { .. }) => {
                        prop_assert!(matches!(got, Err(Error::WrongType { .. })), "{got:?}")
                    }
                    want => prop_assert_eq!(got, want),
                }
                if got.is_ok() {
                    if let Some(Val::Local(v)) = self.issued[i].value.as_mut() {
                        *v = v.wrapping_add(1);
                    }
                }
            }
            Op::RestoreLocalElsewhere(p, reg) if n > 0 => {
                let i = p % n;
                let want = match self.expect(i, reg, None) {
                    Ok(Val::Local(_)) => Err(Error::WrongThread),
                    Ok(_) => Err(Error::WrongType {
                        expected: "",
                        found: "",
                    }),
                    Err(e) => Err(e),
                };
                let r = &self.registries[reg];
                let h = self.issued[i].ptr.addr();
                let got = std::thread::scope(|s| {
                    s.spawn(|| {
                        r.restore_local::<Cell<u16>>(std::ptr::without_provenance_mut(h))
                            .map(|c| c.get())
                    })
                    .join()
                    .unwrap()
                });
                match want {
                    Err(Error::WrongType { .. }) => {
                        prop_assert!(matches!(got, Err(Error::WrongType { .. })), "{got:?}")
                    }
                    want => prop_assert_eq!(got, want),
                }
            }
            Op::Restore(p, reg, kind) if n > 0 => {
                let i = p % n;
                let want = self.expect(i, reg, Some(kind)).cloned();
                let r = &self.registries[reg];
                let ptr = self.issued[i].ptr;
                let got = match kind {
                    // Mutate through the guard so later steps check persistence.
                    Kind::Num => r.restore::<u32>(ptr).map(|mut g| {
                        *g = g.wrapping_add(1);
                        Val::Num(g.wrapping_sub(1))
                    }),
                    Kind::Text => r.restore::<String>(ptr).map(|mut g| {
                        let before = g.clone();
                        g.push('+');
                        Val::Text(before)
                    }),
                };
                prop_assert!(same(&got, &want), "{got:?} != {want:?}");
                if got.is_ok() {
                    match self.issued[i].value.as_mut() {
                        Some(Val::Num(x)) => *x = x.wrapping_add(1),
                        Some(Val::Text(s)) => s.push('+'),
                        _ => unreachable!(),
                    }
                }
            }
            Op::RestoreRef(p, reg, kind) if n > 0 => {
                let i = p % n;
                let want = self.expect(i, reg, Some(kind)).cloned();
                let r = &self.registries[reg];
                let ptr = self.issued[i].ptr;
                let got = match kind {
                    Kind::Num => r.restore_ref::<u32>(ptr).map(|g| Val::Num(*g)),
                    Kind::Text => r.restore_ref::<String>(ptr).map(|g| Val::Text(g.clone())),
                };
                prop_assert!(same(&got, &want), "{got:?} != {want:?}");
            }
            Op::Take(p, reg, kind) if n > 0 => {
                let i = p % n;
                let mut want = self.expect(i, reg, Some(kind)).cloned();
                if want.is_ok() && self.issued[i].refs > 1 {
                    want = Err(Error::Retained);
                }
                let r = &self.registries[reg];
                let ptr = self.issued[i].ptr;
                let got = match kind {
                    Kind::Num => r.take::<u32>(ptr).map(Val::Num),
                    Kind::Text => r.take::<String>(ptr).map(Val::Text),
                };
                prop_assert!(same(&got, &want), "{got:?} != {want:?}");
                if got.is_ok() {
                    self.issued[i].value = None;
                }
            }
            Op::Unref(p, reg) if n > 0 => {
                let i = p % n;
                let want = self.expect(i, reg, None).map(drop);
                let got = self.registries[reg].unref(self.issued[i].ptr);
                prop_assert_eq!(got, want);
                if got.is_ok() {
                    self.issued[i].refs -= 1;
                    if self.issued[i].refs == 0 {
                        self.issued[i].value = None;
                    }
                }
            }
            Op::BitFlip(p, reg, bit) if n > 0 => {
                let raw = self.issued[p % n].ptr as usize ^ (1usize << (bit as u32 % usize::BITS));
                self.check_forged(reg, raw)?;
            }
            Op::Forged(reg, raw) => self.check_forged(reg, raw as usize)?,
            // An op that needs a handle before any was issued.
            _ => {}
        }
        for (reg, r) in self.registries.iter().enumerate() {
            let live = self
                .issued
                .iter()
                .filter(|h| h.registry == reg && h.value.is_some())
                .count();
            prop_assert_eq!(r.len(), live);
        }
        Ok(())
    }

    fn issue(
        &mut self,
        ptr: *mut c_void,
        registry: usize,
        value: Val,
        strong: Option<Arc<u64>>,
    ) -> Result<(), TestCaseError> {
        prop_assert!(!ptr.is_null());
        prop_assert!(self.issued.iter().all(|h| h.ptr != ptr), "handle reissued");
        self.issued.push(Issued {
            ptr,
            registry,
            value: Some(value),
            refs: 1,
            strong,
        });
        Ok(())
    }

    /// A forged integer resolves only if it *is* an issued handle.
    fn check_forged(&self, reg: usize, raw: usize) -> Result<(), TestCaseError> {
        let ptr: *mut c_void = std::ptr::without_provenance_mut(raw);
        let got = self.restore(ptr, reg, Kind::Num);
        match self.issued.iter().position(|h| h.ptr == ptr) {
            Some(i) => {
                let want = self.expect(i, reg, Some(Kind::Num)).cloned();
                prop_assert!(same(&got, &want), "{got:?} != {want:?}");
            }
            None => {
                prop_assert!(got.is_err(), "forged {raw:#x} resolved");
                if raw == 0 {
                    prop_assert_eq!(got, Err(Error::Null));
                }
            }
        }
        Ok(())
    }
}

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: if cfg!(miri) { 4 } else { 256 },
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

const MAX_OPS: usize = if cfg!(miri) { 24 } else { 96 };

proptest! {
    #![proptest_config(config())]

    #[test]
    fn registries_behave_like_the_model(ops in proptest::collection::vec(op(), 1..MAX_OPS)) {
        let mut world = World::new();
        for op in ops {
            world.apply(op)?;
        }
        for (reg, r) in world.registries.iter().enumerate() {
            let live = world.issued.iter().filter(|h| h.registry == reg && h.value.is_some());
            let report = r.leak_report();
            prop_assert_eq!(report.entries().len(), live.clone().count());
            for h in live {
                prop_assert!(report.entries().iter().any(|e| e.handle() == h.ptr));
            }
        }
    }
}
