//! Stacks captured by the kernel programs (the shared `STACKS` map),
//! resolved once and shared by every family: one kernel symbolizer (one
//! parse of a `--vmlinux`), one cache of resolved kernel stacks.

use std::{
    cell::{OnceCell, RefCell},
    collections::HashMap,
    path::PathBuf,
    rc::Rc,
};
use tracer_common::{
    maps,
    ustack::{StackSampleEvent, StackSampleKey},
};

use anyhow::{Context as _, Result};
use aya::{Ebpf, maps::StackTraceMap};

use super::stack_samples::StackSamples;
use crate::{
    model::Frame,
    symbolize::{self, KernelSymbolizer},
    unwind::{UserStackSample, UserUnwinder},
};

/// Resolved kernel stacks kept (a few KiB each).
const KERNEL_STACKS_CACHED: usize = 2048;

pub struct Stacks {
    vmlinux: Option<PathBuf>,
    kernel: OnceCell<KernelSymbolizer>,
    kernel_frames: RefCell<HashMap<i32, Vec<Frame>>>,
    unwinder: RefCell<UserUnwinder>,
    /// Unwound user stacks of stalls and throttling pauses.
    samples: RefCell<StackSamples>,
    warnings: RefCell<Vec<String>>,
}

/// A user stack, normalized while its process was alive, and how it was
/// unwound (`None` when it is empty).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct UserStack {
    pub frames: Vec<Frame>,
    pub unwind: Option<String>,
}

/// What a stack id's user stack is unwound by: `bpf_get_stackid` follows
/// frame pointers.
pub const KERNEL_FRAME_POINTERS: &str = "frame pointers (in the kernel)";

impl Stacks {
    pub fn new(vmlinux: Option<PathBuf>) -> Rc<Self> {
        Rc::new(Self {
            vmlinux,
            kernel: OnceCell::new(),
            kernel_frames: RefCell::new(HashMap::new()),
            unwinder: RefCell::new(UserUnwinder::default()),
            samples: RefCell::new(StackSamples::default()),
            warnings: RefCell::new(Vec::new()),
        })
    }

    fn symbolizer(&self) -> &KernelSymbolizer {
        self.kernel.get_or_init(|| {
            let (symbolizer, warnings) = KernelSymbolizer::new(self.vmlinux.as_deref());
            self.warnings.borrow_mut().extend(warnings);
            symbolizer
        })
    }

    /// Checks `--vmlinux` now rather than at the first stack; returns what
    /// is wrong with it.
    pub fn check_vmlinux(&self) -> Vec<String> {
        if self.vmlinux.is_none() {
            return Vec::new();
        }
        self.symbolizer();
        self.warnings()
    }

    /// A kernel stack, resolved (function+offset, and file:line with a
    /// vmlinux), without the tracing machinery's own frames.
    pub fn kernel(&self, id: i32, ebpf: &Ebpf) -> Vec<Frame> {
        if id < 0 {
            return Vec::new();
        }
        if let Some(frames) = self.kernel_frames.borrow().get(&id) {
            return frames.clone();
        }
        let Some(addrs) = stack_addrs(ebpf, id) else {
            return Vec::new();
        };
        let frames = strip_tracing_frames(self.symbolizer().symbolize(&addrs));
        let mut cache = self.kernel_frames.borrow_mut();
        // `watch` runs for days: the cache starts afresh past its bound.
        if cache.len() >= KERNEL_STACKS_CACHED {
            cache.clear();
        }
        cache.insert(id, frames.clone());
        frames
    }

    /// A user stack, normalized against the process's mappings now (call
    /// this while it is alive); resolve with [`symbolize::resolve_user_frames`].
    pub fn user(&self, pid: u32, id: i32, ebpf: &Ebpf) -> Vec<Frame> {
        match stack_addrs(ebpf, id) {
            Some(addrs) if id >= 0 => symbolize::normalize_user_stack(pid, &addrs),
            _ => Vec::new(),
        }
    }

    /// A user stack of process `pid`, normalized now (call this while it
    /// is alive): unwound from the event's stack copy when it has one,
    /// else the kernel's frame-pointer walk under stack id `id`. A stack
    /// unwound short of its end has a last, `truncated` frame saying why.
    /// `mm`: the process's address space at the event, when the event
    /// says (which snapshot of its map, taken as it entered reclaim, is of
    /// the same process).
    pub fn user_stack(
        &self,
        pid: u32,
        mm: Option<u64>,
        id: i32,
        sample: Option<&UserStackSample>,
        ebpf: &Ebpf,
    ) -> UserStack {
        // No copy (copies off, or the record did not fit), or an empty one
        // (the stack could not be read): the kernel's walk is all there is.
        let Some(sample) = sample.filter(|s| !s.stack.is_empty()) else {
            let frames = self.user(pid, id, ebpf);
            let unwind = (!frames.is_empty()).then(|| KERNEL_FRAME_POINTERS.to_string());
            return UserStack { frames, unwind };
        };
        let mut unwinder = self.unwinder.borrow_mut();
        let unwound = unwinder.unwind(pid, mm, sample);
        // From the map the unwinder read: the process may be gone since
        // (an OOM victim that triggered its own kill).
        let mut frames = unwinder
            .frames(pid, &unwound.addrs)
            .unwrap_or_else(|| symbolize::normalize_user_stack(pid, &unwound.addrs));
        if let Some(why) = unwound.truncated {
            frames.push(Frame { truncated: Some(why), ..Frame::default() });
        }
        let unwind = Some(unwound.method.map_or("none (innermost frame only)", |m| m.as_str()).to_string());
        UserStack { frames, unwind }
    }

