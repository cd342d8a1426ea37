//! The system context a maintainer asks for first: kernel build and
//! configuration, command line, CPUs, memory, memory settings and
//! counters, disks. Read once as a run starts ([`collect`]) and the
//! counters again as it ends ([`memory_state`]). Only reads files; anything
//! unreadable is left empty, never fatal.

use std::{
    collections::BTreeMap,
    fs,
    io::Read as _,
    path::Path,
    time::{SystemTime, UNIX_EPOCH},
};

use crate::{
    kernel::{devices, vmstat, zones},
    model::{BlockDeviceInfo, CpuInfo, KernelConfig, KernelInfo, MemoryState, SystemContext},
    symbolize,
};

/// Kernel options worth a line, by prefix (`CONFIG_BPF` matches
/// `CONFIG_BPF_JIT` too).
pub const CONFIG_PREFIXES: [&str; 22] = [
    "CONFIG_BPF",
    "CONFIG_DEBUG_INFO_BTF",
    "CONFIG_KPROBES",
    "CONFIG_FPROBE",
    "CONFIG_FUNCTION_TRACER",
    "CONFIG_DYNAMIC_FTRACE",
    "CONFIG_KALLSYMS",
    "CONFIG_MEMCG",
    "CONFIG_CGROUP_BPF",
    "CONFIG_TRANSPARENT_HUGEPAGE",
    "CONFIG_HUGETLBFS",
    "CONFIG_COMPACTION",
    "CONFIG_MIGRATION",
    "CONFIG_NUMA",
    "CONFIG_SWAP",
    "CONFIG_ZSWAP",
    "CONFIG_LRU_GEN",
    "CONFIG_HZ",
    "CONFIG_NO_HZ",
    "CONFIG_PREEMPT",
    "CONFIG_BLK_CGROUP",
    "CONFIG_MQ_IOSCHED",
];

/// Memory settings read as they are, by the name they are shown under.
const SETTINGS: [(&str, &str); 17] = [
    ("transparent_hugepage.enabled", "/sys/kernel/mm/transparent_hugepage/enabled"),
    ("transparent_hugepage.defrag", "/sys/kernel/mm/transparent_hugepage/defrag"),
    ("transparent_hugepage.shmem_enabled", "/sys/kernel/mm/transparent_hugepage/shmem_enabled"),
    ("vm.zone_reclaim_mode", "/proc/sys/vm/zone_reclaim_mode"),
    ("vm.swappiness", "/proc/sys/vm/swappiness"),
    ("vm.min_free_kbytes", "/proc/sys/vm/min_free_kbytes"),
    ("vm.watermark_scale_factor", "/proc/sys/vm/watermark_scale_factor"),
    ("vm.watermark_boost_factor", "/proc/sys/vm/watermark_boost_factor"),
    ("vm.overcommit_memory", "/proc/sys/vm/overcommit_memory"),
    ("vm.compaction_proactiveness", "/proc/sys/vm/compaction_proactiveness"),
    ("vm.extfrag_threshold", "/proc/sys/vm/extfrag_threshold"),
    ("vm.dirty_ratio", "/proc/sys/vm/dirty_ratio"),
    ("vm.dirty_background_ratio", "/proc/sys/vm/dirty_background_ratio"),
    ("vm.nr_hugepages", "/proc/sys/vm/nr_hugepages"),
    ("kernel.kptr_restrict", "/proc/sys/kernel/kptr_restrict"),
    ("kernel.perf_event_paranoid", "/proc/sys/kernel/perf_event_paranoid"),
    ("kernel.unprivileged_bpf_disabled", "/proc/sys/kernel/unprivileged_bpf_disabled"),
];

fn read_trimmed(path: impl AsRef<Path>) -> Option<String> {
    fs::read_to_string(path).ok().map(|s| s.trim().to_string())
}

