//! Pieces every probe family uses: the health counters and the two ways of
//! reading kernel structs.

use aya_ebpf::{
    bindings::{BPF_ANY, BPF_F_USER_STACK, BPF_NOEXIST},
    macros::map,
    maps::{LruHashMap, PerCpuArray, PerCpuHashMap, RingBuf, StackTrace},
    programs::tracing::StackIdContext,
};
use tracer_common::{
    counters::{COUNTER_SLOTS, Counter},
    task::{MEMCG_MAX_DEPTH, TaskFilter, TaskOffsets},
    ustack::{
        STACK_SAMPLE_INTERVAL_NS, STACK_SAMPLE_KEYS, StackSampleEvent, StackSampleKey,
        USER_STACK_HEADER_BYTES, USER_STACK_MASK, USER_STACK_MAX, UserStackConfig, UserStackHeader,
    },
};

/// Stack ids kept (kernel and user stacks together).
const STACK_ENTRIES: u32 = 16384;

/// Health counters, see [`Counter`].
#[map]
static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(COUNTER_SLOTS, 0);

#[inline(always)]
pub fn count(counter: Counter) {
    count_n(counter, 1);
}

/// Adds `n` (which may be 0) to a counter: lets a caller count without a
/// branch of its own.
#[inline(always)]
pub fn count_n(counter: Counter, n: u64) {
    if let Some(slot) = COUNTERS.get_ptr_mut(counter as u32) {
        // Per-CPU slot: no other writer.
        unsafe { *slot += n };
    }
}

/// This CPU's row for `key` in `rows`, created from the zeroed template in
/// `zero` on first use. A full map is counted as `full`.
#[inline(always)]
pub fn row_for<K, V>(
    rows: &PerCpuHashMap<K, V>,
    zero: &PerCpuArray<V>,
    key: &K,
    full: Counter,
) -> Option<*mut V> {
    if let Some(row) = rows.get_ptr_mut(key) {
        return Some(row);
    }
    let zero = zero.get_ptr(0)?;
    // A reference into the map, not a copy: rows are bigger than the
    // 512-byte BPF stack.
    #[allow(clippy::needless_borrows_for_generic_args)]
    let inserted = rows.insert(key, unsafe { &*zero }, BPF_NOEXIST as u64);
    // EEXIST: another CPU created it meanwhile; anything else is a full map.
    if let Err(err) = inserted
        && err != -17
    {
        count(full);
        return None;
    }
    rows.get_ptr_mut(key)
}

/// Reads a read-only global set by the loader. Volatile so the compiler
/// keeps the load instead of folding the placeholder value in.
#[inline(always)]
pub fn global<T: Copy>(value: &'static T) -> T {
    unsafe { core::ptr::read_volatile(value) }
}

/// How a program reads kernel structs, so one body serves both program
/// types: `tp_btf` programs get typed pointers the verifier lets them
/// dereference; raw tracepoints get plain numbers and must copy through a
/// helper.
pub trait Fields {
    /// The `T` at `base + offset`, or `None` if it cannot be read.
    fn read<T: Copy>(base: u64, offset: u32) -> Option<T>;
    /// A pointer as a plain number, usable as a key.
    fn addr(ptr: u64) -> u64;
}

/// Direct loads through BTF-typed pointers (faults read as zero).
pub struct Direct;
/// `bpf_probe_read_kernel` copies.
pub struct Probe;

impl Fields for Direct {
    #[inline(always)]
    fn read<T: Copy>(base: u64, offset: u32) -> Option<T> {
        Some(unsafe { core::ptr::read_volatile((base + offset as u64) as *const T) })
    }

    /// The verifier forbids arithmetic on typed pointers (hashing one);
    /// the pointer copied off the stack by the helper is a plain number.
    /// (A per-CPU scratch slot did the same, but a program nested on the
    /// same CPU from an interrupt could overwrite it between the write and
    /// the read back, and charge one request's start to another.)
    #[inline(always)]
    fn addr(ptr: u64) -> u64 {
        let mut plain = 0u64;
        unsafe {
            aya_ebpf::helpers::generated::bpf_probe_read_kernel(
                (&mut plain as *mut u64).cast(),
                8,
                (&ptr as *const u64).cast(),
            )
        };
        plain
    }
}

