//! User stacks of stalls and throttling pauses, unwound from the samples
//! the kernel programs send (`tracer_common::ustack::StackSampleEvent`: at
//! most one per process and frame-pointer stack id a second). Their rows
//! are aggregated by that stack id; a row whose user stack has a sample
//! shows the unwound stack of its latest sample in place of the
//! frame-pointer walk, which ends after one frame in code built without
//! frame pointers.
//!
//! Samples are unwound as they arrive (the process may be gone by the
//! report) and kept per (process, stack id), the least recently sampled
//! forgotten first beyond a bound.
//!
//! Where frame pointers are missing, the kernel's walk of different call
//! paths can be the same (the innermost frame alone): such stalls share one
//! row, whose stack is the latest path sampled. How many different
//! unwound stacks were sampled under the row's id is counted and shown.

use std::collections::{BTreeMap, HashMap};

use tracer_common::ustack::StackSampleKey;

use super::stacks::{KERNEL_FRAME_POINTERS, UserStack};
use crate::model::Frame;

/// Process and stack id pairs whose unwound sample is kept: a few KiB
/// each (normalized frames), a few MiB at most.
pub const SAMPLES_KEPT: usize = 4096;
/// Different unwound stacks remembered per pair, to count them.
const VARIANTS_KEPT: usize = 16;

/// The latest unwound sample of each (process, user stack id).
#[derive(Debug)]
pub struct StackSamples {
    capacity: usize,
    entries: HashMap<StackSampleKey, Entry>,
    /// Keys by when they were last sampled (a sequence number), oldest
    /// first.
    order: BTreeMap<u64, StackSampleKey>,
    next: u64,
}

#[derive(Debug)]
struct Entry {
    seq: u64,
    stack: UserStack,
    /// The frames' addresses of the different stacks sampled under this
    /// key (at most [`VARIANTS_KEPT`]).
    variants: Vec<Vec<u64>>,
}

impl Default for StackSamples {
    fn default() -> Self {
        Self::new(SAMPLES_KEPT)
    }
}

