//! User stacks unwound in user space from a copy of the top of the stack
//! and the user registers (`tracer_common::ustack`), as
//! `perf --call-graph dwarf` does: binaries built without frame pointers
//! (most distribution packages, -O2 C and C++, Rust release builds) unwind
//! through their CFI (`.eh_frame`, `.eh_frame_hdr`, `.debug_frame`, also
//! from a debug file found by build id) with `framehop`; code without CFI
//! is walked by its frame pointers. Symbolization stays with
//! [`crate::symbolize`].
//!
//! A process's memory map is read when its event arrives (a process that
//! failed an allocation often dies right after) and kept per process while
//! it does not change; parsed files are shared between processes. When it
//! is gone by then, the map taken as it entered reclaim is used
//! ([`snapshots`]), if it is of the same address space.

pub mod maps;
pub mod snapshots;

use std::{
    collections::HashMap,
    path::Path,
    sync::{Arc, Mutex},
};

use framehop::{
    FrameAddress, Unwinder as _,
    x86_64::{CacheX86_64, UnwindRegsX86_64, UnwinderX86_64},
};
use tracer_common::ustack::{USER_STACK_HEADER_BYTES, USER_STACK_MAX, UserStackConfig, UserStackHeader};

use crate::kernel::btf::KernelBtf;
use maps::{CodeRange, ObjectCache, ProcessCode};

/// Deepest stack unwound.
pub const MAX_FRAMES: usize = 128;
/// Where distributions install debug files, searched by build id.
const DEBUG_DIRS: [&str; 2] = ["/usr/lib/debug", "/lib/debug"];

/// What the kernel programs read for user stacks: the `pt_regs` offsets of
/// this kernel and `copy_bytes` of stack per event (clamped to what a
/// record holds; 0 turns copies off).
pub fn user_stack_config(btf: &KernelBtf, copy_bytes: u32) -> anyhow::Result<UserStackConfig> {
    Ok(UserStackConfig {
        regs_ip: btf.member_offset("pt_regs", "ip")?,
        regs_sp: btf.member_offset("pt_regs", "sp")?,
        regs_bp: btf.member_offset("pt_regs", "bp")?,
        copy_bytes: copy_bytes.min(USER_STACK_MAX as u32),
    })
}

/// [`user_stack_config`] for the kernel a run sees, with copies turned off
/// and a warning saying so when its BTF lacks `pt_regs`.
pub fn config_or_off(btf: &Result<KernelBtf, String>, copy_bytes: u32) -> (UserStackConfig, Option<String>) {
    let config =
        btf.as_ref().map_err(|e| anyhow::anyhow!("{e}")).and_then(|b| user_stack_config(b, copy_bytes));
    match config {
        Ok(config) => (config, None),
        Err(e) => (
            UserStackConfig::default(),
            Some(format!(
                "user stacks: no pt_regs layout from kernel BTF ({e:#}): stacks are walked by frame pointers \
                 in the kernel, and binaries without them show their innermost frame only"
            )),
        ),
    }
}

/// User registers and stack bytes of one event.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UserStackSample {
    pub ip: u64,
    pub sp: u64,
    pub bp: u64,
    /// The size asked for; `stack` is shorter when the stack's top was
    /// nearer, empty when it could not be read at all.
    pub requested: u32,
    /// From `sp` up.
    pub stack: Vec<u8>,
}

impl UserStackSample {
    /// The sample in the bytes that follow an event in its ring record,
    /// `None` when there are none (an older kernel object, or the record
    /// was sent without it) or copies are off.
    pub fn from_record_tail(tail: &[u8]) -> Option<UserStackSample> {
        let head = tail.get(..USER_STACK_HEADER_BYTES)?;
        // Safety: `UserStackHeader` is plain #[repr(C)] data.
        let head: UserStackHeader = unsafe { std::ptr::read_unaligned(head.as_ptr().cast()) };
        if head.requested == 0 {
            return None;
        }
        let stack = tail.get(USER_STACK_HEADER_BYTES..)?;
        let len = (head.len as usize).min(stack.len());
        Some(UserStackSample {
            ip: head.ip,
            sp: head.sp,
            bp: head.bp,
            requested: head.requested,
            stack: stack[..len].to_vec(),
        })
    }

    /// The 8 bytes at `addr`, if the copy holds them.
    fn read(&self, addr: u64) -> Option<u64> {
        let at = usize::try_from(addr.checked_sub(self.sp)?).ok()?;
        let bytes = self.stack.get(at..at.checked_add(8)?)?;
        Some(u64::from_le_bytes(bytes.try_into().ok()?))
    }
}

