//! The unwinder glue against recorded user registers and stack dumps, as
//! the kernel programs take them: a fixture built like distribution C
//! (`-O2 -fomit-frame-pointer`, no frame pointers) records its own
//! registers, the top of its stack and its memory map in `g`, called from
//! `f`, called from `main`; the tests unwind and resolve that record after
//! the fixture has exited. No root needed.

use std::{path::Path, process::Command};

use tempfile::TempDir;

use super::*;
use crate::{model::Frame, symbolize};

const FIXTURE_C: &str = r#"#include <stdio.h>
#include <stdlib.h>

/* The end of the mapping holding sp: the copy must not run past it. */
static unsigned long stack_end(unsigned long sp) {
    FILE *maps = fopen("/proc/self/maps", "r");
    char line[512];
    unsigned long lo, hi, end = sp;
    while (fgets(line, sizeof line, maps))
        if (sscanf(line, "%lx-%lx", &lo, &hi) == 2 && lo <= sp && sp < hi)
            end = hi;
    fclose(maps);
    return end;
}

/* ip, sp, bp, the length, that many bytes from sp, then /proc/self/maps. */
__attribute__((noipa)) void record(unsigned long ip, unsigned long sp, unsigned long bp) {
    unsigned long end = stack_end(sp);
    unsigned long len = end - sp < 8192 ? end - sp : 8192;
    FILE *out = fopen(getenv("DUMP"), "w");
    unsigned long head[4] = {ip, sp, bp, len};
    fwrite(head, sizeof head, 1, out);
    fwrite((const void *)sp, 1, len, out);
    FILE *maps = fopen("/proc/self/maps", "r");
    int c;
    while ((c = fgetc(maps)) != EOF)
        fputc(c, out);
    fclose(maps);
    fclose(out);
}

__attribute__((noipa)) int g(int x) {
    unsigned long ip, sp, bp;
    __asm__ volatile("lea 0(%%rip), %0\n\tmov %%rsp, %1\n\tmov %%rbp, %2" : "=r"(ip), "=r"(sp), "=r"(bp) : : "memory"); /* G-HERE */
    record(ip, sp, bp);
    return x * 3 + 1;
}

__attribute__((noipa)) int f(int x) {
    int r = g(x + 1); /* F-CALL */
    return r * 2;
}

int main(int argc, char **argv) {
    (void)argv;
    int r = f(argc); /* MAIN-CALL */
    printf("%d\n", r);
    return 0;
}
"#;

fn line_of(marker: &str) -> u32 {
    FIXTURE_C.lines().position(|l| l.contains(marker)).expect("marker in the fixture") as u32 + 1
}

/// A recorded event: the sample and the process's memory map then.
struct Dump {
    sample: UserStackSample,
    maps: String,
    /// The fixture's, which has exited.
    pid: u32,
}

/// Builds the fixture with `flags`, runs it, and reads what it recorded.
fn record(dir: &Path, name: &str, flags: &[&str]) -> Dump {
    let source = dir.join(format!("{name}.c"));
    let binary = dir.join(name);
    std::fs::write(&source, FIXTURE_C).unwrap();
    let out =
        Command::new("gcc").args(["-g", "-O2"]).args(flags).arg("-o").arg(&binary).arg(&source).output();
    let out = out.expect("gcc runs");
    assert!(out.status.success(), "gcc: {}", String::from_utf8_lossy(&out.stderr));
    let dump = dir.join(format!("{name}.dump"));
    let mut child =
        Command::new(&binary).env("DUMP", &dump).stdout(std::process::Stdio::null()).spawn().unwrap();
    let pid = child.id();
    assert!(child.wait().unwrap().success());
    let bytes = std::fs::read(&dump).unwrap();
    let word = |i: usize| u64::from_le_bytes(bytes[i * 8..i * 8 + 8].try_into().unwrap());
    let len = word(3) as usize;
    Dump {
        sample: UserStackSample {
            ip: word(0),
            sp: word(1),
            bp: word(2),
            requested: 8192,
            stack: bytes[32..32 + len].to_vec(),
        },
        maps: String::from_utf8(bytes[32 + len..].to_vec()).unwrap(),
        pid,
    }
}