impl Fields for Probe {
    #[inline(always)]
    fn read<T: Copy>(base: u64, offset: u32) -> Option<T> {
        // The helper zeroes the destination when the read faults, which is
        // what every caller falls back to. No branch on the outcome: a
        // branch per read doubles the paths the verifier walks each time,
        // and 6.1's gave up on the OOM program ("too large"). The failure
        // is counted all the same, from the sign of the return value.
        let mut value = core::mem::MaybeUninit::<T>::uninit();
        let ret = unsafe {
            aya_ebpf::helpers::generated::bpf_probe_read_kernel(
                value.as_mut_ptr().cast(),
                core::mem::size_of::<T>() as u32,
                (base + offset as u64) as *const core::ffi::c_void,
            )
        };
        count_n(Counter::ProbeReadFailed, (ret as u64) >> 63);
        Some(unsafe { value.assume_init() })
    }

    #[inline(always)]
    fn addr(ptr: u64) -> u64 {
        ptr
    }
}

/// Kernel and user stacks of the rare events (allocation failures, OOM
/// triggers, stalls), by id. Without BPF_F_REUSE_STACKID a hash collision
/// fails the capture (counted) instead of replacing a stack still in use.
#[map]
pub static STACKS: StackTrace = StackTrace::with_max_entries(STACK_ENTRIES, 0);

/// Task struct layout, filled in from BTF by the loader.
#[unsafe(no_mangle)]
static TASK_OFFSETS: TaskOffsets = TaskOffsets {
    task_mm: 0,
    task_cgroups: 0,
    task_comm: 0,
    css_set_memory: 0,
    css_cgroup: 0,
    css_parent: 0,
    cgroup_kn: 0,
    kn_id: 0,
    memcg_enabled: 0,
    _pad: 0,
};
/// `--pid` and `--cgroup`, shared by the memory families.
#[unsafe(no_mangle)]
static TASK_FILTER: TaskFilter = TaskFilter { tgid: 0, comm_len: 0, memcg_id: 0, comm: [0; 16] };

/// Whether `--pid`, `--comm` or `--cgroup` restrict tracing.
#[inline(always)]
pub fn task_filter_active() -> bool {
    global(&TASK_FILTER).is_active()
}

/// `task->comm` equals the filter's name (exactly, not as a prefix).
#[inline(always)]
fn comm_matches<F: Fields>(task: u64, filter: &TaskFilter, offsets: &TaskOffsets) -> bool {
    let Some(comm) = F::read::<[u8; 16]>(task, offsets.task_comm) else {
        return false;
    };
    let len = filter.comm_len as usize;
    for (i, (&have, &want)) in comm.iter().zip(filter.comm.iter()).enumerate() {
        // Past the name, the task's comm must end too.
        let want = if i < len { want } else { 0 };
        if have != want {
            return false;
        }
        if i >= len {
            break;
        }
    }
    true
}

/// The current task as a pointer `F` can read through.
pub trait CurrentTask: Fields {
    fn current_task() -> u64;
}

impl CurrentTask for Direct {
    #[inline(always)]
    fn current_task() -> u64 {
        unsafe { aya_ebpf::helpers::bpf_get_current_task_btf() as u64 }
    }
}

impl CurrentTask for Probe {
    #[inline(always)]
    fn current_task() -> u64 {
        unsafe { aya_ebpf::helpers::bpf_get_current_task() }
    }
}

/// The memory cgroup state (`cgroup_subsys_state *`) of `task`, or 0.
#[inline(always)]
fn memcg_css<F: Fields>(task: u64, offsets: &TaskOffsets) -> u64 {
    if offsets.memcg_enabled == 0 || task == 0 {
        return 0;
    }
    let Some(cset) = F::read::<u64>(task, offsets.task_cgroups) else {
        return 0;
    };
    if cset == 0 {
        return 0;
    }
    F::read::<u64>(cset, offsets.css_set_memory).unwrap_or(0)
}

