//! Stack addresses to functions, addr2line style, over blazesym.
//!
//! Kernel frames: function+offset from /proc/kallsyms, and file:line with
//! inlined functions from a vmlinux with DWARF when one is given and its
//! build id is the running kernel's.
//!
//! User frames in two steps, because a process whose allocation failed often
//! dies right after: [`normalize_user_stack`] records, while the process is
//! alive, which file each address is in and where (module, file offset,
//! build id); [`resolve_user_frames`] later turns that into functions and
//! lines from the files, on this machine or another one with the same files.
//!
//! Stacks are leaf first, as the kernel captures them. Every frame but the
//! first holds a return address, the instruction after a call, so it is
//! looked up one byte earlier: that finds the call's line, and the right
//! function when the call was the last instruction of one (`noreturn`).
//! `offset` stays relative to the captured address, as the kernel prints.

use std::{
    cell::RefCell,
    collections::BTreeMap,
    fs::{self, File},
    io::{BufRead as _, BufReader, Read as _},
    path::{Path, PathBuf},
    sync::OnceLock,
};

use blazesym::{
    Pid,
    inspect::{self, Inspector},
    normalize::{NormalizeOpts, Normalizer, UserMeta},
    symbolize::{
        Input, Sym, Symbolized, Symbolizer,
        source::{Elf, Kernel, Source},
    },
};
use object::{Object as _, ObjectSegment as _};

use crate::model::{Frame, InlinedFrame};

const KALLSYMS: &str = "/proc/kallsyms";
const KERNEL_NOTES: &str = "/sys/kernel/notes";
const NT_GNU_BUILD_ID: u32 = 3;
/// Where distributions install debug files, searched by build id.
const DEBUG_DIRS: [&str; 2] = ["/usr/lib/debug", "/lib/debug"];

/// Resolves kernel stacks. Parses kallsyms once, so keep one for a run; it
/// is not `Send` (blazesym's caches are `Rc`).
pub struct KernelSymbolizer {
    symbolizer: Symbolizer,
    /// kallsyms shows real addresses (root, and kptr_restrict allows it).
    kallsyms: bool,
    vmlinux: Option<Vmlinux>,
}

/// A vmlinux checked against the running kernel.
struct Vmlinux {
    path: PathBuf,
    /// Running address minus link address (KASLR), from `_stext`.
    kaslr_offset: u64,
    /// Link addresses of the kernel's text, `_stext` to `_etext`: BPF
    /// programs and modules lie outside, and the ELF lookup would name
    /// them after vmlinux's last symbol (`__init_scratch_end` on 6.1).
    text: std::ops::Range<u64>,
}

impl Vmlinux {
    /// (frame index, link address) of the frames inside the kernel's text.
    fn inside(&self, lookups: &[u64]) -> Vec<(usize, u64)> {
        lookups
            .iter()
            .map(|a| a.wrapping_sub(self.kaslr_offset))
            .enumerate()
            .filter(|(_, link)| self.text.contains(link))
            .collect()
    }

    /// Fills the frames inside the kernel's text from the vmlinux.
    fn fill(&self, symbolizer: &Symbolizer, frames: &mut [Frame], lookups: &[u64]) {
        let inside = self.inside(lookups);
        let link_addrs: Vec<u64> = inside.iter().map(|&(_, link)| link).collect();
        let source = Source::Elf(Elf::new(&self.path));
        if let Ok(syms) = symbolizer.symbolize(&source, Input::VirtOffset(&link_addrs)) {
            fill_frames(frames, lookups, inside.iter().map(|&(i, _)| i).zip(syms.iter()));
        }
    }
}

impl KernelSymbolizer {
    /// Uses `vmlinux` for file:line when it is the running kernel's, or
    /// looks for one in the usual debug locations when none is given.
    /// Returns warnings for the user: why frames will lack lines or names.
    pub fn new(vmlinux: Option<&Path>) -> (KernelSymbolizer, Vec<String>) {
        let mut warnings = Vec::new();
        let stext = kallsyms_stext();
        if stext.is_none() {
            warnings.push(format!(
                "{KALLSYMS} shows no kernel addresses (tracer needs root, and kernel.kptr_restrict \
                 below 2); kernel frames will be bare addresses"
            ));
        }
        let running_build_id = running_kernel_build_id();
        let vmlinux = match vmlinux {
            Some(path) => match check_vmlinux(path, running_build_id.as_deref(), stext, RUNNING) {
                Ok(vmlinux) => Some(vmlinux),
                Err(why) => {
                    warnings.push(format!(
                        "vmlinux {}: {why}; kernel frames get function+offset from {KALLSYMS} only, \
                         without file:line",
                        path.display()
                    ));
                    None
                }
            },
            None => running_build_id.as_deref().and_then(|id| {
                vmlinux_candidates(id)
                    .into_iter()
                    .find_map(|path| check_vmlinux(&path, Some(id), stext, RUNNING).ok())
            }),
        };
        let symbolizer = Symbolizer::builder()
            .enable_code_info(true)
            .enable_inlined_fns(true)
            .enable_demangling(false)
            .build();
        (KernelSymbolizer { symbolizer, kallsyms: stext.is_some(), vmlinux }, warnings)
    }

    /// For stacks recorded elsewhere (`tracer report`): `vmlinux` must have
    /// the traced kernel's `build_id`, and its `_stext` then was `stext`.
    /// Uses no kallsyms: this machine's kernel is not the traced one.
    pub fn for_recorded_kernel(
        vmlinux: &Path,
        build_id: Option<&str>,
        stext: Option<u64>,
    ) -> Result<KernelSymbolizer, String> {
        let why = |why: &str| format!("vmlinux {}: {why}", vmlinux.display());
        let build_id = build_id
            .and_then(unhex)
            .ok_or_else(|| why("the capture does not record the traced kernel's build id"))?;
        let stext = stext.ok_or_else(|| {
            why("the capture does not record where the traced kernel was loaded (kallsyms was hidden)")
        })?;
        let vmlinux = check_vmlinux(vmlinux, Some(&build_id), Some(stext), TRACED).map_err(|e| why(&e))?;
        let symbolizer = Symbolizer::builder()
            .enable_code_info(true)
            .enable_inlined_fns(true)
            .enable_demangling(false)
            .build();
        Ok(KernelSymbolizer { symbolizer, kallsyms: false, vmlinux: Some(vmlinux) })
    }

    /// Resolves recorded kernel frames again from their addresses where
    /// the vmlinux knows them; the others keep what they had. Every frame
    /// is taken as a return address: stacks are kept without their leaf,
    /// which is in the tracing machinery.
    pub fn resolve_recorded(&self, frames: &mut [Frame]) {
        let Some(vmlinux) = &self.vmlinux else {
            return;
        };
        let lookups: Vec<u64> = frames.iter().map(|f| f.addr.saturating_sub(1)).collect();
        vmlinux.fill(&self.symbolizer, frames, &lookups);
    }

    /// Whether frames get file:line (a vmlinux was accepted).
    pub fn has_vmlinux(&self) -> bool {
        self.vmlinux.is_some()
    }