impl StackSamples {
    pub fn new(capacity: usize) -> Self {
        Self { capacity: capacity.max(1), entries: HashMap::new(), order: BTreeMap::new(), next: 0 }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Keeps `stack`, unwound from a sample of `key`, as its latest;
    /// forgets the least recently sampled key when over the bound.
    pub fn insert(&mut self, key: StackSampleKey, stack: UserStack) {
        let seq = self.next;
        self.next += 1;
        let addrs: Vec<u64> = stack.frames.iter().filter(|f| f.truncated.is_none()).map(|f| f.addr).collect();
        let mut variants = match self.entries.remove(&key) {
            Some(old) => {
                self.order.remove(&old.seq);
                old.variants
            }
            None => Vec::new(),
        };
        if !variants.contains(&addrs) && variants.len() < VARIANTS_KEPT {
            variants.push(addrs);
        }
        self.entries.insert(key, Entry { seq, stack, variants });
        self.order.insert(seq, key);
        while self.entries.len() > self.capacity {
            let Some((_, oldest)) = self.order.pop_first() else { break };
            self.entries.remove(&oldest);
        }
    }

    /// Forgets the samples of processes that are gone (`alive` says which
    /// are not): for `watch`, whose interval reports no longer need them.
    pub fn forget_exited(&mut self, alive: impl Fn(u32) -> bool) {
        // Asked once per process.
        let mut living = HashMap::new();
        self.entries.retain(|key, _| *living.entry(key.tgid).or_insert_with(|| alive(key.tgid)));
        let entries = &self.entries;
        self.order.retain(|_, key| entries.contains_key(key));
    }

    /// The latest unwound sample of `key`.
    pub fn get(&self, key: &StackSampleKey) -> Option<&UserStack> {
        self.entries.get(key).map(|e| &e.stack)
    }

    /// A row's user stack: its latest sample's, with how it was unwound
    /// (and how many different stacks were sampled under its stack id,
    /// when more than one), else the kernel's frame-pointer walk
    /// (`frame_pointers`, called only then).
    pub fn user_stack_or(
        &self,
        key: &StackSampleKey,
        frame_pointers: impl FnOnce() -> Vec<Frame>,
    ) -> UserStack {
        if let Some(entry) = self.entries.get(key) {
            let mut stack = entry.stack.clone();
            let n = entry.variants.len();
            if n > 1 {
                let more = if n == VARIANTS_KEPT { "or more " } else { "" };
                stack.unwind = stack.unwind.map(|how| {
                    format!(
                        "{how}, latest of {n} {more}different stacks sampled under one frame-pointer walk"
                    )
                });
            }
            return stack;
        }
        let frames = frame_pointers();
        let unwind = (!frames.is_empty()).then(|| KERNEL_FRAME_POINTERS.to_string());
        UserStack { frames, unwind }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(tgid: u32, user_stack: i32) -> StackSampleKey {
        StackSampleKey { tgid, user_stack }
    }

    /// A stack unwound from a sample: its functions, innermost first.
    fn unwound(names: &[&str]) -> UserStack {
        let frames = names
            .iter()
            .enumerate()
            .map(|(i, n)| Frame {
                addr: 0x1000 * (i as u64 + 1) + n.len() as u64,
                symbol: Some(n.to_string()),
                ..Frame::default()
            })
            .collect();
        UserStack { frames, unwind: Some("dwarf".into()) }
    }

    fn names(stack: &UserStack) -> Vec<&str> {
        stack.frames.iter().map(|f| f.symbol.as_deref().unwrap_or("?")).collect()
    }

    fn read_innermost() -> Vec<Frame> {
        vec![Frame { addr: 0x7f00_0000_1234, symbol: Some("read".into()), ..Frame::default() }]
    }

    #[test]
    fn a_row_with_a_sample_shows_it_and_how_it_was_unwound() {
        let mut samples = StackSamples::default();
        samples.insert(key(42, 7), unwound(&["read", "g", "f", "main"]));
        let stack = samples.user_stack_or(&key(42, 7), || panic!("the walk is not needed"));
        assert_eq!(names(&stack), ["read", "g", "f", "main"]);
        assert_eq!(stack.unwind.as_deref(), Some("dwarf"));
    }

    #[test]
    fn a_row_without_one_keeps_the_frame_pointer_walk() {
        let mut samples = StackSamples::default();
        samples.insert(key(42, 7), unwound(&["read", "g", "f", "main"]));
        // Another stack id of the process, and the same id of another.
        for other in [key(42, 8), key(43, 7)] {
            let stack = samples.user_stack_or(&other, read_innermost);
            assert_eq!(names(&stack), ["read"], "{other:?}");
            assert_eq!(stack.unwind.as_deref(), Some(KERNEL_FRAME_POINTERS));
        }
        // No stack at all: no method either.
        assert_eq!(samples.user_stack_or(&key(1, 1), Vec::new), UserStack::default());
    }

    #[test]
    fn the_latest_sample_wins_and_different_paths_are_counted() {
        let mut samples = StackSamples::default();
        samples.insert(key(42, 7), unwound(&["read", "g", "f", "main"]));
        samples.insert(key(42, 7), unwound(&["read", "g", "f", "main"]));
        assert_eq!(
            samples.user_stack_or(&key(42, 7), Vec::new).unwind.as_deref(),
            Some("dwarf"),
            "the same path"
        );
        samples.insert(key(42, 7), unwound(&["read", "load_config", "main"]));
        let stack = samples.user_stack_or(&key(42, 7), Vec::new);
        assert_eq!(names(&stack), ["read", "load_config", "main"]);
        assert_eq!(
            stack.unwind.as_deref(),
            Some("dwarf, latest of 2 different stacks sampled under one frame-pointer walk")
        );
        assert_eq!(samples.len(), 1);
    }

    #[test]
    fn the_least_recently_sampled_are_forgotten_first() {
        let mut samples = StackSamples::new(3);
        for id in 0..3 {
            samples.insert(key(1, id), unwound(&["main"]));
        }
        // Sampled again: now the most recent.
        samples.insert(key(1, 0), unwound(&["main"]));
        samples.insert(key(1, 3), unwound(&["main"]));
        assert_eq!(samples.len(), 3);
        assert!(samples.get(&key(1, 1)).is_none(), "the oldest went");
        for id in [0, 2, 3] {
            assert!(samples.get(&key(1, id)).is_some(), "{id} kept");
        }
        for id in 10..1000 {
            samples.insert(key(2, id), unwound(&["main"]));
        }
        assert_eq!(samples.len(), 3);
        assert_eq!(samples.order.len(), 3, "the order index is bounded too");
    }

    #[test]
    fn samples_of_exited_processes_can_be_forgotten() {
        let mut samples = StackSamples::default();
        for (tgid, id) in [(1, 0), (2, 0), (2, 1), (3, 0)] {
            samples.insert(key(tgid, id), unwound(&["main"]));
        }
        samples.forget_exited(|tgid| tgid != 2);
        assert_eq!(samples.len(), 2);
        assert_eq!(samples.order.len(), 2);
        assert!(samples.get(&key(2, 0)).is_none() && samples.get(&key(1, 0)).is_some());
    }
}