/// Id (directory inode) of the cgroup of a memory cgroup state, or 0.
#[inline(always)]
fn css_id<F: Fields>(css: u64, offsets: &TaskOffsets) -> u64 {
    if css == 0 {
        return 0;
    }
    let cgroup = F::read::<u64>(css, offsets.css_cgroup).unwrap_or(0);
    if cgroup == 0 {
        return 0;
    }
    let kn = F::read::<u64>(cgroup, offsets.cgroup_kn).unwrap_or(0);
    if kn == 0 {
        return 0;
    }
    F::read::<u64>(kn, offsets.kn_id).unwrap_or(0)
}

/// Memory cgroup id of `task` (0 when unknown).
#[inline(always)]
pub fn task_memcg_id<F: Fields>(task: u64) -> u64 {
    let offsets = global(&TASK_OFFSETS);
    css_id::<F>(memcg_css::<F>(task, &offsets), &offsets)
}

/// Whether a task passes `--pid`, `--comm` and `--cgroup` (its memory
/// cgroup or an ancestor of it is the one asked for). Returns its memory
/// cgroup id.
#[inline(always)]
pub fn task_wanted<F: Fields>(task: u64, tgid: u32) -> Option<u64> {
    let filter = global(&TASK_FILTER);
    if filter.tgid != 0 && filter.tgid != tgid {
        return None;
    }
    let offsets = global(&TASK_OFFSETS);
    if filter.comm_len != 0 && !comm_matches::<F>(task, &filter, &offsets) {
        return None;
    }
    let mut css = memcg_css::<F>(task, &offsets);
    let id = css_id::<F>(css, &offsets);
    if filter.memcg_id == 0 || id == filter.memcg_id {
        return Some(id);
    }
    // No memory cgroup known: cannot be below the one asked for (and a
    // known-NULL pointer must not be dereferenced, even by a direct load).
    if css == 0 {
        return None;
    }
    for _ in 0..MEMCG_MAX_DEPTH {
        css = F::read::<u64>(css, offsets.css_parent).unwrap_or(0);
        if css == 0 {
            return None;
        }
        if css_id::<F>(css, &offsets) == filter.memcg_id {
            return Some(id);
        }
    }
    None
}

/// Whether `task` has a user address space (a user stack to capture).
#[inline(always)]
pub fn has_user_stack<F: Fields>(task: u64) -> bool {
    let offsets = global(&TASK_OFFSETS);
    task != 0 && F::read::<u64>(task, offsets.task_mm).unwrap_or(0) != 0
}

/// The address of the current `task`'s `mm_struct` as a plain number (0
/// for a kernel thread): which process, until it exits or execs. No
/// branch (the OOM program is near 6.1's verifier limits).
#[inline(always)]
pub fn task_mm_addr<F: Fields>(task: u64) -> u64 {
    let offsets = global(&TASK_OFFSETS);
    F::addr(F::read::<u64>(task, offsets.task_mm).unwrap_or(0))
}

/// Kernel and user stack ids of the current context; failures (full
/// buckets, faults) are counted and returned as negative errors. Kernel
/// threads have no user stack (-1, not counted).
#[inline(always)]
pub fn capture_stacks<C: StackIdContext>(ctx: &C, user: bool) -> (i32, i32) {
    let kernel = match ctx.get_stackid(&STACKS, 0) {
        Ok(id) => id as i32,
        Err(err) => {
            count(Counter::StackFailed);
            err
        }
    };
    let user = if !user {
        -1
    } else {
        match ctx.get_stackid(&STACKS, BPF_F_USER_STACK as u64) {
            Ok(id) => id as i32,
            Err(err) => {
                count(Counter::StackFailed);
                err
            }
        }
    };
    (kernel, user)
}

/// `pt_regs` layout (from BTF) and the stack copy's size, set by the
/// loader; a zero size turns user stack copies off.
#[unsafe(no_mangle)]
static USER_STACK_CONFIG: UserStackConfig =
    UserStackConfig { regs_ip: 0, regs_sp: 0, regs_bp: 0, copy_bytes: 0 };