    /// Frames for a kernel stack, leaf first. Unresolved frames keep their
    /// address, with module "kernel".
    pub fn symbolize(&self, addrs: &[u64]) -> Vec<Frame> {
        let lookups = lookup_addrs(addrs);
        let mut frames: Vec<Frame> = addrs
            .iter()
            .map(|&addr| Frame { addr, module: Some("kernel".to_string()), ..Default::default() })
            .collect();
        // blazesym's own vmlinux path needs /proc/modules and fails every
        // address on kernels without modules, so vmlinux is read as a plain
        // ELF file at link-time addresses.
        if let Some(vmlinux) = &self.vmlinux {
            vmlinux.fill(&self.symbolizer, &mut frames, &lookups);
        }
        let missing: Vec<usize> = (0..frames.len()).filter(|&i| frames[i].symbol.is_none()).collect();
        if self.kallsyms && !missing.is_empty() {
            let kallsyms_only =
                Kernel { vmlinux: blazesym::MaybeDefault::None, debug_syms: false, ..Default::default() };
            let wanted: Vec<u64> = missing.iter().map(|&i| lookups[i]).collect();
            if let Ok(syms) =
                self.symbolizer.symbolize(&Source::Kernel(kallsyms_only), Input::AbsAddr(&wanted))
            {
                fill_frames(&mut frames, &lookups, missing.iter().copied().zip(syms.iter()));
            }
        }
        frames
    }
}

/// Whose kernel a vmlinux is checked against, in messages.
const RUNNING: &str = "running kernel";
const TRACED: &str = "traced kernel";

/// Why `path` cannot be used as `whose` kernel's vmlinux, or the offset to
/// use it with.
fn check_vmlinux(
    path: &Path,
    running_build_id: Option<&[u8]>,
    kallsyms_stext: Option<u64>,
    whose: &str,
) -> Result<Vmlinux, String> {
    let mut magic = [0; 4];
    File::open(path)
        .and_then(|mut f| f.read_exact(&mut magic))
        .map_err(|e| format!("cannot be read ({e})"))?;
    if magic != *b"\x7fELF" {
        return Err("is not an ELF file".to_string());
    }
    let build_id = read_elf_build_id(path).map_err(|e| format!("is not a readable ELF file ({e})"))?;
    let Some(build_id) = build_id else {
        return Err(format!("has no GNU build id, so it cannot be matched to the {whose}"));
    };
    match running_build_id {
        Some(running) if running != &*build_id => {
            return Err(format!(
                "its build id {} does not match the {whose}'s {}",
                hex(&build_id),
                hex(running)
            ));
        }
        Some(_) => {}
        None => return Err(format!("the running kernel's build id is not readable in {KERNEL_NOTES}")),
    }
    let Some(kallsyms_stext) = kallsyms_stext else {
        return Err(format!("{KALLSYMS} hides addresses, so KASLR cannot be undone"));
    };
    let inspect_source = inspect::source::Source::Elf(inspect::source::Elf {
        debug_syms: false,
        ..inspect::source::Elf::new(path)
    });
    let inspector = Inspector::new();
    let link_address = |name: &str| {
        inspector
            .lookup(&inspect_source, &[name])
            .ok()
            .and_then(|found| found.into_iter().flatten().next())
            .map(|sym| sym.addr)
    };
    let link_stext = link_address("_stext")
        .ok_or_else(|| format!("has no _stext symbol to line it up with the {whose}"))?;
    let link_etext = link_address("_etext").filter(|&e| e > link_stext).unwrap_or(u64::MAX);
    Ok(Vmlinux {
        path: path.to_path_buf(),
        kaslr_offset: kallsyms_stext.wrapping_sub(link_stext),
        text: link_stext..link_etext,
    })
}

/// Where distributions put the running kernel's vmlinux with DWARF.
fn vmlinux_candidates(build_id: &[u8]) -> Vec<PathBuf> {
    let mut candidates: Vec<PathBuf> =
        DEBUG_DIRS.iter().filter_map(|dir| debug_file_path(Path::new(dir), build_id)).collect();
    if let Ok(release) = fs::read_to_string("/proc/sys/kernel/osrelease") {
        let release = release.trim();
        candidates.extend(
            [
                format!("/usr/lib/debug/boot/vmlinux-{release}"),
                format!("/usr/lib/debug/lib/modules/{release}/vmlinux"),
                format!("/boot/vmlinux-{release}"),
                format!("/lib/modules/{release}/build/vmlinux"),
            ]
            .map(PathBuf::from),
        );
    }
    candidates.retain(|p| p.is_file());
    candidates
}

/// `_stext` from kallsyms, or `None` when it is unreadable or zeroed
/// (not root, or kptr_restrict).
pub fn kallsyms_stext() -> Option<u64> {
    let file = File::open(KALLSYMS).ok()?;
    BufReader::new(file)
        .lines()
        .map_while(Result::ok)
        .find_map(|line| kallsyms_address(&line, "_stext"))
        .filter(|&a| a != 0)
}

/// The address on a kallsyms line `ffffffff81000000 T _stext` for `name`.
fn kallsyms_address(line: &str, name: &str) -> Option<u64> {
    let mut words = line.split_whitespace();
    let addr = words.next()?;
    let _kind = words.next()?;
    (words.next()? == name).then(|| u64::from_str_radix(addr, 16).ok()).flatten()
}

/// The running kernel's GNU build id, from its ELF notes in sysfs.
pub fn running_kernel_build_id() -> Option<Vec<u8>> {
    gnu_build_id_from_notes(&fs::read(KERNEL_NOTES).ok()?)
}

/// The `NT_GNU_BUILD_ID` descriptor of a raw ELF note section: each note is
/// namesz, descsz and type (native u32), then name and descriptor, each
/// padded to 4 bytes.
pub fn gnu_build_id_from_notes(notes: &[u8]) -> Option<Vec<u8>> {
    let word = |at: usize| notes.get(at..at + 4).map(|b| u32::from_ne_bytes(b.try_into().unwrap()) as usize);
    let padded = |len: usize| len.div_ceil(4) * 4;
    let mut at = 0;
    while at + 12 <= notes.len() {
        let (namesz, descsz, kind) = (word(at)?, word(at + 4)?, word(at + 8)?);
        let name = notes.get(at + 12..at + 12 + namesz)?;
        let desc_start = at + 12 + padded(namesz);
        let desc = notes.get(desc_start..desc_start + descsz)?;
        if kind == NT_GNU_BUILD_ID as usize && name == b"GNU\0" {
            return Some(desc.to_vec());
        }
        at = desc_start + padded(descsz);
    }
    None
}

