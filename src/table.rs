//! One shard of a registry: a `slab` of cells, and each slot's generation.
//!
//! A registry is [`SHARDS`] of these, each behind its own lock and on its
//! own cache line, so that threads working on different handles do not
//! fight over one lock word. The low bits of a handle's index pick the
//! shard (see [`handle`](crate::handle)); successive saves on one thread
//! go round the shards, so even handles saved by one thread spread out.

use std::any::Any;
use std::ptr::NonNull;

use parking_lot::RwLock;
use slab::Slab;

use crate::cell::{self, Header};
use crate::handle::{Decoded, Layout};
use crate::Error;

const LAYOUT: Layout = Layout::NATIVE;

/// Shards per registry: a power of two, so the shard is the index's low bits.
pub(crate) const SHARDS: usize = 16;

/// A table on a cache line of its own (128 bytes covers adjacent-line
/// prefetching on x86 as well).
#[repr(align(128))]
pub(crate) struct Shard(pub RwLock<Table>);

/// One slab entry.
pub(crate) enum Slot {
    Live(NonNull<Header>),
    /// Its generation is exhausted; never reused (see [`handle`](crate::handle)).
    Retired,
}

pub(crate) struct Table {
    slots: Slab<Slot>,
    /// Per slot: the generation of its current value, or of the next one
    /// when it is vacant. Kept beside the slab because a vacant slab entry
    /// cannot remember it.
    generations: Vec<u32>,
    retired: usize,
    /// Where new slots start counting (non-zero for a reused registry id).
    base: u32,
}

/// Where a decoded handle points.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Place {
    pub shard: usize,
    pub slot: usize,
    pub generation: u32,
}

impl Place {
    pub fn of(decoded: Decoded) -> Place {
        Place {
            shard: decoded.index % SHARDS,
            slot: decoded.index / SHARDS,
            generation: decoded.generation,
        }
    }

    /// The handle index of `slot` in shard `shard`.
    pub fn index(shard: usize, slot: usize) -> usize {
        slot * SHARDS + shard
    }
}

impl Table {
    pub fn new(base: u32) -> Table {
        Table {
            slots: Slab::new(),
            generations: Vec::new(),
            retired: 0,
            base,
        }
    }

    /// Stores `cell` in shard number `shard`; returns its handle index and
    /// generation, or `None` when the shard has no index left.
    pub fn insert(&mut self, cell: NonNull<Header>, shard: usize) -> Option<(usize, u32)> {
        let slot = self.slots.vacant_key();
        let index = Place::index(shard, slot);
        if index > LAYOUT.max_index() {
            return None;
        }
        self.slots.insert(Slot::Live(cell));
        if slot == self.generations.len() {
            self.generations.push(self.base);
        }
        Some((index, self.generations[slot]))
    }

    /// The live cell at `place`, whatever its type.
    #[inline]
    pub fn find_any(&self, place: Place) -> Result<NonNull<Header>, Error> {
        let current = *self.generations.get(place.slot).ok_or(Error::Invalid)?;
        if place.generation < current {
            return Err(Error::Stale);
        }
        if place.generation > current {
            return Err(Error::Invalid);
        }
        match self.slots.get(place.slot) {
            Some(Slot::Live(cell)) => Ok(*cell),
            // Its last generation was issued, then freed.
            Some(Slot::Retired) => Err(Error::Stale),
            // The generation of a value not saved yet.
            None => Err(Error::Invalid),
        }
    }

    /// The live cell at `place`, checked to hold a `T`.
    #[inline]
    pub fn find<T: Any>(&self, place: Place) -> Result<NonNull<Header>, Error> {
        let cell = self.find_any(place)?;
        // SAFETY: the cell is in the slab and the caller holds our lock.
        let header = unsafe { cell::header(cell) };
        if header.holds::<T>() {
            Ok(cell)
        } else {
            Err(Error::WrongType {
                expected: std::any::type_name::<T>(),
                found: (header.vtable.type_name)(),
            })
        }
    }

    /// Empties `slot`, moving its generation on or retiring it.
    pub fn remove(&mut self, slot: usize) {
        if self.generations[slot] == LAYOUT.max_generation() {
            self.slots[slot] = Slot::Retired;
            self.retired += 1;
        } else {
            self.slots.remove(slot);
            self.generations[slot] += 1;
        }
    }

    /// How many values are live.
    pub fn live(&self) -> usize {
        self.slots.len() - self.retired
    }

    /// Every live cell with its slot and generation.
    pub fn cells(&self) -> impl Iterator<Item = (usize, u32, NonNull<Header>)> + '_ {
        self.slots.iter().filter_map(|(slot, entry)| match entry {
            Slot::Live(cell) => Some((slot, self.generations[slot], *cell)),
            Slot::Retired => None,
        })
    }

    /// Takes every live cell out, for the registry's drop.
    pub fn drain(&mut self) -> impl Iterator<Item = NonNull<Header>> {
        std::mem::take(&mut self.slots)
            .into_iter()
            .filter_map(|(_, entry)| match entry {
                Slot::Live(cell) => Some(cell),
                Slot::Retired => None,
            })
    }

    /// The first generation no handle of this table ever had.
    pub fn next_base(&self) -> u64 {
        let newest = self.generations.iter().max().map(|&g| u64::from(g) + 1);
        newest.unwrap_or(0).max(u64::from(self.base))
    }

    #[cfg(test)]
    pub fn set_generation(&mut self, slot: usize, generation: u32) {
        self.generations[slot] = generation;
    }
}
