//! Block devices: names to `dev_t` and back, from /sys/class/block.

use std::{collections::BTreeMap, fs, path::Path};

use anyhow::{Result, bail};

const SYS_CLASS_BLOCK: &str = "/sys/class/block";

/// Kernel-internal `dev_t` encoding, as tracepoints and BPF see it.
pub const fn kernel_dev(major: u32, minor: u32) -> u32 {
    (major << 20) | minor
}

pub const fn major_minor(dev: u32) -> (u32, u32) {
    (dev >> 20, dev & ((1 << 20) - 1))
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockDevice {
    pub name: String,
    pub dev: u32,
    /// The whole disk this is a partition of, if it is one.
    pub parent: Option<String>,
}

/// Every block device the kernel lists now.
pub fn list() -> Vec<BlockDevice> {
    list_at(Path::new(SYS_CLASS_BLOCK))
}

pub fn list_at(class_block: &Path) -> Vec<BlockDevice> {
    let mut out = Vec::new();
    let Ok(entries) = fs::read_dir(class_block) else {
        return out;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let dir = entry.path();
        let Some(dev) = fs::read_to_string(dir.join("dev")).ok().and_then(|s| parse_major_minor(&s)) else {
            continue;
        };
        let parent = dir.join("partition").exists().then(|| {
            fs::canonicalize(&dir)
                .ok()
                .and_then(|p| {
                    p.parent().and_then(|p| p.file_name()).map(|n| n.to_string_lossy().into_owned())
                })
                .unwrap_or_default()
        });
        out.push(BlockDevice { name, dev, parent });
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

/// "7:0\n" -> kernel dev_t.
pub fn parse_major_minor(text: &str) -> Option<u32> {
    let (major, minor) = text.trim().split_once(':')?;
    Some(kernel_dev(major.parse().ok()?, minor.parse().ok()?))
}

/// Resolves `--disk` names (also accepting /dev/NAME) to disks' `dev_t`.
pub fn resolve_disks(names: &[String], devices: &[BlockDevice]) -> Result<Vec<(String, u32)>> {
    let mut out = Vec::new();
    for wanted in names {
        let short = wanted.strip_prefix("/dev/").unwrap_or(wanted);
        match devices.iter().find(|d| d.name == short) {
            Some(BlockDevice { parent: Some(parent), .. }) => bail!(
                "{short} is a partition of {parent}; block requests are traced per disk: \
                 use --disk {parent}"
            ),
            Some(d) => out.push((d.name.clone(), d.dev)),
            None => {
                let disks: Vec<&str> =
                    devices.iter().filter(|d| d.parent.is_none()).map(|d| d.name.as_str()).collect();
                bail!(
                    "unknown disk `{wanted}`; disks on this host: {}",
                    if disks.is_empty() { "none".to_string() } else { disks.join(", ") }
                )
            }
        }
    }
    Ok(out)
}

/// `dev_t` -> name for the devices present now.
pub fn names(devices: &[BlockDevice]) -> BTreeMap<u32, String> {
    devices.iter().map(|d| (d.dev, d.name.clone())).collect()
}

/// Name for a `dev_t`, or "MAJ:MIN" when the device is gone.
pub fn display_name(dev: u32, names: &BTreeMap<u32, String>) -> String {
    names.get(&dev).cloned().unwrap_or_else(|| {
        let (major, minor) = major_minor(dev);
        format!("{major}:{minor}")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn devs() -> Vec<BlockDevice> {
        vec![
            BlockDevice { name: "loop0".into(), dev: kernel_dev(7, 0), parent: None },
            BlockDevice { name: "vda".into(), dev: kernel_dev(254, 0), parent: None },
            BlockDevice { name: "vda1".into(), dev: kernel_dev(254, 1), parent: Some("vda".into()) },
        ]
    }

    #[test]
    fn dev_t_round_trip() {
        assert_eq!(parse_major_minor("7:3\n"), Some((7 << 20) | 3));
        assert_eq!(major_minor(kernel_dev(259, 12)), (259, 12));
        assert_eq!(parse_major_minor("garbage"), None);
    }

    #[test]
    fn resolves_names_and_explains_mistakes() {
        let d = devs();
        assert_eq!(
            resolve_disks(&["/dev/loop0".into()], &d).unwrap(),
            vec![("loop0".into(), kernel_dev(7, 0))]
        );
        let err = resolve_disks(&["vda1".into()], &d).unwrap_err().to_string();
        assert!(err.contains("partition of vda"), "{err}");
        let err = resolve_disks(&["nvme9n1".into()], &d).unwrap_err().to_string();
        assert!(err.contains("unknown disk") && err.contains("loop0, vda"), "{err}");
    }

    #[test]
    fn names_gone_devices_by_number() {
        let names = names(&devs());
        assert_eq!(display_name(kernel_dev(7, 0), &names), "loop0");
        assert_eq!(display_name(kernel_dev(7, 9), &names), "7:9");
    }
}