/// Whether user stacks are copied for unwinding in user space.
#[inline(always)]
pub fn user_stack_copies_on() -> bool {
    global(&USER_STACK_CONFIG).copy_bytes != 0
}

/// Room for the largest event that carries a user stack.
const EVENT_MAX: usize = 256;
const SCRATCH_WORDS: usize = (EVENT_MAX + USER_STACK_HEADER_BYTES + USER_STACK_MAX) / 8;

/// Where a record with a user stack is put together: the event, the
/// header, the stack (too big for the 512-byte BPF stack, and a ring
/// buffer reservation must have a constant size).
#[map]
static USER_STACK_SCRATCH: PerCpuArray<[u64; SCRATCH_WORDS]> = PerCpuArray::with_max_entries(1, 0);

const PAGE: u64 = 4096;
/// Sizes tried before giving up, see [`copy_user_stack`].
const COPY_ATTEMPTS: u32 = 4;

/// Copies `want` bytes of user stack from `sp` to `dst`, or fewer when
/// that faults (the top of the stack is nearer than `want`): the copy is
/// all or nothing, so smaller sizes are tried, each ending at a page
/// boundary, down to the rest of `sp`'s own page. Returns the bytes
/// copied, 0 when none could be.
#[inline(always)]
fn copy_user_stack(dst: *mut u8, sp: u64, want: u32) -> u32 {
    let to_page_end = PAGE - (sp & (PAGE - 1));
    let want = want as u64;
    let mut k = 0;
    while k < COPY_ATTEMPTS {
        let size = if k == 0 {
            want
        } else {
            let smaller = to_page_end + ((want >> k) & !(PAGE - 1));
            if smaller < want { smaller } else { want }
        };
        // In 1..=USER_STACK_MAX whatever `size` is, as the verifier
        // wants it proven.
        let n = ((size as u32).wrapping_sub(1) & USER_STACK_MASK) + 1;
        let ret = unsafe {
            aya_ebpf::helpers::generated::bpf_probe_read_user(dst.cast(), n, sp as *const core::ffi::c_void)
        };
        if ret == 0 {
            return n;
        }
        k += 1;
    }
    0
}

/// This CPU's record under construction, for an event `E` that goes out
/// with [`send_with_user_stack`]: write the event here (it is too big for
/// the BPF stack together with the program's other locals).
#[inline(always)]
pub fn user_stack_record<E: Copy>() -> Option<*mut E> {
    const {
        assert!(core::mem::size_of::<E>() <= EVENT_MAX && core::mem::size_of::<E>().is_multiple_of(8));
    }
    match USER_STACK_SCRATCH.get_ptr_mut(0) {
        Some(scratch) => Some(scratch.cast::<E>()),
        None => {
            count(Counter::RingbufFull);
            None
        }
    }
}