    /// Forgets the stack samples of processes that have exited (`watch`,
    /// after each interval report: only later intervals matter, and a long
    /// watch sees processes come and go).
    pub fn forget_exited(&self) {
        self.samples.borrow_mut().forget_exited(super::process_exists);
    }

    /// Deletes user stacks `ids` from the `STACKS` map (no row refers to
    /// them any more): the map would fill with the stacks of processes long
    /// gone, and every new stack would fail to be captured.
    pub fn forget_user_stacks(&self, ebpf: &mut Ebpf, ids: impl IntoIterator<Item = i32>) -> Result<usize> {
        let mut map = StackTraceMap::try_from(ebpf.map_mut(maps::STACKS).context(maps::STACKS)?)?;
        let mut forgotten = 0;
        for id in ids.into_iter().filter(|&id| id >= 0) {
            forgotten += usize::from(map.remove(&(id as u32)).is_ok());
        }
        Ok(forgotten)
    }

    /// A user stack sample of a stall or throttling pause (`tail`: what
    /// follows the event in its record), unwound now, while its process
    /// lives, and kept for [`Stacks::row_user_stack`]. A record without a
    /// stack copy (it did not fit) is dropped: its row keeps the kernel's
    /// walk.
    pub fn take_sample(&self, event: &StackSampleEvent, tail: &[u8], ebpf: &Ebpf) {
        let Some(sample) = UserStackSample::from_record_tail(tail).filter(|s| !s.stack.is_empty()) else {
            return;
        };
        let key = event.key;
        let stack = self.user_stack(key.tgid, None, key.user_stack, Some(&sample), ebpf);
        self.samples.borrow_mut().insert(key, stack);
    }

    /// The user stack of a stall or throttling row of process `tgid` under
    /// stack id `id`: unwound from its latest sample when there is one,
    /// else the kernel's frame-pointer walk, normalized now (best effort:
    /// the process may be gone). Resolve with
    /// [`symbolize::resolve_user_frames`].
    pub fn row_user_stack(&self, tgid: u32, id: i32, ebpf: &Ebpf) -> UserStack {
        let key = StackSampleKey { tgid, user_stack: id };
        self.samples.borrow().user_stack_or(&key, || self.user(tgid, id, ebpf))
    }

    /// Unwinds processes gone before their map is read from `snapshots`.
    pub fn use_snapshots(
        &self,
        snapshots: std::sync::Arc<std::sync::Mutex<crate::unwind::snapshots::Snapshots>>,
    ) {
        self.unwinder.borrow_mut().use_snapshots(snapshots);
    }

    pub fn warnings(&self) -> Vec<String> {
        self.warnings.borrow().clone()
    }
}

/// Addresses of a stack id, innermost first.
pub fn stack_addrs(ebpf: &Ebpf, id: i32) -> Option<Vec<u64>> {
    if id < 0 {
        return None;
    }
    let map = StackTraceMap::try_from(ebpf.map(maps::STACKS)?).ok()?;
    let trace = map.get(&(id as u32), 0).ok()?;
    Some(trace.frames().iter().map(|f| f.ip).filter(|&ip| ip != 0).collect())
}

/// Drops the frames of the tracing machinery above the traced function.
pub fn strip_tracing_frames(frames: Vec<Frame>) -> Vec<Frame> {
    let tracing = |f: &Frame| {
        f.symbol.as_deref().is_some_and(|s| {
            s.starts_with("bpf_")
                || s.starts_with("__bpf_")
                || s.starts_with("__traceiter_")
                || s.starts_with("perf_trace_")
        })
    };
    let skip = frames.iter().take_while(|f| tracing(f)).count();
    frames.into_iter().skip(skip).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_tracing_frames_only_at_the_top() {
        let f = |s: &str| Frame { symbol: Some(s.into()), ..Frame::default() };
        let frames = vec![
            f("bpf_prog_abc_mm_page_alloc_btf"),
            f("__bpf_trace_mm_page_alloc"),
            f("__alloc_frozen_pages_noprof"),
            f("bpf_map_area_alloc"),
        ];
        let kept: Vec<_> = strip_tracing_frames(frames).into_iter().map(|f| f.symbol.unwrap()).collect();
        assert_eq!(kept, ["__alloc_frozen_pages_noprof", "bpf_map_area_alloc"]);
    }
}