/// Records, while process `pid` is alive, the file and file offset of each
/// address, with the file's build id, so [`resolve_user_frames`] can
/// resolve them after the process is gone. A process that is gone gives
/// frames with only `addr`.
pub fn normalize_user_stack(pid: u32, addrs: &[u64]) -> Vec<Frame> {
    let mut frames: Vec<Frame> = addrs.iter().map(|&addr| Frame { addr, ..Default::default() }).collect();
    // blazesym reads pid 0 as "this process"; pid 0 is the idle task here.
    if pid == 0 || addrs.is_empty() {
        return frames;
    }
    // PROCMAP_QUERY (6.11+) reads build ids from the mapped file itself,
    // right even when the file on disk has been replaced since.
    let normalizer = Normalizer::builder().enable_procmap_query(procmap_query_supported()).build();
    // Paths as /proc/PID/maps names them, which still open after the
    // process exits (map_files paths do not).
    let opts = NormalizeOpts { sorted_addrs: false, map_files: false, ..Default::default() };
    let Ok(normalized) = normalizer.normalize_user_addrs_opts(Pid::from(pid), addrs, &opts) else {
        return frames;
    };
    let mut elf_layouts: BTreeMap<PathBuf, Option<Vec<Segment>>> = BTreeMap::new();
    for (frame, &(output, meta_index)) in frames.iter_mut().zip(&normalized.outputs) {
        match normalized.meta.get(meta_index) {
            Some(UserMeta::Elf(elf)) => {
                let build_id = elf.build_id.as_deref().map(hex);
                let segments = elf_layouts
                    .entry(elf.path.clone())
                    .or_insert_with(|| load_segments(&elf.path, build_id.as_deref()));
                frame.elf_addr = segments.as_deref().and_then(|s| file_offset_to_elf_addr(s, output));
                frame.module = Some(elf.path.to_string_lossy().into_owned());
                frame.file_offset = Some(output);
                frame.build_id = build_id;
            }
            // Resolved on the spot: the vDSO has no file to read later.
            Some(UserMeta::Sym(sym)) => {
                frame.symbol = Some(demangle(&sym.name));
                frame.offset = Some(sym.offset as u64);
                frame.module =
                    Some(sym.module.as_deref().map_or("[vdso]".into(), |m| m.to_string_lossy().into_owned()));
            }
            _ => {}
        }
    }
    frames
}

fn procmap_query_supported() -> bool {
    static SUPPORTED: OnceLock<bool> = OnceLock::new();
    *SUPPORTED.get_or_init(|| blazesym::helper::is_procmap_query_supported().unwrap_or(false))
}

/// A loadable segment: file range and the address it is linked at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Segment {
    file_offset: u64,
    file_size: u64,
    address: u64,
}

/// `path`'s loadable segments, if it is the file with `build_id` (a file
/// replaced since it was mapped has a different layout).
fn load_segments(path: &Path, build_id: Option<&str>) -> Option<Vec<Segment>> {
    let cache = object::ReadCache::new(File::open(path).ok()?);
    let elf = object::File::parse(&cache).ok()?;
    let file_build_id = elf.build_id().ok().flatten().map(hex);
    if build_id.is_some() && file_build_id.as_deref() != build_id {
        return None;
    }
    Some(
        elf.segments()
            .map(|s| {
                let (file_offset, file_size) = s.file_range();
                Segment { file_offset, file_size, address: s.address() }
            })
            .collect(),
    )
}

fn file_offset_to_elf_addr(segments: &[Segment], file_offset: u64) -> Option<u64> {
    segments
        .iter()
        .find(|s| (s.file_offset..s.file_offset + s.file_size).contains(&file_offset))
        .map(|s| file_offset - s.file_offset + s.address)
}

/// Fills in function, offset, source line and inlined functions of frames
/// made by [`normalize_user_stack`], from each module's ELF and DWARF, or
/// from a debug file with the recorded build id when the module is missing
/// or is no longer the same file. Frames that cannot be resolved keep
/// module and file offset. Already resolved frames are left alone.
pub fn resolve_user_frames(frames: &mut [Frame]) {
    thread_local! {
        // Keeps parsed files across stacks; blazesym reloads a file that
        // changed on disk.
        static SYMBOLIZER: RefCell<BoundedSymbolizer> = RefCell::new(BoundedSymbolizer::new());
    }
    let debug_dirs: Vec<&Path> = DEBUG_DIRS.iter().map(Path::new).collect();
    SYMBOLIZER.with_borrow_mut(|bounded| {
        bounded.admit(frames.iter().filter_map(|f| f.module.as_deref()));
        resolve_user_frames_with(&bounded.symbolizer, frames, &debug_dirs)
    });
}

/// A symbolizer whose caches hold at most [`Self::MODULES_MAX`] files: it
/// keeps every file it parsed (and its DWARF) for good, and `watch` runs
/// for days on hosts that run many binaries. Past the bound it starts
/// afresh.
struct BoundedSymbolizer {
    symbolizer: Symbolizer,
    modules: std::collections::HashSet<String>,
}

impl BoundedSymbolizer {
    const MODULES_MAX: usize = 32;

    fn new() -> Self {
        Self {
            symbolizer: Symbolizer::builder()
                .set_debug_dirs(Some(DEBUG_DIRS))
                .enable_demangling(false)
                .build(),
            modules: std::collections::HashSet::new(),
        }
    }

    /// Makes room for `modules` (those of the stack about to be resolved).
    fn admit<'a>(&mut self, modules: impl Iterator<Item = &'a str> + Clone) {
        let new = modules.clone().filter(|m| !self.modules.contains(*m)).count();
        if new > 0 && self.modules.len() + new > Self::MODULES_MAX {
            *self = Self::new();
        }
        self.modules.extend(modules.map(str::to_string));
    }
}