/// Everything, now: for the start of a run.
pub fn collect(cgroup: Option<&str>) -> SystemContext {
    let release = read_trimmed("/proc/sys/kernel/osrelease").unwrap_or_default();
    let meminfo_now = memory_state(cgroup);
    SystemContext {
        kernel: KernelInfo {
            version: read_trimmed("/proc/sys/kernel/version").unwrap_or_default(),
            machine: machine(),
            build_id: symbolize::running_kernel_build_id().map(|id| symbolize::hex(&id)),
            stext: symbolize::kallsyms_stext(),
            release: release.clone(),
        },
        config: kernel_config(&release),
        cmdline: read_trimmed("/proc/cmdline").unwrap_or_default(),
        cpus: CpuInfo {
            online: read_trimmed("/sys/devices/system/cpu/online")
                .and_then(|l| count_in_list(&l))
                .unwrap_or_else(|| std::thread::available_parallelism().map_or(0, |n| n.get() as u32)),
            model: fs::read_to_string("/proc/cpuinfo").map(|t| cpu_model(&t)).unwrap_or_default(),
        },
        memory_total_kb: meminfo_now.meminfo.get("MemTotal").copied().unwrap_or(0),
        numa_nodes: read_trimmed("/sys/devices/system/node/online")
            .and_then(|l| count_in_list(&l))
            .unwrap_or(1),
        settings: SETTINGS
            .iter()
            .filter_map(|(name, path)| Some((name.to_string(), setting_value(&read_trimmed(path)?))))
            .collect(),
        block_devices: block_devices(Path::new("/sys/block")),
        start: meminfo_now,
        end: None,
        tracer: crate::build_info::tracer_build(),
    }
}

/// The counters that move: for the start and the end of a run, with the
/// PSI of the `--cgroup` where it has its own (cgroup v2).
pub fn memory_state(cgroup: Option<&str>) -> MemoryState {
    MemoryState {
        psi_cgroup: cgroup.and_then(cgroup_psi),
        taken_unix_s: SystemTime::now().duration_since(UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64()),
        meminfo: fs::read_to_string("/proc/meminfo").map(|t| parse_meminfo(&t)).unwrap_or_default(),
        vmstat: vmstat::read(),
        buddyinfo: zones::parse_buddyinfo(&fs::read_to_string("/proc/buddyinfo").unwrap_or_default()),
        psi_memory: fs::read_to_string("/proc/pressure/memory").ok().and_then(|t| parse_psi(&t)),
    }
}

/// `memory.pressure` of a cgroup given as `--cgroup` takes it, on cgroup v2.
fn cgroup_psi(cgroup: &str) -> Option<crate::model::CgroupPsi> {
    let hierarchy = super::cgroups::Cgroups::find().filter(|c| c.version() == 2)?;
    let text = fs::read_to_string(hierarchy.dir_of(cgroup).join("memory.pressure")).ok()?;
    Some(crate::model::CgroupPsi { cgroup: cgroup.to_string(), totals: parse_psi(&text)? })
}

/// What the report's pressure line compares, now, and nothing else: cheap
/// enough for every interval of `watch`, whose captures start at the
/// first interval they keep.
pub fn pressure_state(cgroup: Option<&str>) -> MemoryState {
    let vmstat =
        vmstat::read().into_iter().filter(|(name, _)| name.starts_with("workingset_refault_")).collect();
    MemoryState {
        taken_unix_s: SystemTime::now().duration_since(UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64()),
        vmstat,
        psi_memory: fs::read_to_string("/proc/pressure/memory").ok().and_then(|t| parse_psi(&t)),
        psi_cgroup: cgroup.and_then(cgroup_psi),
        ..MemoryState::default()
    }
}

/// `some avg10=.. total=N` and `full ... total=N` lines.
pub fn parse_psi(text: &str) -> Option<crate::model::PsiTotals> {
    let total = |kind: &str| {
        text.lines()
            .find(|l| l.starts_with(kind))?
            .split_whitespace()
            .find_map(|f| f.strip_prefix("total="))?
            .parse()
            .ok()
    };
    Some(crate::model::PsiTotals { some_us: total("some ")?, full_us: total("full ").unwrap_or(0) })
}

fn machine() -> String {
    let mut uts: libc::utsname = unsafe { std::mem::zeroed() };
    if unsafe { libc::uname(&mut uts) } != 0 {
        return String::new();
    }
    let bytes: Vec<u8> = uts.machine.iter().take_while(|&&c| c != 0).map(|&c| c as u8).collect();
    String::from_utf8_lossy(&bytes).into_owned()
}

/// From /proc/config.gz, else /boot/config-RELEASE.
fn kernel_config(release: &str) -> KernelConfig {
    let gz = "/proc/config.gz";
    if let Ok(compressed) = fs::read(gz) {
        let mut text = String::new();
        match flate2::read::GzDecoder::new(compressed.as_slice()).read_to_string(&mut text) {
            Ok(_) => return config_from(gz, &text),
            Err(e) => log::debug!("{gz}: {e}"),
        }
    }
    let boot = format!("/boot/config-{release}");
    match fs::read_to_string(&boot) {
        Ok(text) => config_from(&boot, &text),
        Err(_) => KernelConfig {
            source: None,
            lines: Vec::new(),
            note: format!("neither /proc/config.gz nor {boot} exists on the traced host"),
        },
    }
}

fn config_from(source: &str, text: &str) -> KernelConfig {
    KernelConfig {
        source: Some(source.to_string()),
        lines: config_lines_that_matter(text),
        note: String::new(),
    }
}