/// How a stack was unwound.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// Every step from CFI.
    Dwarf,
    /// Every step by frame pointers (code without CFI).
    FramePointers,
    Mixed,
}

impl Method {
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Dwarf => "dwarf",
            Method::FramePointers => "frame pointers",
            Method::Mixed => "dwarf + frame pointers",
        }
    }

    fn and(this: Option<Method>, step: Method) -> Option<Method> {
        Some(match this {
            None => step,
            Some(m) if m == step => m,
            Some(_) => Method::Mixed,
        })
    }
}

/// An unwound stack: addresses, innermost first, and why it ends early
/// when it does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unwound {
    pub addrs: Vec<u64>,
    /// `None` when there was nothing to unwind (the innermost frame only).
    pub method: Option<Method>,
    /// Why the stack stops short of its outermost frame.
    pub truncated: Option<String>,
}

/// Unwinds `sample` through `process`'s code. Pure: no process needed.
pub fn unwind(
    unwinder: &UnwinderX86_64<Arc<[u8]>>,
    code: &ProcessCode,
    cache: &mut CacheX86_64,
    sample: &UserStackSample,
) -> Unwound {
    let mut out = Unwound { addrs: vec![sample.ip], method: None, truncated: None };
    if sample.stack.is_empty() {
        out.truncated = Some("user stack not captured (its memory could not be read)".into());
        return out;
    }
    if code.code_at(sample.ip).is_none() {
        out.truncated = Some(format!("the instruction pointer {:#x} is outside any code", sample.ip));
        return out;
    }
    let mut regs = UnwindRegsX86_64::new(sample.ip, sample.sp, sample.bp);
    let mut address = FrameAddress::from_instruction_pointer(sample.ip);
    let mut read_stack = |addr: u64| sample.read(addr).ok_or(());
    loop {
        let here = code.code_at(address.address_for_lookup());
        let cfi = here.is_some_and(|c| c.has_cfi_at(address.address_for_lookup()));
        let step = if cfi { Method::Dwarf } else { Method::FramePointers };
        out.method = Method::and(out.method, step);
        let next = unwinder.unwind_frame(address, &mut regs, cache, &mut read_stack);
        let why = match next {
            // Frame pointers end where the frame pointer is 0 (set so at
            // the start of a program): unless the code has none at all.
            Ok(None) if !cfi && out.addrs.len() == 1 && sample.bp == 0 => {
                out.truncated = Some(match here {
                    Some(c) => format!("no CFI for {}, and no frame pointer", name_of(c)),
                    None => "code outside any file, and no frame pointer".into(),
                });
                return out;
            }
            Ok(None) => return out,
            Ok(Some(return_address)) => match FrameAddress::from_return_address(return_address) {
                // A null return address ends the stack as the ABI says.
                None => return out,
                Some(next) if code.code_at(next.address_for_lookup()).is_some() => {
                    if out.addrs.len() == MAX_FRAMES {
                        out.truncated = Some(format!("deeper than {MAX_FRAMES} frames"));
                        return out;
                    }
                    out.addrs.push(return_address);
                    address = next;
                    continue;
                }
                Some(_) => format!("return address {return_address:#x} is outside any code"),
            },
            Err(framehop::Error::CouldNotReadStack(addr)) if beyond_copy(sample, addr) => {
                format!("stack copy too small ({} bytes)", sample.stack.len())
            }
            Err(e) => format!("unwinding failed: {e}"),
        };
        out.truncated = Some(match here {
            Some(c) if !cfi => {
                format!("no CFI for {}, and its frame pointers lead nowhere", name_of(c))
            }
            None => "code outside any file, and its frame pointers lead nowhere".into(),
            Some(_) => why,
        });
        return out;
    }
}

/// Whether a failed read was above the copy (it needed more stack),
/// rather than somewhere unrelated (a corrupt frame pointer).
fn beyond_copy(sample: &UserStackSample, addr: u64) -> bool {
    let end = sample.sp + sample.stack.len() as u64;
    // Frames are seldom larger than this; past it the address is noise.
    (end..end.saturating_add(1 << 20)).contains(&addr)
}

fn name_of(code: &CodeRange) -> &str {
    if code.path.is_empty() { "anonymous code" } else { code.path.rsplit('/').next().unwrap_or(&code.path) }
}

/// One process's view for unwinding, while its map is unchanged.
struct Process {
    maps: String,
    /// Its address space, when the map is a snapshot's.
    mm: Option<u64>,
    unwinder: UnwinderX86_64<Arc<[u8]>>,
    code: ProcessCode,
}