/// `symbolizer` must search `debug_dirs` for debug links too.
fn resolve_user_frames_with(symbolizer: &Symbolizer, frames: &mut [Frame], debug_dirs: &[&Path]) {
    let lookups = lookup_addrs(&frames.iter().map(|f| f.addr).collect::<Vec<_>>());
    // Index i's lookup is its address minus this adjustment.
    let adjust: Vec<u64> = frames.iter().zip(&lookups).map(|(f, l)| f.addr - l).collect();
    let mut by_module: BTreeMap<(String, Option<String>), Vec<usize>> = BTreeMap::new();
    for (i, frame) in frames.iter().enumerate() {
        if let (None, Some(module), Some(_)) = (&frame.symbol, &frame.module, frame.file_offset) {
            by_module.entry((module.clone(), frame.build_id.clone())).or_default().push(i);
        }
    }
    for ((module, build_id), indices) in by_module {
        let Some((path, by)) = user_symbol_file(Path::new(&module), build_id.as_deref(), debug_dirs) else {
            continue;
        };
        let source = Source::Elf(Elf::new(&path));
        // Per frame: the value to look up, if this file can be searched by it.
        let wanted: Vec<(usize, u64)> = indices
            .iter()
            .filter_map(|&i| {
                let value = match by {
                    LookupBy::FileOffset => frames[i].file_offset,
                    LookupBy::ElfAddr => frames[i].elf_addr,
                }?;
                Some((i, value.saturating_sub(adjust[i])))
            })
            .collect();
        let values: Vec<u64> = wanted.iter().map(|&(_, v)| v).collect();
        let input = match by {
            LookupBy::FileOffset => Input::FileOffset(values.as_slice()),
            LookupBy::ElfAddr => Input::VirtOffset(values.as_slice()),
        };
        if let Ok(syms) = symbolizer.symbolize(&source, input) {
            fill_frames(frames, &lookups, wanted.iter().map(|&(i, _)| i).zip(syms.iter()));
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LookupBy {
    FileOffset,
    ElfAddr,
}

/// The file to resolve a module's frames from: the module itself when it
/// is still the recorded file, else a debug file found by build id.
/// The GNU build id of an ELF file, read through a cache so that a 600 MB
/// vmlinux is not read whole. (blazesym's reader took the first note of a
/// Debian vmlinux, a Xen one, for the build id.)
fn read_elf_build_id(path: &Path) -> Result<Option<Vec<u8>>, String> {
    let file = File::open(path).map_err(|e| e.to_string())?;
    let cache = object::ReadCache::new(file);
    let elf = object::File::parse(&cache).map_err(|e| e.to_string())?;
    elf.build_id().map(|id| id.map(<[u8]>::to_vec)).map_err(|e| e.to_string())
}

fn user_symbol_file(
    module: &Path,
    build_id: Option<&str>,
    debug_dirs: &[&Path],
) -> Option<(PathBuf, LookupBy)> {
    let module_matches = match (read_elf_build_id(module), build_id) {
        (Ok(Some(found)), Some(recorded)) => hex(&found) == recorded,
        // Nothing recorded to compare with: trust an ELF file at the path.
        (Ok(_), None) => true,
        _ => false,
    };
    if module_matches {
        return Some((module.to_path_buf(), LookupBy::FileOffset));
    }
    let build_id = unhex(build_id?)?;
    debug_dirs
        .iter()
        .filter_map(|dir| debug_file_path(dir, &build_id))
        .find(|p| p.is_file())
        .map(|p| (p, LookupBy::ElfAddr))
}

/// `DIR/.build-id/ab/cdef....debug` for build id `abcdef...`.
fn debug_file_path(dir: &Path, build_id: &[u8]) -> Option<PathBuf> {
    let (first, rest) = build_id.split_first()?;
    Some(dir.join(".build-id").join(format!("{first:02x}")).join(format!("{}.debug", hex(rest))))
}

/// Addresses to look up: return addresses (all but the leaf) minus one.
fn lookup_addrs(addrs: &[u64]) -> Vec<u64> {
    addrs.iter().enumerate().map(|(i, &a)| if i == 0 { a } else { a.saturating_sub(1) }).collect()
}

/// Copies blazesym's answers into `frames[i]` for each `(i, answer)`.
fn fill_frames<'a>(
    frames: &mut [Frame],
    lookups: &[u64],
    answers: impl Iterator<Item = (usize, &'a Symbolized<'a>)>,
) {
    for (i, answer) in answers {
        if let (Some(frame), Symbolized::Sym(sym)) = (frames.get_mut(i), answer) {
            let adjust = frame.addr - lookups[i];
            fill_frame(frame, sym, adjust);
        }
    }
}

/// blazesym reports the real function with the line it is at (the call
/// of the first inlined function, if any), then the inlined functions
/// outermost first, each with its own line: the model's order too.
fn fill_frame(frame: &mut Frame, sym: &Sym, adjust: u64) {
    frame.symbol = Some(demangle(&sym.name));
    frame.offset = Some(sym.offset as u64 + adjust);
    if let Some(info) = &sym.code_info {
        frame.file = Some(info.to_path().to_string_lossy().into_owned());
        frame.line = info.line;
    }
    frame.inlined = sym
        .inlined
        .iter()
        .map(|f| InlinedFrame {
            symbol: demangle(&f.name),
            file: f.code_info.as_ref().map(|c| c.to_path().to_string_lossy().into_owned()),
            line: f.code_info.as_ref().and_then(|c| c.line),
        })
        .collect();
}

/// A Rust or C++ symbol name demangled; any other name as it is.
/// (blazesym's own demangling tries every name, and reads C functions
/// named `f` or `g` as the C++ type codes for `float` and `__float128`.)
pub fn demangle(name: &str) -> String {
    let mangled = name.starts_with("_Z") || name.starts_with("__Z") || name.starts_with("_R");
    if !mangled {
        return name.to_string();
    }
    if let Ok(rust) = rustc_demangle::try_demangle(name) {
        return format!("{rust:#}");
    }
    cpp_demangle::Symbol::new(name).ok().and_then(|s| s.demangle().ok()).unwrap_or_else(|| name.to_string())
}

/// One line for a frame: `__kmalloc_node_noprof+0x4b`,
/// `alloc_chunk+0x1c (helper.rs:42)`, `[libfoo.so+0x1234]` when only the
/// module is known, `0xffffffff81234567` when nothing is; the marker that
/// ends a truncated user stack is `[truncated: why]`.
pub fn frame_label(f: &Frame) -> String {
    if let Some(why) = &f.truncated {
        return format!("[truncated: {why}]");
    }
    match (&f.symbol, &f.module, f.file_offset) {
        (Some(symbol), _, _) => {
            let offset = f.offset.map(|o| format!("+{o:#x}")).unwrap_or_default();
            format!("{symbol}{offset}{}", source_suffix(f.file.as_deref(), f.line))
        }
        (None, Some(module), Some(file_offset)) => format!("[{}+{file_offset:#x}]", file_name(module)),
        _ => format!("{:#x}", f.addr),
    }
}

/// Labels for one frame, caller first as folded stacks want them: the real
/// function, then the functions inlined into it, outermost to innermost.
/// The innermost is where the address really is; reverse for leaf-first
/// listings.
pub fn frame_labels(f: &Frame) -> Vec<String> {
    let inlined = f
        .inlined
        .iter()
        .map(|i| format!("{}{} [inlined]", i.symbol, source_suffix(i.file.as_deref(), i.line)));
    std::iter::once(frame_label(f)).chain(inlined).collect()
}

/// Labels for flame graphs, caller first: the function alone (no offset,
/// no line), so that frames of one function merge into one box; a frame
/// without a symbol is its module, or `[unknown]`, never an address.
pub fn flame_labels(f: &Frame) -> Vec<String> {
    let own = match (&f.truncated, &f.symbol, &f.module) {
        (Some(_), _, _) => "[truncated]".to_string(),
        (None, Some(symbol), _) => symbol.clone(),
        (None, None, Some(module)) => format!("[{}]", file_name(module)),
        (None, None, None) => "[unknown]".to_string(),
    };
    std::iter::once(own).chain(f.inlined.iter().map(|i| format!("{} [inlined]", i.symbol))).collect()
}

/// ` (file.c:42)`, or nothing without a file.
fn source_suffix(file: Option<&str>, line: Option<u32>) -> String {
    match (file, line) {
        (Some(file), Some(line)) => format!(" ({}:{line})", file_name(file)),
        (Some(file), None) => format!(" ({})", file_name(file)),
        _ => String::new(),
    }
}

fn file_name(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

pub fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len()).step_by(2).map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok()).collect()
}

#[cfg(test)]
mod tests {
    use std::{
        io::Write as _,
        process::{Child, Command, Stdio},
    };

    /// Long runs see many binaries: the symbolizer's caches start afresh
    /// past their bound instead of growing.
    #[test]
    fn the_symbolizer_keeps_a_bounded_number_of_files() {
        let mut bounded = BoundedSymbolizer::new();
        let names: Vec<String> = (0..BoundedSymbolizer::MODULES_MAX).map(|i| format!("/bin/p{i}")).collect();
        bounded.admit(names.iter().map(String::as_str));
        assert_eq!(bounded.modules.len(), BoundedSymbolizer::MODULES_MAX);
        // Known files take no room.
        bounded.admit(["/bin/p0", "/bin/p1"].into_iter());
        assert_eq!(bounded.modules.len(), BoundedSymbolizer::MODULES_MAX);
        bounded.admit(["/bin/p0", "/bin/new"].into_iter());
        assert_eq!(bounded.modules.len(), 2, "started afresh with this stack's files");
        assert!(bounded.modules.contains("/bin/new") && bounded.modules.contains("/bin/p0"));
    }