/// Unwinds a dump as `tracer` does for an event.
fn unwind_dump(dump: &Dump) -> Unwound {
    let (unwinder, code) = process_from_maps(&dump.maps);
    unwind(&unwinder, &code, &mut CacheX86_64::new(), &dump.sample)
}

/// Frames of a stack normalized from the recorded map and resolved from
/// the files (the process is gone: as `tracer` does for a victim that has
/// exited, or `tracer report` elsewhere).
fn resolve(addrs: &[u64], maps: &str) -> Vec<Frame> {
    let (_, code) = process_from_maps(maps);
    let mut frames: Vec<Frame> = addrs.iter().map(|&addr| code.frame(addr)).collect();
    symbolize::resolve_user_frames(&mut frames);
    frames
}

#[test]
fn unwinds_code_without_frame_pointers_from_its_cfi() {
    let dir = TempDir::new().unwrap();
    let dump = record(dir.path(), "nofp", &["-fomit-frame-pointer"]);
    let unwound = unwind_dump(&dump);
    assert_eq!(unwound.method, Some(Method::Dwarf), "{unwound:?}");
    assert_eq!(unwound.truncated, None, "{unwound:?}");
    let frames = resolve(&unwound.addrs, &dump.maps);
    let named: Vec<(String, Option<u32>)> =
        frames.iter().take(3).map(|f| (f.symbol.clone().unwrap_or_default(), f.line)).collect();
    assert_eq!(
        named,
        [
            ("g".to_string(), Some(line_of("G-HERE"))),
            ("f".to_string(), Some(line_of("F-CALL"))),
            ("main".to_string(), Some(line_of("MAIN-CALL")))
        ],
        "{frames:#?}"
    );
    // On through libc's start code to _start, which ends the stack.
    assert!(
        frames.iter().skip(3).any(|f| f.module.as_deref().is_some_and(|m| m.contains("libc"))),
        "{frames:#?}"
    );
    assert_eq!(frames.last().unwrap().symbol.as_deref(), Some("_start"), "{frames:#?}");
    // Enough to resolve it again elsewhere.
    let g = &frames[0];
    assert!(g.module.as_deref().is_some_and(|m| m.ends_with("/nofp")), "{g:?}");
    assert!(g.build_id.as_ref().is_some_and(|id| id.len() == 40), "{g:?}");
    assert!(g.file_offset.is_some() && g.elf_addr.is_some(), "{g:?}");
}

#[test]
fn a_stack_copy_too_small_ends_with_a_marker() {
    let dir = TempDir::new().unwrap();
    let mut dump = record(dir.path(), "small", &["-fomit-frame-pointer"]);
    dump.sample.stack.truncate(16);
    let unwound = unwind_dump(&dump);
    assert_eq!(unwound.addrs[0], dump.sample.ip);
    assert_eq!(unwound.truncated.as_deref(), Some("stack copy too small (16 bytes)"), "{unwound:?}");
}

/// The dump as if its binary had no CFI: unwound against a copy without
/// `.eh_frame`, `.eh_frame_hdr` and `.debug_frame`.
fn without_cfi(dir: &Path, name: &str, mut dump: Dump) -> Dump {
    let (binary, stripped) = (dir.join(name), dir.join(format!("{name}.stripped")));
    let status = Command::new("objcopy")
        .args(["-R", ".eh_frame", "-R", ".eh_frame_hdr", "-R", ".debug_frame"])
        .arg(&binary)
        .arg(&stripped)
        .status()
        .expect("objcopy runs");
    assert!(status.success());
    dump.maps = dump.maps.replace(binary.to_str().unwrap(), stripped.to_str().unwrap());
    dump
}