/// Sends the event written at [`user_stack_record`] on `ring`, followed by
/// a [`UserStackHeader`] and the top of the current task's user stack
/// (`tracer_common::ustack`), for user space to unwind from CFI. `user`:
/// whether the task has a user address space. Copies that fail, and
/// records that do not fit (the event is then sent alone), count as
/// [`Counter::UserStackFailed`]; an event that does not fit even alone as
/// [`Counter::RingbufFull`].
#[inline(always)]
pub fn send_with_user_stack<E: Copy>(ring: &RingBuf, record: *mut E, user: bool) {
    let event_bytes = core::mem::size_of::<E>();
    let base = record.cast::<u8>();
    let config = global(&USER_STACK_CONFIG);
    let mut head = UserStackHeader { ip: 0, sp: 0, bp: 0, len: 0, requested: config.copy_bytes };
    if user && config.copy_bytes != 0 {
        // The registers the task entered the kernel with.
        let regs = unsafe {
            aya_ebpf::helpers::generated::bpf_task_pt_regs(aya_ebpf::helpers::bpf_get_current_task_btf())
        } as u64;
        head.ip = Probe::read::<u64>(regs, config.regs_ip).unwrap_or(0);
        head.sp = Probe::read::<u64>(regs, config.regs_sp).unwrap_or(0);
        head.bp = Probe::read::<u64>(regs, config.regs_bp).unwrap_or(0);
        let data = unsafe { base.add(event_bytes + USER_STACK_HEADER_BYTES) };
        head.len = copy_user_stack(data, head.sp, config.copy_bytes);
        count_n(Counter::UserStackFailed, (head.len == 0) as u64);
    }
    unsafe { core::ptr::write(base.add(event_bytes).cast::<UserStackHeader>(), head) };
    let len = head.len;
    let size = if len == 0 {
        event_bytes + USER_STACK_HEADER_BYTES
    } else {
        event_bytes + USER_STACK_HEADER_BYTES + ((len.wrapping_sub(1) & USER_STACK_MASK) + 1) as usize
    };
    let bytes = unsafe { core::slice::from_raw_parts(base, size) };
    if ring.output::<[u8]>(bytes, 0).is_ok() {
        return;
    }
    count(Counter::UserStackFailed);
    let alone = unsafe { core::slice::from_raw_parts(base, event_bytes) };
    if ring.output::<[u8]>(alone, 0).is_err() {
        count(Counter::RingbufFull);
    }
}

/// When each process's user stack id was last sampled, see
/// [`sample_user_stack`].
#[map]
static USER_STACK_SAMPLED: LruHashMap<StackSampleKey, u64> =
    LruHashMap::with_max_entries(STACK_SAMPLE_KEYS, 0);

/// Sends a sample of the current task's user stack (registers and stack
/// copy, as [`send_with_user_stack`]) on `ring`, named by its frame-pointer
/// stack id `user_stack`, for stalls and throttling pauses, which are
/// aggregated by stack id and can be frequent: at most one per process and
/// stack id every `STACK_SAMPLE_INTERVAL_NS` (two CPUs may both send one
/// at the same moment). Nothing when copies are off or the task has no
/// user stack (`user_stack` negative). `kind` says what the task entered.
#[inline(always)]
pub fn sample_user_stack(ring: &RingBuf, kind: u32, pid_tgid: u64, user_stack: i32) {
    if user_stack < 0 || !user_stack_copies_on() {
        return;
    }
    let key = StackSampleKey { tgid: (pid_tgid >> 32) as u32, user_stack };
    let now = unsafe { aya_ebpf::helpers::bpf_ktime_get_ns() };
    if let Some(last) = unsafe { USER_STACK_SAMPLED.get(key) }
        && now.wrapping_sub(*last) < STACK_SAMPLE_INTERVAL_NS
    {
        return;
    }
    let _ = USER_STACK_SAMPLED.insert(key, now, BPF_ANY as u64);
    let Some(record) = user_stack_record::<StackSampleEvent>() else {
        return;
    };
    unsafe { *record = StackSampleEvent { ts_ns: now, key, pid: pid_tgid as u32, kind } };
    send_with_user_stack(ring, record, true);
}

/// Defines a tracepoint's two entry points over one body: `$btf` (BTF
/// tracepoint, `F` = [`Direct`]) and `$raw` (raw tracepoint, `F` =
/// [`Probe`]). User space attaches one of the two.
#[macro_export]
macro_rules! both_flavors {
    ($btf:ident, $raw:ident, $tp:literal, |$ctx:ident, $f:ident| $body:expr) => {
        #[aya_ebpf::macros::btf_tracepoint(function = $tp)]
        pub fn $btf($ctx: aya_ebpf::programs::BtfTracePointContext) -> i32 {
            #[allow(dead_code)]
            type $f = $crate::shared::Direct;
            $body;
            0
        }

        #[aya_ebpf::macros::raw_tracepoint(tracepoint = $tp)]
        pub fn $raw($ctx: aya_ebpf::programs::RawTracePointContext) -> i32 {
            #[allow(dead_code)]
            type $f = $crate::shared::Probe;
            $body;
            0
        }
    };
}