    use tempfile::TempDir;

    use super::*;

    #[test]
    fn only_frames_inside_the_kernels_text_are_looked_up_in_vmlinux() {
        let vmlinux = Vmlinux {
            path: PathBuf::from("/nonexistent"),
            kaslr_offset: 0x1000_0000,
            text: 0xffff_ffff_8100_0000..0xffff_ffff_8200_0000,
        };
        // A kernel function, a BPF program (module area), a data address
        // past _etext.
        let lookups = [0xffff_ffff_9100_1234, 0xffff_ffff_d0a0_0000, 0xffff_ffff_9300_0000];
        assert_eq!(vmlinux.inside(&lookups), vec![(0, 0xffff_ffff_8100_1234)]);
    }

    /// A program with a function inlined into another, which prints the
    /// address of its leaf function and the return address into its caller,
    /// then waits for a line on stdin so the test can look at it alive.
    const FIXTURE_C: &str = r#"#include <stdio.h>

volatile int sink;

__attribute__((noipa)) void leaf_record(int value) { /* LEAF */
    sink = value;
    printf("%p %p\n", (void *)leaf_record, __builtin_return_address(0));
    fflush(stdout);
    getchar();
}

static inline __attribute__((always_inline)) void inlined_helper(int value) {
    leaf_record(value * 3); /* HELPER */
}

__attribute__((noipa)) void outer_caller(int value) {
    inlined_helper(value + 1); /* CALLER */
    sink += 1;
}

int main(int argc, char **argv) {
    (void)argv;
    outer_caller(argc);
    return 0;
}
"#;

    /// 1-based line of the line holding `marker`.
    /// `FAKE_VMLINUX_C` linked like a kernel: `_stext` and `vfs_read` at the
    /// given link addresses, with the given build id (hex).
    fn fake_vmlinux(dir: &Path, build_id: &str, stext: u64, vfs_read: u64) -> PathBuf {
        let link_args = [
            "-mcmodel=kernel".to_string(),
            "-fno-pie".to_string(),
            "-no-pie".to_string(),
            "-static".to_string(),
            "-nostdlib".to_string(),
            "-Wl,-e,_stext".to_string(),
            format!("-Wl,--build-id=0x{build_id}"),
            format!("-Wl,--section-start=.text={stext:#x}"),
            format!("-Wl,--section-start=.fake_vfs_read={vfs_read:#x}"),
        ];
        let link_args: Vec<&str> = link_args.iter().map(String::as_str).collect();
        compile(dir, "vmlinux", "gcc", "c", FAKE_VMLINUX_C, &link_args)
    }

    fn line_of(source: &str, marker: &str) -> u32 {
        let index = source.lines().position(|l| l.contains(marker)).expect("marker is in the source");
        index as u32 + 1
    }

    /// Compiles `source` with debug info and a build id into `dir/name`.
    fn compile(
        dir: &Path,
        name: &str,
        compiler: &str,
        extension: &str,
        source: &str,
        extra: &[&str],
    ) -> PathBuf {
        let source_path = dir.join(format!("{name}.{extension}"));
        let binary = dir.join(name);
        fs::write(&source_path, source).unwrap();
        let output = Command::new(compiler)
            .args(["-g", "-O2", "-Wl,--build-id", "-o"])
            .arg(&binary)
            .arg(&source_path)
            .args(extra)
            .output()
            .unwrap_or_else(|e| panic!("running {compiler} (needed to build the test fixture): {e}"));
        assert!(output.status.success(), "{compiler} failed: {}", String::from_utf8_lossy(&output.stderr));
        binary
    }

    /// Resolves with only `debug_dirs` searched, not the system's.
    fn resolve_with_debug_dirs(frames: &mut [Frame], debug_dirs: &[&Path]) {
        let symbolizer =
            Symbolizer::builder().set_debug_dirs(Some(debug_dirs)).enable_demangling(false).build();
        resolve_user_frames_with(&symbolizer, frames, debug_dirs);
    }

    fn build_id_of(path: &Path) -> String {
        hex(&read_elf_build_id(path).unwrap().expect("fixture has a build id"))
    }