/// `CONFIG_X=...` and `# CONFIG_X is not set` lines whose option starts
/// with one of [`CONFIG_PREFIXES`], in file order.
pub fn config_lines_that_matter(text: &str) -> Vec<String> {
    text.lines()
        .map(str::trim)
        .filter(|line| {
            let option = match line.strip_prefix("# ") {
                Some(rest) if rest.ends_with(" is not set") => rest,
                Some(_) => return false,
                None => line,
            };
            CONFIG_PREFIXES.iter().any(|p| option.starts_with(p))
        })
        .map(str::to_string)
        .collect()
}

/// `MemTotal:       24576000 kB` lines: values in kB (the HugePages_
/// counts have no unit).
pub fn parse_meminfo(text: &str) -> BTreeMap<String, u64> {
    text.lines()
        .filter_map(|line| {
            let (name, rest) = line.split_once(':')?;
            let value = rest.split_whitespace().next()?.parse().ok()?;
            Some((name.trim().to_string(), value))
        })
        .collect()
}

/// The first processor's model name (x86 `model name`, else the fields
/// other architectures use).
pub fn cpu_model(cpuinfo: &str) -> String {
    for key in ["model name", "Model", "cpu model", "cpu", "uarch", "Hardware"] {
        let found = cpuinfo.lines().find_map(|line| {
            let (k, v) = line.split_once(':')?;
            (k.trim() == key && !v.trim().is_empty()).then(|| v.trim().to_string())
        });
        if let Some(model) = found {
            return model;
        }
    }
    String::new()
}

/// How many entries a kernel list such as `0-3,8,10-11` names.
pub fn count_in_list(list: &str) -> Option<u32> {
    let mut count = 0;
    for part in list.trim().split(',').filter(|p| !p.is_empty()) {
        count += match part.split_once('-') {
            Some((a, b)) => b.trim().parse::<u32>().ok()?.checked_sub(a.trim().parse().ok()?)? + 1,
            None => part.trim().parse::<u32>().map(|_| 1).ok()?,
        };
    }
    Some(count)
}

/// A sysfs choice such as `always [madvise] never` is the bracketed one;
/// other values stay as they are.
pub fn setting_value(text: &str) -> String {
    text.split_whitespace()
        .find_map(|w| w.strip_prefix('[').and_then(|w| w.strip_suffix(']')))
        .unwrap_or(text)
        .to_string()
}