/// Unwinds the stacks of live processes, keeping what it parsed.
pub struct UserUnwinder {
    objects: ObjectCache,
    processes: HashMap<u32, Process>,
    cache: CacheX86_64,
    /// Maps taken as processes entered reclaim, when they are taken.
    snapshots: Option<Arc<Mutex<snapshots::Snapshots>>>,
}

/// Most processes whose view is kept.
const PROCESSES_MAX: usize = 64;

impl Default for UserUnwinder {
    fn default() -> Self {
        Self {
            objects: ObjectCache::default(),
            processes: HashMap::new(),
            cache: CacheX86_64::new(),
            snapshots: None,
        }
    }
}

impl UserUnwinder {
    /// Falls back on `snapshots` for processes gone before their map is
    /// read.
    pub fn use_snapshots(&mut self, snapshots: Arc<Mutex<snapshots::Snapshots>>) {
        self.snapshots = Some(snapshots);
    }

    /// Unwinds a sample of process `pid`, reading its memory map now; if
    /// it is gone, from the map taken as it entered reclaim (when `mm`,
    /// its address space at the event, says it is the same process), else
    /// the last one read.
    pub fn unwind(&mut self, pid: u32, mm: Option<u64>, sample: &UserStackSample) -> Unwound {
        let mut maps = maps::read_maps(pid);
        let mut snapshot_mm = None;
        // Gone, or its map already torn down past the sampled instruction.
        if maps.as_deref().is_none_or(|text| !maps::executes(text, sample.ip))
            && let (Some(mm), Some(snapshots)) = (mm, &self.snapshots)
        {
            let mut snapshots = snapshots.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(snapshot) = snapshots.get(pid, mm) {
                log::debug!(
                    "process {pid} gone or torn down: unwinding from the map taken as it entered reclaim"
                );
                maps = Some(snapshot.maps.clone());
                snapshot_mm = Some(mm);
            }
        }
        let fresh = match (&maps, self.processes.get(&pid)) {
            (None, None) => {
                return Unwound {
                    addrs: vec![sample.ip],
                    method: None,
                    truncated: Some("process gone before its memory map was read".into()),
                };
            }
            (Some(text), Some(known)) => known.maps != *text,
            (Some(_), None) => true,
            // The last map read, unless it is known to be another
            // process's (a snapshot of another address space).
            (None, Some(known)) => {
                if known.mm.is_some_and(|known| mm.is_some_and(|mm| mm != known)) {
                    return Unwound {
                        addrs: vec![sample.ip],
                        method: None,
                        truncated: Some("process gone before its memory map was read".into()),
                    };
                }
                false
            }
        };
        if let (true, Some(text)) = (fresh, maps) {
            if self.processes.len() >= PROCESSES_MAX {
                self.processes.clear();
            }
            let debug_dirs: Vec<&Path> = DEBUG_DIRS.iter().map(Path::new).collect();
            let code = maps::process_code(
                &maps::parse_maps(&text),
                &mut self.objects,
                &maps::process_root(pid),
                &debug_dirs,
            );
            let mut process = Process::new(text, code);
            // A map read now is of the process the event saw (alive, so
            // its pid is its own).
            process.mm = snapshot_mm.or(mm);
            self.processes.insert(pid, process);
        }
        let process = &self.processes[&pid];
        unwind(&process.unwinder, &process.code, &mut self.cache, sample)
    }
}

impl UserUnwinder {
    /// Frames for addresses of process `pid` as [`UserUnwinder::unwind`]
    /// last saw it (see [`ProcessCode::frame`]); `None` if it never did.
    pub fn frames(&self, pid: u32, addrs: &[u64]) -> Option<Vec<crate::model::Frame>> {
        let process = self.processes.get(&pid)?;
        Some(addrs.iter().map(|&addr| process.code.frame(addr)).collect())
    }
}

impl Process {
    fn new(maps: String, code: ProcessCode) -> Process {
        let mut unwinder = UnwinderX86_64::new();
        for module in &code.modules {
            unwinder.add_module(module.clone());
        }
        Process { maps, mm: None, unwinder, code }
    }
}

/// For tests: the unwinder of a recorded memory map, with files as they
/// are on this machine.
#[cfg(test)]
pub fn process_from_maps(text: &str) -> (UnwinderX86_64<Arc<[u8]>>, ProcessCode) {
    let code = maps::process_code(&maps::parse_maps(text), &mut ObjectCache::default(), Path::new("/"), &[]);
    let process = Process::new(text.to_string(), code);
    (process.unwinder, process.code)
}

#[cfg(test)]
mod tests;