    /// Starts the fixture and returns it with the two addresses it printed.
    fn start_fixture(binary: &Path) -> (Child, u64, u64) {
        let mut child = Command::new(binary).stdin(Stdio::piped()).stdout(Stdio::piped()).spawn().unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.as_mut().unwrap()).read_line(&mut line).unwrap();
        let addrs: Vec<u64> = line
            .split_whitespace()
            .map(|a| u64::from_str_radix(a.trim_start_matches("0x"), 16).unwrap())
            .collect();
        assert_eq!(addrs.len(), 2, "fixture printed {line:?}");
        (child, addrs[0], addrs[1])
    }

    fn finish(mut child: Child) {
        child.stdin.as_mut().unwrap().write_all(b"\n").unwrap();
        assert!(child.wait().unwrap().success());
    }

    /// A leaf-first stack (leaf function, return address in its caller)
    /// normalized while the fixture ran; the fixture has exited since.
    fn captured_fixture_stack(dir: &Path) -> (PathBuf, Vec<Frame>) {
        let binary = compile(dir, "fixture", "gcc", "c", FIXTURE_C, &[]);
        let (child, leaf, ret) = start_fixture(&binary);
        let frames = normalize_user_stack(child.id(), &[leaf, ret]);
        finish(child);
        (binary, frames)
    }

    /// What the fixture's stack must resolve to.
    fn assert_fixture_frames(frames: &[Frame]) {
        let [leaf, caller] = frames else { panic!("two frames: {frames:?}") };
        assert_eq!(leaf.symbol.as_deref(), Some("leaf_record"), "{leaf:?}");
        assert_eq!(leaf.offset, Some(0));
        assert!(leaf.file.as_deref().is_some_and(|f| f.ends_with("/fixture.c")), "{leaf:?}");
        assert_eq!(leaf.line, Some(line_of(FIXTURE_C, "LEAF")));
        assert!(leaf.inlined.is_empty());

        assert_eq!(caller.symbol.as_deref(), Some("outer_caller"), "{caller:?}");
        assert!(caller.offset.is_some_and(|o| o > 0));
        assert_eq!(
            caller.line,
            Some(line_of(FIXTURE_C, "CALLER")),
            "the line in outer_caller: the inlined call"
        );
        let [inlined] = caller.inlined.as_slice() else { panic!("one inlined function: {caller:?}") };
        assert_eq!(inlined.symbol, "inlined_helper");
        assert!(inlined.file.as_deref().is_some_and(|f| f.ends_with("/fixture.c")));
        assert_eq!(
            inlined.line,
            Some(line_of(FIXTURE_C, "HELPER")),
            "the return address is looked up at the call"
        );
        assert_eq!(
            frame_labels(caller),
            [
                format!(
                    "outer_caller+{:#x} (fixture.c:{})",
                    caller.offset.unwrap(),
                    line_of(FIXTURE_C, "CALLER")
                ),
                format!("inlined_helper (fixture.c:{}) [inlined]", line_of(FIXTURE_C, "HELPER")),
            ]
        );
    }

    #[test]
    fn resolves_a_user_stack_after_the_process_exited() {
        let dir = TempDir::new().unwrap();
        let (binary, mut frames) = captured_fixture_stack(dir.path());
        for frame in &frames {
            assert_eq!(frame.module.as_deref(), Some(binary.to_str().unwrap()));
            assert_eq!(frame.build_id.as_deref(), Some(build_id_of(&binary).as_str()));
            assert!(frame.file_offset.is_some() && frame.elf_addr.is_some(), "{frame:?}");
            assert_eq!(frame.symbol, None, "normalizing does not symbolize");
        }
        resolve_with_debug_dirs(&mut frames, &[]);
        assert_fixture_frames(&frames);
    }

    #[test]
    fn a_process_that_is_gone_gives_bare_addresses() {
        let dir = TempDir::new().unwrap();
        let binary = compile(dir.path(), "fixture", "gcc", "c", FIXTURE_C, &[]);
        let (child, leaf, ret) = start_fixture(&binary);
        let pid = child.id();
        finish(child);
        let frames = normalize_user_stack(pid, &[leaf, ret]);
        assert_eq!(
            frames,
            [Frame { addr: leaf, ..Default::default() }, Frame { addr: ret, ..Default::default() }]
        );
        assert_eq!(
            normalize_user_stack(0, &[leaf]),
            [Frame { addr: leaf, ..Default::default() }],
            "pid 0 is not us"
        );
    }

    #[test]
    fn falls_back_to_a_debug_file_found_by_build_id() {
        let dir = TempDir::new().unwrap();
        let (binary, frames) = captured_fixture_stack(dir.path());
        let build_id = unhex(&build_id_of(&binary)).unwrap();
        let debug_dir = dir.path().join("debug");
        let debug_file = debug_file_path(&debug_dir, &build_id).unwrap();
        fs::create_dir_all(debug_file.parent().unwrap()).unwrap();
        let status =
            Command::new("objcopy").arg("--only-keep-debug").arg(&binary).arg(&debug_file).status().unwrap();
        assert!(status.success());

        // Rebuilt since: same path, other build id. Not to be trusted.
        let rebuilt = FIXTURE_C.replace("value * 3", "value * 5 + sink");
        compile(dir.path(), "fixture", "gcc", "c", &rebuilt, &[]);
        assert_ne!(build_id_of(&binary), hex(&build_id));
        let mut unresolved = frames.clone();
        resolve_with_debug_dirs(&mut unresolved, &[]);
        for (frame, before) in unresolved.iter().zip(&frames) {
            assert_eq!(frame, before, "a different file at the module path is not used");
            assert_eq!(frame_label(frame), format!("[fixture+{:#x}]", frame.file_offset.unwrap()));
        }
        let mut from_debug_file = frames.clone();
        resolve_with_debug_dirs(&mut from_debug_file, &[debug_dir.as_path()]);
        assert_fixture_frames(&from_debug_file);

        // Deleted since.
        fs::remove_file(&binary).unwrap();
        let mut from_debug_file = frames.clone();
        resolve_with_debug_dirs(&mut from_debug_file, &[debug_dir.as_path()]);
        assert_fixture_frames(&from_debug_file);
    }

    #[inline(never)]
    fn marker_for_self_test() -> u32 {
        line!()
    }

    #[test]
    fn normalizes_and_resolves_this_test_process() {
        let addr = marker_for_self_test as *const () as u64;
        let mut frames = normalize_user_stack(std::process::id(), &[addr]);
        let exe = std::env::current_exe().unwrap();
        assert_eq!(frames[0].module.as_deref(), Some(exe.to_str().unwrap()));
        assert!(frames[0].file_offset.is_some());
        resolve_user_frames(&mut frames);
        let frame = &frames[0];
        assert_eq!(
            frame.symbol.as_deref(),
            Some("tracer::symbolize::tests::marker_for_self_test"),
            "{frame:?}"
        );
        assert_eq!(frame.offset, Some(0));
        assert!(frame.file.as_deref().is_some_and(|f| f.ends_with("src/symbolize.rs")), "{frame:?}");
        // rustc puts this one-instruction body on `fn` or on `}`.
        let body = marker_for_self_test();
        assert!(frame.line.is_some_and(|l| (body - 1..=body + 1).contains(&l)), "{frame:?} vs line {body}");
    }

    #[test]
    fn demangles_cpp_names() {
        let source = r#"namespace fixture {
struct Widget { int compute(int x); };
__attribute__((noipa)) int Widget::compute(int x) { return x * 2 + 1; }
}
int main(int argc, char **) { fixture::Widget w; return w.compute(argc); }
"#;
        let dir = TempDir::new().unwrap();
        let binary = compile(dir.path(), "widget", "g++", "cc", source, &[]);
        let mangled = "_ZN7fixture6Widget7computeEi";
        let inspector = Inspector::new();
        let found = inspector
            .lookup(&inspect::source::Source::Elf(inspect::source::Elf::new(&binary)), &[mangled])
            .unwrap();
        let sym = found[0].first().unwrap_or_else(|| panic!("{mangled} is in the fixture's symbol table"));
        let mut frames = [Frame {
            addr: 0x5555_0000_1000,
            module: Some(binary.to_string_lossy().into_owned()),
            file_offset: sym.file_offset,
            ..Default::default()
        }];
        resolve_with_debug_dirs(&mut frames, &[]);
        assert_eq!(frames[0].symbol.as_deref(), Some("fixture::Widget::compute(int)"));
        assert_eq!(frames[0].line, Some(3));
    }

    #[test]
    fn demangles_only_mangled_names() {
        for plain in ["f", "g", "main", "vfs_read", "_start"] {
            assert_eq!(demangle(plain), plain);
        }
        assert_eq!(demangle("_ZN7fixture6Widget7computeEi"), "fixture::Widget::compute(int)");
        assert_eq!(demangle("_ZN4core3ptr13drop_in_place17h0123456789abcdefE"), "core::ptr::drop_in_place");
        assert_eq!(demangle("_Z!not mangled"), "_Z!not mangled");
    }

    /// C functions with names of one or two letters: blazesym's demangler
    /// took `g` for `__float128`.
    #[test]
    fn short_c_function_names_stay_as_they_are() {
        let source = "__attribute__((noipa)) int g(int x) { return x * 3; }\n\
                      __attribute__((noipa)) int f(int x) { return g(x) + 1; }\n\
                      int main(int argc, char **argv) { (void)argv; return f(argc); }\n";
        let dir = TempDir::new().unwrap();
        let binary = compile(dir.path(), "short", "gcc", "c", source, &[]);
        let inspector = Inspector::new();
        let found = inspector
            .lookup(&inspect::source::Source::Elf(inspect::source::Elf::new(&binary)), &["g", "f"])
            .unwrap();
        let mut frames: Vec<Frame> = found
            .iter()
            .map(|syms| Frame {
                addr: 0x5555_0000_1000,
                module: Some(binary.to_string_lossy().into_owned()),
                file_offset: syms.first().expect("g and f are in the symbol table").file_offset,
                ..Default::default()
            })
            .collect();
        // Each alone: as a leaf, looked up at its own address.
        for frame in &mut frames {
            resolve_with_debug_dirs(std::slice::from_mut(frame), &[]);
        }
        let names: Vec<_> = frames.iter().map(|f| f.symbol.as_deref()).collect();
        assert_eq!(names, [Some("g"), Some("f")]);
        assert_eq!(frames[0].line, Some(1));
    }

    /// `(address, name)` of every kallsyms line, failing when addresses are
    /// hidden rather than passing without checking anything.
    fn kallsyms() -> Vec<(u64, String)> {
        let text = fs::read_to_string(KALLSYMS).expect("/proc/kallsyms is readable");
        let symbols: Vec<(u64, String)> = text
            .lines()
            .filter_map(|l| {
                let mut words = l.split_whitespace();
                let addr = u64::from_str_radix(words.next()?, 16).ok()?;
                Some((addr, words.nth(1)?.to_string()))
            })
            .collect();
        assert!(
            symbols.iter().any(|(addr, _)| *addr != 0),
            "/proc/kallsyms shows only zero addresses: run the tests as root with kernel.kptr_restrict < 2"
        );
        symbols
    }

    fn kallsyms_addr(symbols: &[(u64, String)], name: &str) -> u64 {
        symbols.iter().find(|(_, n)| n == name).unwrap_or_else(|| panic!("{name} is in kallsyms")).0
    }

    #[test]
    fn kernel_frames_from_kallsyms() {
        let symbols = kallsyms();
        let vfs_read = kallsyms_addr(&symbols, "vfs_read");
        let (kernel, warnings) = KernelSymbolizer::new(None);
        assert!(warnings.is_empty(), "{warnings:?}");
        assert!(!kernel.has_vmlinux());
        let frames = kernel.symbolize(&[vfs_read, vfs_read + 0x10, vfs_read, 0x1000]);

        assert_eq!(frames[0].symbol.as_deref(), Some("vfs_read"));
        assert_eq!(frames[0].offset, Some(0));
        assert_eq!(frames[0].module.as_deref(), Some("kernel"));
        assert_eq!((frames[0].file.as_deref(), frames[0].line), (None, None), "kallsyms has no lines");
        assert_eq!(frame_label(&frames[0]), "vfs_read+0x0");
        assert_eq!((frames[1].symbol.as_deref(), frames[1].offset), (Some("vfs_read"), Some(0x10)));

        // A return address at the very start of vfs_read follows a call
        // that ended the function before it.
        let before = symbols.iter().map(|(a, _)| *a).filter(|&a| a != 0 && a < vfs_read).max().unwrap();
        let names_before: Vec<&str> =
            symbols.iter().filter(|(a, _)| *a == before).map(|(_, n)| n.as_str()).collect();
        assert!(
            names_before.contains(&frames[2].symbol.as_deref().unwrap()),
            "{:?} vs {names_before:?}",
            frames[2]
        );
        assert_eq!(frames[2].offset, Some(vfs_read - before));

        assert_eq!(
            frames[3],
            Frame { addr: 0x1000, module: Some("kernel".to_string()), ..Default::default() }
        );
        assert_eq!(frame_label(&frames[3]), "0x1000");
    }

    fn assert_falls_back_to_kallsyms(vmlinux: &Path, why: &str) {
        let vfs_read = kallsyms_addr(&kallsyms(), "vfs_read");
        let (kernel, warnings) = KernelSymbolizer::new(Some(vmlinux));
        let [warning] = warnings.as_slice() else { panic!("one warning: {warnings:?}") };
        assert!(warning.contains(&vmlinux.display().to_string()), "{warning}");
        assert!(warning.contains(why), "{warning}");
        assert!(warning.contains("/proc/kallsyms only"), "{warning}");
        assert!(!kernel.has_vmlinux());
        assert_eq!(kernel.symbolize(&[vfs_read])[0].symbol.as_deref(), Some("vfs_read"));
    }

    #[test]
    fn a_vmlinux_that_is_not_elf_is_refused() {
        let dir = TempDir::new().unwrap();
        let path = dir.path().join("vmlinux");
        fs::write(&path, "not a kernel\n").unwrap();
        assert_falls_back_to_kallsyms(&path, "is not an ELF file");
        assert_falls_back_to_kallsyms(&dir.path().join("missing"), "cannot be read");
    }

    #[test]
    fn a_vmlinux_of_another_build_is_refused() {
        assert_falls_back_to_kallsyms(Path::new("/bin/true"), "does not match the running kernel's");
    }

    /// A stand-in vmlinux: `_stext` and `vfs_read` at the running kernel's
    /// addresses shifted down by `shift`, as a relocated (KASLR) kernel's
    /// link addresses would be, with the running kernel's build id.
    const FAKE_VMLINUX_C: &str = r#"void _stext(void) { __asm__ volatile("" ::: "memory"); }