/// Disks under `sys_block` (/sys/block lists no partitions), without the
/// empty ones (unbound loop devices).
pub fn block_devices(sys_block: &Path) -> Vec<BlockDeviceInfo> {
    let Ok(entries) = fs::read_dir(sys_block) else {
        return Vec::new();
    };
    let mut disks: Vec<BlockDeviceInfo> = entries
        .flatten()
        .filter_map(|entry| {
            let dir = entry.path();
            let sectors: u64 = read_trimmed(dir.join("size"))?.parse().ok()?;
            if sectors == 0 {
                return None;
            }
            let dev = read_trimmed(dir.join("dev")).and_then(|d| devices::parse_major_minor(&d));
            let queue = |file: &str| read_trimmed(dir.join("queue").join(file));
            Some(BlockDeviceInfo {
                name: entry.file_name().to_string_lossy().into_owned(),
                dev: dev.map_or_else(String::new, |d| {
                    let (major, minor) = devices::major_minor(d);
                    format!("{major}:{minor}")
                }),
                // Always 512-byte units, whatever the device's block size.
                size_bytes: sectors * 512,
                rotational: queue("rotational").map(|r| r == "1"),
                scheduler: queue("scheduler").map(|s| setting_value(&s)),
                model: read_trimmed(dir.join("device/model")).filter(|m| !m.is_empty()),
            })
        })
        .collect();
    disks.sort_by(|a, b| a.name.cmp(&b.name));
    disks
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_config_lines_that_matter() {
        let config = "#\n# Automatically generated file; DO NOT EDIT.\nCONFIG_CC_VERSION_TEXT=\"gcc\"\n\
                      CONFIG_BPF=y\nCONFIG_BPF_JIT=y\n# CONFIG_KPROBES is not set\nCONFIG_HZ_250=y\n\
                      CONFIG_HZ=250\nCONFIG_MEMCG=y\nCONFIG_TRANSPARENT_HUGEPAGE_MADVISE=y\n\
                      # CONFIG_NUMA_BALANCING is not set\n# General setup\nCONFIG_PREEMPT_DYNAMIC=y\n\
                      CONFIG_DEBUG_INFO_BTF=y\nCONFIG_SWAP=y\nCONFIG_USB=y\n";
        assert_eq!(
            config_lines_that_matter(config),
            [
                "CONFIG_BPF=y",
                "CONFIG_BPF_JIT=y",
                "# CONFIG_KPROBES is not set",
                "CONFIG_HZ_250=y",
                "CONFIG_HZ=250",
                "CONFIG_MEMCG=y",
                "CONFIG_TRANSPARENT_HUGEPAGE_MADVISE=y",
                "# CONFIG_NUMA_BALANCING is not set",
                "CONFIG_PREEMPT_DYNAMIC=y",
                "CONFIG_DEBUG_INFO_BTF=y",
                "CONFIG_SWAP=y",
            ]
        );
    }

    #[test]
    fn parses_meminfo_with_and_without_units() {
        let m = parse_meminfo("MemTotal:       24576000 kB\nHugePages_Total:       0\nbogus line\n");
        assert_eq!(m["MemTotal"], 24_576_000);
        assert_eq!(m["HugePages_Total"], 0);
        assert_eq!(m.len(), 2);
    }

    #[test]
    fn cpu_models_of_several_architectures() {
        assert_eq!(
            cpu_model(
                "processor\t: 0\nvendor_id\t: GenuineIntel\nmodel\t\t: 85\nmodel name\t: Intel(R) Xeon(R)\n"
            ),
            "Intel(R) Xeon(R)"
        );
        assert_eq!(cpu_model("processor : 0\nCPU part : 0xd0c\nModel : Raspberry Pi 4\n"), "Raspberry Pi 4");
        assert_eq!(cpu_model(""), "");
    }

    #[test]
    fn counts_kernel_lists() {
        assert_eq!(count_in_list("0-1\n"), Some(2));
        assert_eq!(count_in_list("0-3,8,10-11"), Some(7));
        assert_eq!(count_in_list("0"), Some(1));
        assert_eq!(count_in_list("3-1"), None);
        assert_eq!(count_in_list("x"), None);
    }

    #[test]
    fn bracketed_choices() {
        assert_eq!(setting_value("always [madvise] never"), "madvise");
        assert_eq!(setting_value("[none] mq-deadline kyber"), "none");
        assert_eq!(setting_value("60"), "60");
    }

    #[test]
    fn block_devices_from_a_fake_sys_block() {
        let dir = tempfile::TempDir::new().unwrap();
        let disk = |name: &str, files: &[(&str, &str)]| {
            for (file, text) in files {
                let path = dir.path().join(name).join(file);
                fs::create_dir_all(path.parent().unwrap()).unwrap();
                fs::write(path, text).unwrap();
            }
        };
        disk(
            "sda",
            &[
                ("size", "1000\n"),
                ("dev", "8:0\n"),
                ("queue/rotational", "1\n"),
                ("queue/scheduler", "none [mq-deadline]\n"),
                ("device/model", "WDC WD10EZEX    \n"),
            ],
        );
        disk("loop1", &[("size", "0\n"), ("dev", "7:1\n")]);
        disk("nvme0n1", &[("size", "2048\n"), ("dev", "259:0\n"), ("queue/rotational", "0\n")]);
        let disks = block_devices(dir.path());
        assert_eq!(disks.len(), 2, "{disks:?}");
        assert_eq!(
            disks[1],
            BlockDeviceInfo {
                name: "sda".into(),
                dev: "8:0".into(),
                size_bytes: 512_000,
                rotational: Some(true),
                scheduler: Some("mq-deadline".into()),
                model: Some("WDC WD10EZEX".into()),
            }
        );
        assert_eq!(
            (disks[0].name.as_str(), disks[0].rotational, disks[0].model.as_deref()),
            ("nvme0n1", Some(false), None)
        );
    }

    /// On this machine: the files exist and parse.
    #[test]
    fn collects_this_machine() {
        let system = collect(None);
        assert!(!system.kernel.release.is_empty());
        assert!(system.cpus.online >= 1);
        assert!(system.memory_total_kb > 0);
        assert!(system.start.vmstat.contains_key("nr_free_pages"));
        assert!(!system.start.buddyinfo.is_empty());
        assert!(system.config.source.is_some() || !system.config.note.is_empty());
    }

    #[test]
    fn psi_totals_are_read() {
        let text = "some avg10=0.00 avg60=0.00 avg300=0.00 total=2333909\nfull avg10=0.00 avg60=0.00 avg300=0.00 total=1069834\n";
        assert_eq!(parse_psi(text), Some(crate::model::PsiTotals { some_us: 2333909, full_us: 1069834 }));
        assert_eq!(parse_psi("garbage"), None);
    }
}
