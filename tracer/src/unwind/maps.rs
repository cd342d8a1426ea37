//! A process's code, as its memory map shows it, with the unwind tables
//! (CFI) of each file it maps: what `framehop` unwinds through.

use std::{
    collections::HashMap,
    fs::File,
    ops::Range,
    path::{Path, PathBuf},
    sync::Arc,
};

use framehop::{ExplicitModuleSectionInfo, Module};
use object::{Object as _, ObjectSection as _, ObjectSegment as _};

/// One line of `/proc/PID/maps`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mapping {
    pub range: Range<u64>,
    pub executable: bool,
    /// File offset of `range.start`.
    pub offset: u64,
    /// Device and inode: the file's identity (0 for anonymous memory).
    pub dev: String,
    pub inode: u64,
    /// A path, `[vdso]`, `[stack]`... or empty.
    pub path: String,
}

/// Whether an executable mapping of `text` (`/proc/PID/maps`) holds `ip`:
/// not in the map of a process whose memory is being torn down (an OOM
/// victim being reaped).
pub fn executes(text: &str, ip: u64) -> bool {
    parse_maps(text).iter().any(|m| m.executable && m.range.contains(&ip))
}

/// Parses `/proc/PID/maps` text; lines it does not understand are skipped.
pub fn parse_maps(text: &str) -> Vec<Mapping> {
    text.lines().filter_map(parse_maps_line).collect()
}

fn parse_maps_line(line: &str) -> Option<Mapping> {
    let mut fields = line.splitn(6, ' ');
    let (start, end) = fields.next()?.split_once('-')?;
    let perms = fields.next()?;
    let offset = u64::from_str_radix(fields.next()?, 16).ok()?;
    let dev = fields.next()?.to_string();
    let inode = fields.next()?.parse().ok()?;
    let path = fields.next().unwrap_or("").trim_start().to_string();
    Some(Mapping {
        range: u64::from_str_radix(start, 16).ok()?..u64::from_str_radix(end, 16).ok()?,
        executable: perms.as_bytes().get(2) == Some(&b'x'),
        offset,
        dev,
        inode,
        path,
    })
}

/// Unwind data of one file, shared by every process that maps it.
pub struct ObjectCfi {
    /// What framehop needs, `None` where the file has no such section.
    sections: ExplicitModuleSectionInfo<Arc<[u8]>>,
    /// Loadable segments: (file offset, file size, address).
    segments: Vec<(u64, u64, u64)>,
    /// Link-time address ranges that CFI (`.eh_frame`, else
    /// `.debug_frame`, here or in its debug file) describes, sorted.
    covered: Vec<Range<u64>>,
    /// GNU build id, hex.
    pub build_id: Option<String>,
}

impl ObjectCfi {
    /// Reads `path`'s unwind sections; `.debug_frame` is also looked for
    /// in a debug file found by build id when the file has no CFI.
    pub fn load(path: &Path, debug_dirs: &[&Path]) -> Option<ObjectCfi> {
        // Only the sections needed are read (a binary with DWARF can be
        // hundreds of MB).
        let data = object::ReadCache::new(File::open(path).ok()?);
        let elf = object::File::parse(&data).ok()?;
        let section = |name: &str| {
            let s = elf.section_by_name(name)?;
            let bytes = s.uncompressed_data().ok()?;
            Some((s.address()..s.address() + s.size(), Arc::<[u8]>::from(&*bytes)))
        };
        let (eh_frame_svma, eh_frame) = section(".eh_frame").unzip();
        let (eh_frame_hdr_svma, eh_frame_hdr) = section(".eh_frame_hdr").unzip();
        let (text_svma, _) = section(".text").map(|(r, _)| (r, ())).unzip();
        let (got_svma, _) = section(".got").map(|(r, _)| (r, ())).unzip();
        let mut debug_frame = section(".debug_frame").map(|(_, d)| d);
        if eh_frame.is_none() && debug_frame.is_none() {
            debug_frame =
                elf.build_id().ok().flatten().and_then(|id| debug_frame_by_build_id(id, debug_dirs));
        }
        let covered = match (&eh_frame, &eh_frame_svma, &debug_frame) {
            (Some(data), Some(svma), _) => {
                let mut bases = gimli::BaseAddresses::default().set_eh_frame(svma.start);
                if let Some(text) = &text_svma {
                    bases = bases.set_text(text.start);
                }
                if let Some(got) = &got_svma {
                    bases = bases.set_got(got.start);
                }
                let mut section = gimli::EhFrame::new(data, gimli::LittleEndian);
                section.set_address_size(8);
                fde_ranges(&section, &bases)
            }
            (_, _, Some(data)) => {
                let mut section = gimli::DebugFrame::new(data, gimli::LittleEndian);
                section.set_address_size(8);
                fde_ranges(&section, &gimli::BaseAddresses::default())
            }
            _ => Vec::new(),
        };
        let segments = elf
            .segments()
            .map(|s| {
                let (offset, size) = s.file_range();
                (offset, size, s.address())
            })
            .collect();
        Some(ObjectCfi {
            sections: ExplicitModuleSectionInfo {
                base_svma: 0,
                text_svma,
                got_svma,
                eh_frame_svma,
                eh_frame,
                eh_frame_hdr_svma,
                eh_frame_hdr,
                debug_frame,
                ..Default::default()
            },
            segments,
            covered,
            build_id: elf.build_id().ok().flatten().map(crate::symbolize::hex),
        })
    }