#[test]
fn code_without_cfi_or_frame_pointers_ends_with_a_marker() {
    let dir = TempDir::new().unwrap();
    let mut dump = without_cfi(dir.path(), "nocfi", record(dir.path(), "nocfi", &["-fomit-frame-pointer"]));
    // What -O2 leaves in rbp is not a frame pointer; 0 makes that plain.
    dump.sample.bp = 0;
    let unwound = unwind_dump(&dump);
    assert_eq!(unwound.method, Some(Method::FramePointers), "{unwound:?}");
    assert_eq!(unwound.addrs, [dump.sample.ip]);
    assert_eq!(unwound.truncated.as_deref(), Some("no CFI for nocfi.stripped, and no frame pointer"));
    // A frame pointer that points nowhere.
    dump.sample.bp = 8;
    let unwound = unwind_dump(&dump);
    assert_eq!(unwound.addrs, [dump.sample.ip]);
    assert_eq!(
        unwound.truncated.as_deref(),
        Some("no CFI for nocfi.stripped, and its frame pointers lead nowhere"),
        "{unwound:?}"
    );
}

#[test]
fn frame_pointers_unwind_code_without_cfi() {
    let dir = TempDir::new().unwrap();
    let dump = without_cfi(dir.path(), "fp", record(dir.path(), "fp", &["-fno-omit-frame-pointer"]));
    let unwound = unwind_dump(&dump);
    let frames = resolve(&unwound.addrs, &dump.maps);
    let names: Vec<&str> = frames.iter().take(3).map(|f| f.symbol.as_deref().unwrap_or("?")).collect();
    assert_eq!(names, ["g", "f", "main"], "{unwound:?}");
    // libc's start code has CFI, the fixture's own code has none.
    assert_eq!(unwound.method, Some(Method::Mixed), "{unwound:?}");
    assert_eq!(unwound.truncated, None, "{unwound:?}");
}

#[test]
fn an_empty_copy_or_a_stray_ip_gives_the_innermost_frame_and_why() {
    let dir = TempDir::new().unwrap();
    let dump = record(dir.path(), "empty", &["-fomit-frame-pointer"]);
    let (unwinder, code) = process_from_maps(&dump.maps);
    let mut cache = CacheX86_64::new();
    let empty = UserStackSample { stack: Vec::new(), ..dump.sample.clone() };
    let unwound = unwind(&unwinder, &code, &mut cache, &empty);
    assert_eq!(unwound.addrs, [dump.sample.ip]);
    assert_eq!(unwound.truncated.as_deref(), Some("user stack not captured (its memory could not be read)"));
    let stray = UserStackSample { ip: 0x10, ..dump.sample.clone() };
    let unwound = unwind(&unwinder, &code, &mut cache, &stray);
    assert_eq!(unwound.truncated.as_deref(), Some("the instruction pointer 0x10 is outside any code"));
}

#[test]
fn a_process_that_is_gone_says_so() {
    let mut child = Command::new("true").spawn().unwrap();
    let pid = child.id();
    child.wait().unwrap();
    let sample =
        UserStackSample { ip: 0x401000, sp: 0x7ff0_0000, bp: 0, requested: 8192, stack: vec![0; 64] };
    let unwound = UserUnwinder::default().unwind(pid, None, &sample);
    assert_eq!(unwound.addrs, [0x401000]);
    assert_eq!(unwound.truncated.as_deref(), Some("process gone before its memory map was read"));
}