static inline __attribute__((always_inline)) int fake_inner(int x) {
    return x * 5 + 1; /* INNER */
}

__attribute__((section(".fake_vfs_read"), noinline)) int vfs_read(int x) {
    return fake_inner(x) ^ 3; /* OUTER */
}
"#;

    #[test]
    fn a_matching_vmlinux_gives_lines_and_undoes_kaslr() {
        let symbols = kallsyms();
        let (stext, vfs_read, vfs_write) = (
            kallsyms_addr(&symbols, "_stext"),
            kallsyms_addr(&symbols, "vfs_read"),
            kallsyms_addr(&symbols, "vfs_write"),
        );
        let build_id =
            running_kernel_build_id().expect("the running kernel's build id is in /sys/kernel/notes");
        let shift = 0x20_0000;
        let dir = TempDir::new().unwrap();
        let vmlinux = fake_vmlinux(dir.path(), &hex(&build_id), stext - shift, vfs_read - shift);

        let (kernel, warnings) = KernelSymbolizer::new(Some(&vmlinux));
        assert!(warnings.is_empty(), "{warnings:?}");
        assert!(kernel.has_vmlinux());
        let frames = kernel.symbolize(&[vfs_read, vfs_write + 0x10]);
        let frame = &frames[0];
        assert_eq!((frame.symbol.as_deref(), frame.offset), (Some("vfs_read"), Some(0)), "{frame:?}");
        assert!(frame.file.as_deref().is_some_and(|f| f.ends_with("/vmlinux.c")), "{frame:?}");
        assert_eq!(frame.line, Some(line_of(FAKE_VMLINUX_C, "OUTER")));
        assert_eq!(
            frame.inlined,
            [InlinedFrame {
                symbol: "fake_inner".to_string(),
                file: frame.file.clone(),
                line: Some(line_of(FAKE_VMLINUX_C, "INNER")),
            }]
        );
        assert_eq!(frame.module.as_deref(), Some("kernel"));
        assert_eq!(
            frame_label(frame),
            format!("vfs_read+0x0 (vmlinux.c:{})", line_of(FAKE_VMLINUX_C, "OUTER"))
        );
        // Not in this vmlinux: kallsyms still names it.
        let frame = &frames[1];
        assert_eq!(
            (frame.symbol.as_deref(), frame.offset, frame.file.as_deref()),
            (Some("vfs_write"), Some(0x10), None)
        );
    }

    /// `tracer report --vmlinux`: another kernel than this one, known only
    /// by the build id and `_stext` a capture recorded.
    #[test]
    fn a_recorded_kernel_is_resolved_from_its_build_id_and_stext() {
        let (link_stext, link_vfs_read, kaslr) =
            (0xffff_ffff_8100_0000u64, 0xffff_ffff_8120_0000u64, 0x1e0_0000);
        let build_id = "0123456789abcdef0123456789abcdef01234567";
        let dir = TempDir::new().unwrap();
        let vmlinux = fake_vmlinux(dir.path(), build_id, link_stext, link_vfs_read);

        let kernel =
            KernelSymbolizer::for_recorded_kernel(&vmlinux, Some(build_id), Some(link_stext + kaslr))
                .unwrap_or_else(|e| panic!("{e}"));
        let recorded = |addr, symbol: &str| Frame {
            addr,
            symbol: Some(symbol.into()),
            offset: Some(0x10),
            module: Some("kernel".into()),
            ..Frame::default()
        };
        // A return address into vfs_read, and one this vmlinux does not
        // know (kept as recorded).
        let mut frames =
            [recorded(link_vfs_read + kaslr + 4, "?"), recorded(0xffff_ffff_9000_0010, "vfs_write")];
        kernel.resolve_recorded(&mut frames);
        let frame = &frames[0];
        assert_eq!((frame.symbol.as_deref(), frame.offset), (Some("vfs_read"), Some(4)), "{frame:?}");
        assert!(frame.file.as_deref().is_some_and(|f| f.ends_with("/vmlinux.c")), "{frame:?}");
        assert!(frame.line.is_some(), "{frame:?}");
        assert_eq!(frames[1], recorded(0xffff_ffff_9000_0010, "vfs_write"));

        let other = "ffffffffffffffffffffffffffffffffffffffff";
        let Err(why) = KernelSymbolizer::for_recorded_kernel(&vmlinux, Some(other), Some(link_stext)) else {
            panic!("a vmlinux of another build was accepted")
        };
        assert!(why.contains("does not match the traced kernel's ffff"), "{why}");
        let Err(why) = KernelSymbolizer::for_recorded_kernel(&vmlinux, Some(build_id), None) else {
            panic!("accepted without a recorded _stext")
        };
        assert!(why.contains("does not record where the traced kernel was loaded"), "{why}");
        let Err(why) = KernelSymbolizer::for_recorded_kernel(&vmlinux, None, Some(link_stext)) else {
            panic!("accepted without a recorded build id")
        };
        assert!(why.contains("does not record the traced kernel's build id"), "{why}");
    }

    #[test]
    fn reads_the_gnu_build_id_among_other_notes() {
        let note = |name: &[u8], kind: u32, desc: &[u8]| {
            let mut bytes = Vec::new();
            for word in [name.len() as u32, desc.len() as u32, kind] {
                bytes.extend(word.to_ne_bytes());
            }
            bytes.extend(name);
            bytes.resize(bytes.len().div_ceil(4) * 4, 0);
            bytes.extend(desc);
            bytes.resize(bytes.len().div_ceil(4) * 4, 0);
            bytes
        };
        let id = [0xab, 0xf9, 0xec, 0x0e, 0xc5];
        let notes = [note(b"Linux\0", 0x101, &[1, 2, 3]), note(b"Xen\0", 3, &[9; 8]), note(b"GNU\0", 3, &id)]
            .concat();
        assert_eq!(gnu_build_id_from_notes(&notes), Some(id.to_vec()));
        assert_eq!(gnu_build_id_from_notes(&notes[..notes.len() - 4]), None, "truncated");
        assert_eq!(gnu_build_id_from_notes(b"garbage"), None);
        assert_eq!(running_kernel_build_id().map(|id| id.len()), Some(20), "sha1 build id of this kernel");
    }

    #[test]
    fn labels_say_what_is_known() {
        let kernel = Frame {
            addr: 0xffff_ffff_8123_4567,
            symbol: Some("__kmalloc_node_noprof".into()),
            offset: Some(0x4b),
            module: Some("kernel".into()),
            ..Default::default()
        };
        assert_eq!(frame_label(&kernel), "__kmalloc_node_noprof+0x4b");
        let user = Frame {
            symbol: Some("alloc_chunk".into()),
            offset: Some(0x1c),
            file: Some("/src/app/helper.rs".into()),
            line: Some(42),
            module: Some("/usr/bin/app".into()),
            file_offset: Some(0x2000),
            ..Default::default()
        };
        assert_eq!(frame_label(&user), "alloc_chunk+0x1c (helper.rs:42)");
        assert_eq!(frame_labels(&user), ["alloc_chunk+0x1c (helper.rs:42)"]);
        let module_only = Frame {
            addr: 0x7f00_0000_1234,
            module: Some("/usr/lib/libfoo.so".into()),
            file_offset: Some(0x1234),
            ..Default::default()
        };
        assert_eq!(frame_label(&module_only), "[libfoo.so+0x1234]");
        let unknown_kernel =
            Frame { addr: 0xffff_ffff_8123_4567, module: Some("kernel".into()), ..Default::default() };
        assert_eq!(frame_label(&unknown_kernel), "0xffffffff81234567");
        assert_eq!(frame_label(&Frame { addr: 0x42, ..Default::default() }), "0x42");
        let marker = Frame { truncated: Some("no CFI for app".into()), ..Default::default() };
        assert_eq!(frame_label(&marker), "[truncated: no CFI for app]");
    }

    #[test]
    fn inlined_labels_follow_their_caller() {
        let frame = Frame {
            symbol: Some("outer".into()),
            offset: Some(0x10),
            file: Some("a.c".into()),
            line: Some(30),
            inlined: vec![
                InlinedFrame { symbol: "middle".into(), file: Some("b.h".into()), line: Some(12) },
                InlinedFrame { symbol: "inner".into(), file: None, line: None },
            ],
            ..Default::default()
        };
        assert_eq!(
            frame_labels(&frame),
            ["outer+0x10 (a.c:30)", "middle (b.h:12) [inlined]", "inner [inlined]"]
        );
    }

    #[test]
    fn maps_file_offsets_through_segments() {
        let segments = [
            Segment { file_offset: 0, file_size: 0x5e0, address: 0 },
            Segment { file_offset: 0x2e00, file_size: 0x210, address: 0x3e00 },
        ];
        assert_eq!(file_offset_to_elf_addr(&segments, 0x10), Some(0x10));
        assert_eq!(file_offset_to_elf_addr(&segments, 0x2e08), Some(0x3e08));
        assert_eq!(file_offset_to_elf_addr(&segments, 0x1000), None);
        assert_eq!(lookup_addrs(&[0x100, 0x200, 0]), [0x100, 0x1ff, 0]);
        assert_eq!(unhex(&hex(&[0, 0xab, 0xff])), Some(vec![0, 0xab, 0xff]));
        assert_eq!(unhex("abc"), None);
        assert_eq!(unhex("zz"), None);
    }
}