    /// Whether CFI describes link-time address `svma`.
    pub fn covers(&self, svma: u64) -> bool {
        let i = self.covered.partition_point(|r| r.start <= svma);
        self.covered[..i].last().is_some_and(|r| r.contains(&svma))
    }

    /// The address this file links at file offset `offset`.
    fn svma_of_offset(&self, offset: u64) -> Option<u64> {
        self.segments
            .iter()
            .find(|&&(start, size, _)| (start..start + size.max(1)).contains(&offset))
            .map(|&(start, _, address)| address + (offset - start))
    }
}

/// The address ranges of every FDE in a CFI section, sorted.
fn fde_ranges<'a, S>(section: &S, bases: &gimli::BaseAddresses) -> Vec<Range<u64>>
where
    S: gimli::UnwindSection<gimli::EndianSlice<'a, gimli::LittleEndian>>,
{
    let mut ranges = Vec::new();
    let mut entries = section.entries(bases);
    while let Ok(Some(entry)) = entries.next() {
        if let gimli::CieOrFde::Fde(partial) = entry
            && let Ok(fde) = partial.parse(|section, bases, offset| section.cie_from_offset(bases, offset))
            && fde.len() > 0
        {
            ranges.push(fde.initial_address()..fde.initial_address() + fde.len());
        }
    }
    ranges.sort_by_key(|r| r.start);
    ranges
}

fn debug_frame_by_build_id(build_id: &[u8], debug_dirs: &[&Path]) -> Option<Arc<[u8]>> {
    let (first, rest) = build_id.split_first()?;
    let name = format!("{first:02x}/{}.debug", crate::symbolize::hex(rest));
    debug_dirs.iter().find_map(|dir| {
        let data = object::ReadCache::new(File::open(dir.join(".build-id").join(&name)).ok()?);
        let elf = object::File::parse(&data).ok()?;
        let section = elf.section_by_name(".debug_frame")?;
        Some(Arc::<[u8]>::from(&*section.uncompressed_data().ok()?))
    })
}

/// Executable memory of a process: where, which file, and that file's
/// CFI with its load bias (`None` for anonymous code, or a file that
/// could not be read).
#[derive(Clone)]
pub struct CodeRange {
    pub range: Range<u64>,
    /// File offset of `range.start`.
    pub offset: u64,
    pub path: String,
    pub cfi: Option<(Arc<ObjectCfi>, u64)>,
}

impl CodeRange {
    /// Whether CFI describes the code at `addr` (else framehop follows
    /// frame pointers there).
    pub fn has_cfi_at(&self, addr: u64) -> bool {
        self.cfi.as_ref().is_some_and(|(object, bias)| object.covers(addr.wrapping_sub(*bias)))
    }
}

/// Parsed files, by identity, shared across processes (libc once).
#[derive(Default)]
pub struct ObjectCache {
    objects: HashMap<(String, u64, String), Option<Arc<ObjectCfi>>>,
}

/// Most files kept parsed.
const OBJECT_CACHE_MAX: usize = 64;

impl ObjectCache {
    fn get(&mut self, mapping: &Mapping, root: &Path, debug_dirs: &[&Path]) -> Option<Arc<ObjectCfi>> {
        let key = (mapping.dev.clone(), mapping.inode, mapping.path.clone());
        if self.objects.len() >= OBJECT_CACHE_MAX && !self.objects.contains_key(&key) {
            self.objects.clear();
        }
        if let Some(object) = self.objects.get(&key) {
            return object.clone();
        }
        // Through the process's root, as the process sees the path
        // (containers); else the path as this process sees it: a process
        // that is being killed loses its root before its map.
        let path = root.join(mapping.path.trim_start_matches('/'));
        let global = Path::new(&mapping.path);
        let same_file = || {
            use std::os::unix::fs::MetadataExt as _;
            std::fs::metadata(global).is_ok_and(|m| m.ino() == mapping.inode)
        };
        let object = ObjectCfi::load(&path, debug_dirs)
            .or_else(|| same_file().then(|| ObjectCfi::load(global, debug_dirs)).flatten())
            .map(Arc::new);
        // A file that could not be read is tried again next time: caching
        // the failure would leave every later stack of that binary without
        // CFI.
        if object.is_some() {
            self.objects.insert(key, object.clone());
        }
        object
    }
}

