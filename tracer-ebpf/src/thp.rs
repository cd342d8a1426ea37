//! THP splits. They have no tracepoint: these function hooks are optional
//! extras, used only where the kernel allows them (user space falls back
//! to the /proc/vmstat counters otherwise).

use aya_ebpf::{
    bindings::BPF_NOEXIST,
    helpers::{bpf_get_current_comm, bpf_get_current_pid_tgid},
    macros::{fentry, kprobe, map},
    maps::PerCpuHashMap,
    programs::{FEntryContext, ProbeContext, tracing::StackIdContext},
};
use tracer_common::{
    counters::Counter,
    thp::{SplitKey, SplitStats},
};

use crate::shared::count;

#[map]
static THP_SPLITS: PerCpuHashMap<SplitKey, SplitStats> = PerCpuHashMap::with_max_entries(1024, 0);

#[inline(always)]
fn on_split<C: StackIdContext>(ctx: &C, what: u32) {
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    let kernel_stack = match ctx.get_stackid(&crate::shared::STACKS, 0) {
        Ok(id) => id as i32,
        Err(err) => {
            count(Counter::StackFailed);
            err
        }
    };
    let key = SplitKey { tgid, kernel_stack, what, _pad: 0 };
    match THP_SPLITS.get_ptr_mut(key) {
        Some(s) => unsafe { (*s).count += 1 },
        None => {
            let stats = SplitStats { count: 1, comm: bpf_get_current_comm().unwrap_or([0; 16]) };
            if THP_SPLITS.insert(key, stats, BPF_NOEXIST as u64).is_err() {
                count(Counter::MapFull);
            }
        }
    }
}

#[fentry(function = "__split_huge_pmd")]
pub fn split_huge_pmd_fentry(ctx: FEntryContext) -> i32 {
    on_split(&ctx, 0);
    0
}

#[fentry(function = "split_huge_page_to_list_to_order")]
pub fn split_huge_page_fentry(ctx: FEntryContext) -> i32 {
    on_split(&ctx, 1);
    0
}

#[kprobe]
pub fn split_huge_pmd_kprobe(ctx: ProbeContext) -> u32 {
    on_split(&ctx, 0);
    0
}

#[kprobe]
pub fn split_huge_page_kprobe(ctx: ProbeContext) -> u32 {
    on_split(&ctx, 1);
    0
}