/// An OOM trigger that was its own victim: gone when its event is read,
/// unwound from the map taken as it entered reclaim, if the event's
/// address space is that map's.
#[test]
fn a_process_gone_is_unwound_from_its_snapshot_of_the_same_address_space() {
    use snapshots::{Snapshot, Snapshots, useful_lines};
    let dir = TempDir::new().unwrap();
    let dump = record(dir.path(), "gone", &["-fomit-frame-pointer"]);
    let kept = Arc::new(Mutex::new(Snapshots::default()));
    kept.lock().unwrap().insert(dump.pid, Snapshot { mm: 0x1000, maps: useful_lines(&dump.maps) });
    let mut unwinder = UserUnwinder::default();
    unwinder.use_snapshots(kept);
    let gone = Some("process gone before its memory map was read");
    // Another process under the same pid (or after an exec): not its map.
    let other = unwinder.unwind(dump.pid, Some(0x2000), &dump.sample);
    assert_eq!((other.addrs.as_slice(), other.truncated.as_deref()), ([dump.sample.ip].as_slice(), gone));
    // An event that does not say which address space: not used either.
    assert_eq!(unwinder.unwind(dump.pid, None, &dump.sample).truncated.as_deref(), gone);

    let unwound = unwinder.unwind(dump.pid, Some(0x1000), &dump.sample);
    assert_eq!((unwound.method, unwound.truncated.as_deref()), (Some(Method::Dwarf), None), "{unwound:?}");
    let mut frames = unwinder.frames(dump.pid, &unwound.addrs).unwrap();
    symbolize::resolve_user_frames(&mut frames);
    let named: Vec<&str> = frames.iter().take(3).map(|f| f.symbol.as_deref().unwrap_or("?")).collect();
    assert_eq!(named, ["g", "f", "main"], "{frames:#?}");
    assert_eq!(frames.last().unwrap().symbol.as_deref(), Some("_start"), "{frames:#?}");
    // The view kept from it is not lent to a later process of that pid.
    assert_eq!(unwinder.unwind(dump.pid, Some(0x3000), &dump.sample).truncated.as_deref(), gone);
}

#[test]
fn reads_the_sample_after_an_event() {
    let head = UserStackHeader { ip: 0x1234, sp: 0x7000, bp: 0x7100, len: 16, requested: 8192 };
    let mut tail = unsafe {
        std::slice::from_raw_parts((&head as *const UserStackHeader).cast::<u8>(), USER_STACK_HEADER_BYTES)
    }
    .to_vec();
    tail.extend(0x1111_u64.to_le_bytes());
    tail.extend(0x2222_u64.to_le_bytes());
    tail.extend([0xee; 8]); // past `len`: not part of the copy
    let sample = UserStackSample::from_record_tail(&tail).unwrap();
    assert_eq!((sample.ip, sample.sp, sample.bp, sample.requested), (0x1234, 0x7000, 0x7100, 8192));
    assert_eq!(sample.stack.len(), 16);
    assert_eq!(
        (sample.read(0x7000), sample.read(0x7008), sample.read(0x7010)),
        (Some(0x1111), Some(0x2222), None)
    );
    assert_eq!(sample.read(0x6ff8), None);
    // Copies off, or no header at all.
    let off = UserStackHeader { requested: 0, len: 0, ..head };
    let off = unsafe {
        std::slice::from_raw_parts((&off as *const UserStackHeader).cast::<u8>(), USER_STACK_HEADER_BYTES)
    };
    assert_eq!(UserStackSample::from_record_tail(off), None);
    assert_eq!(UserStackSample::from_record_tail(&[]), None);
    // A length past the record's end is cut to it.
    let long = UserStackHeader { len: 4096, ..head };
    let long = unsafe {
        std::slice::from_raw_parts((&long as *const UserStackHeader).cast::<u8>(), USER_STACK_HEADER_BYTES)
    };
    assert_eq!(UserStackSample::from_record_tail(long).unwrap().stack.len(), 0);
}

/// A victim being reaped has a map without its code: the unwinder then
/// takes the snapshot of the same address space.
#[test]
fn a_map_torn_down_past_the_instruction_does_not_execute_it() {
    let live = "55a471ed3000-55a471ed4000 r-xp 00001000 fe:01 1234 /usr/bin/app\n\
                7f0000000000-7f0000001000 rw-p 00000000 00:00 0 \n";
    assert!(maps::executes(live, 0x55a471ed37ca));
    let torn = "7f0000000000-7f0000001000 rw-p 00000000 00:00 0 \n";
    assert!(!maps::executes(torn, 0x55a471ed37ca));
    assert!(!maps::executes(live, 0x7f0000000010), "data is not code");
}