/// The modules of a process for framehop, and where code is.
pub struct ProcessCode {
    pub modules: Vec<Module<Arc<[u8]>>>,
    /// Every executable mapping, file-backed or not.
    pub code: Vec<CodeRange>,
}

/// Builds the unwind view of a process from its mappings; `root` is the
/// directory its paths are relative to (`/proc/PID/root`).
pub fn process_code(
    mappings: &[Mapping],
    cache: &mut ObjectCache,
    root: &Path,
    debug_dirs: &[&Path],
) -> ProcessCode {
    let mut modules = Vec::new();
    let mut code = Vec::new();
    // Mappings of one file are adjacent and share its inode.
    let mut by_file: Vec<(&Mapping, Range<u64>)> = Vec::new();
    for m in mappings.iter().filter(|m| m.inode != 0 && m.path.starts_with('/')) {
        match by_file.last_mut() {
            Some((first, range)) if first.inode == m.inode && first.dev == m.dev && first.path == m.path => {
                range.end = range.end.max(m.range.end);
            }
            _ => by_file.push((m, m.range.clone())),
        }
    }
    for (first, range) in &by_file {
        let of_file = || mappings.iter().filter(|m| m.inode == first.inode && range.contains(&m.range.start));
        let object = cache.get(first, root, debug_dirs);
        // The load bias, from any mapping of the file that a segment covers.
        let cfi = object.and_then(|object| {
            let bias = of_file()
                .find_map(|m| object.svma_of_offset(m.offset).map(|svma| m.range.start.wrapping_sub(svma)))?;
            Some((object, bias))
        });
        for m in of_file().filter(|m| m.executable) {
            code.push(CodeRange {
                range: m.range.clone(),
                offset: m.offset,
                path: m.path.clone(),
                cfi: cfi.clone(),
            });
        }
        if let Some((object, bias)) = cfi {
            modules.push(Module::new(first.path.clone(), range.clone(), bias, object.sections.clone()));
        }
    }
    for m in mappings.iter().filter(|m| m.executable && !(m.inode != 0 && m.path.starts_with('/'))) {
        code.push(CodeRange { range: m.range.clone(), offset: m.offset, path: m.path.clone(), cfi: None });
    }
    code.sort_by_key(|c| c.range.start);
    ProcessCode { modules, code }
}

impl ProcessCode {
    /// A user frame at `addr` normalized as [`crate::symbolize`] resolves
    /// it later, here or elsewhere: its file, file offset, build id and
    /// link-time address. From the map read at the event, so the process
    /// may be gone by now.
    pub fn frame(&self, addr: u64) -> crate::model::Frame {
        let mut frame = crate::model::Frame { addr, ..Default::default() };
        let Some(code) = self.code_at(addr) else {
            return frame;
        };
        frame.module = (!code.path.is_empty()).then(|| code.path.clone());
        if let Some((object, bias)) = &code.cfi {
            frame.file_offset = Some(addr - code.range.start + code.offset);
            frame.build_id = object.build_id.clone();
            frame.elf_addr = Some(addr.wrapping_sub(*bias));
        }
        frame
    }

    /// The executable mapping holding `addr`.
    pub fn code_at(&self, addr: u64) -> Option<&CodeRange> {
        let i = self.code.partition_point(|c| c.range.start <= addr);
        self.code[..i].last().filter(|c| c.range.contains(&addr))
    }
}

/// The process's root directory, for its paths.
pub fn process_root(pid: u32) -> PathBuf {
    PathBuf::from(format!("/proc/{pid}/root"))
}

/// `/proc/PID/maps`, or `None` when the process is gone (or has no
/// address space left).
pub fn read_maps(pid: u32) -> Option<String> {
    use std::io::Read as _;
    let mut text = String::new();
    File::open(format!("/proc/{pid}/maps")).ok()?.read_to_string(&mut text).ok()?;
    (!text.is_empty()).then_some(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_maps_lines() {
        let text = "\
555555554000-555555555000 r--p 00000000 fd:01 1234                       /usr/bin/app
555555555000-555555556000 r-xp 00001000 fd:01 1234                       /usr/bin/app with space
7ffff7fc1000-7ffff7fc3000 r-xp 00000000 00:00 0                          [vdso]
7ffffffde000-7ffffffff000 rw-p 00000000 00:00 0                          [stack]
7ffff7d00000-7ffff7d10000 rw-p 00000000 00:00 0 
garbage
";
        let maps = parse_maps(text);
        assert_eq!(maps.len(), 5);
        assert_eq!(maps[0].range, 0x5555_5555_4000..0x5555_5555_5000);
        assert!(!maps[0].executable && maps[1].executable);
        assert_eq!((maps[1].offset, maps[1].inode), (0x1000, 1234));
        assert_eq!(maps[1].path, "/usr/bin/app with space");
        assert_eq!(maps[2].path, "[vdso]");
        assert_eq!(maps[4].path, "");
    }
}
