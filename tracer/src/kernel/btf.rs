//! Struct layouts and enum values from the running kernel's BTF, so no
//! offset is compiled into tracer.

use anyhow::{Context as _, Result, anyhow, bail};
use btf_rs::{Btf, Type};

pub const VMLINUX_BTF: &str = "/sys/kernel/btf/vmlinux";

pub struct KernelBtf {
    btf: Btf,
}

/// BTF from an in-memory copy in a memfd, mmapped like the sysfs file.
fn mmap_copy(bytes: &[u8]) -> Result<Btf> {
    use std::io::Write as _;
    let fd = unsafe { libc::memfd_create(c"tracer-btf".as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        bail!("memfd_create: {}", std::io::Error::last_os_error());
    }
    // Safety: a new descriptor we own.
    let mut file = unsafe { <std::fs::File as std::os::fd::FromRawFd>::from_raw_fd(fd) };
    file.write_all(bytes)?;
    // The mapping outlives the descriptor, which closes with `file`.
    Btf::from_file_with_backend(format!("/proc/self/fd/{fd}"), btf_rs::Backend::Mmap)
        .map_err(|e| anyhow!("mmap of a memfd copy: {e}"))
}

impl KernelBtf {
    pub fn load() -> Result<Self> {
        Self::load_from(std::path::Path::new(VMLINUX_BTF))
    }

    /// Kernel BTF however the kernel allows it to be read. Mmap first: it
    /// looks types up on demand, where parsing all of vmlinux BTF up front
    /// costs ~140 ms and ~40 MB. Kernels before 6.16 refuse to mmap
    /// /sys/kernel/btf/vmlinux (ENODEV) but read it: a copy in a memfd
    /// mmaps (the file's size, ~5 MB), and parsing a plain read is the last
    /// resort.
    pub fn load_from(path: &std::path::Path) -> Result<Self> {
        let unreadable = |e: &dyn std::fmt::Display| {
            anyhow!(
                "kernel BTF is not readable at {} ({e}); this kernel needs CONFIG_DEBUG_INFO_BTF \
                 for tracer's struct-reading probes",
                path.display()
            )
        };
        let mmap_error = match Btf::from_file_with_backend(path, btf_rs::Backend::Mmap) {
            Ok(btf) => return Ok(Self { btf }),
            Err(e) => e.to_string(),
        };
        let bytes = std::fs::read(path).map_err(|e| unreadable(&e))?;
        log::info!("mmap of {} failed ({mmap_error}); reading it instead", path.display());
        if let Ok(btf) = mmap_copy(&bytes) {
            return Ok(Self { btf });
        }
        Self::from_bytes(&bytes).map_err(|e| unreadable(&e))
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        Ok(Self { btf: Btf::from_bytes(bytes).map_err(|e| anyhow!("bad BTF: {e}"))? })
    }

    /// Byte offset of `member` in `struct name`, looking through anonymous
    /// structs and unions the way C does.
    pub fn member_offset(&self, name: &str, member: &str) -> Result<u32> {
        let types = self
            .btf
            .resolve_types_by_name(name)
            .map_err(|e| anyhow!("no type `{name}` in kernel BTF: {e}"))?;
        for ty in types {
            if let Type::Struct(s) = &ty
                && let Some(bits) = self.find_member(s, member)?
            {
                if bits % 8 != 0 {
                    bail!("`{name}.{member}` is a bitfield");
                }
                return Ok(bits / 8);
            }
        }
        bail!("`struct {name}` has no member `{member}` in this kernel's BTF")
    }

    /// Size in bytes of `struct name`.
    pub fn struct_size(&self, name: &str) -> Result<u32> {
        let types = self
            .btf
            .resolve_types_by_name(name)
            .map_err(|e| anyhow!("no type `{name}` in kernel BTF: {e}"))?;
        types
            .iter()
            .find_map(|ty| match ty {
                Type::Struct(s) => Some(s.size() as u32),
                _ => None,
            })
            .ok_or_else(|| anyhow!("`struct {name}` not found in kernel BTF"))
    }

    /// Bit offset of `member` within struct/union `s`.
    fn find_member(&self, s: &btf_rs::Struct, member: &str) -> Result<Option<u32>> {
        for m in &s.members {
            let m_name = self.btf.resolve_name(m).unwrap_or_default();
            if m_name == member {
                return Ok(Some(m.bit_offset()));
            }
            if m_name.is_empty() {
                // Anonymous struct or union: search inside it.
                let inner = self.btf.resolve_chained_type(m).context("resolving member type")?;
                let inner = match inner {
                    Type::Struct(s) | Type::Union(s) => Some(s),
                    _ => None,
                };
                if let Some(inner) = inner
                    && let Some(bits) = self.find_member(&inner, member)?
                {
                    return Ok(Some(m.bit_offset() + bits));
                }
            }
        }
        Ok(None)
    }

    /// Value of `enumerator` in `enum name`.
    pub fn enum_value(&self, name: &str, enumerator: &str) -> Result<i64> {
        self.enum_members(name)?
            .into_iter()
            .find(|(n, _)| n == enumerator)
            .map(|(_, v)| v)
            .ok_or_else(|| anyhow!("`enum {name}` has no `{enumerator}` in kernel BTF"))
    }

    /// Value of an enumerator of any enum, named or anonymous (slower: scans
    /// every type).
    pub fn find_enumerator(&self, enumerator: &str) -> Result<i64> {
        use fallible_iterator::FallibleIterator as _;
        let mut types = self.btf.type_iter();
        while let Ok(Some(ty)) = types.next() {
            if let Type::Enum(e) = &ty {
                for m in &e.members {
                    if self.btf.resolve_name(m).is_ok_and(|n| n == enumerator) {
                        return Ok(if e.is_signed() { m.val() as i32 as i64 } else { m.val() as i64 });
                    }
                }
            }
        }
        bail!("no enumerator `{enumerator}` in kernel BTF")
    }

    /// All enumerators of `enum name`.
    pub fn enum_members(&self, name: &str) -> Result<Vec<(String, i64)>> {
        let types = self
            .btf
            .resolve_types_by_name(name)
            .map_err(|e| anyhow!("no enum `{name}` in kernel BTF: {e}"))?;
        for ty in types {
            match ty {
                Type::Enum(e) => {
                    return Ok(e
                        .members
                        .iter()
                        .map(|m| {
                            let v = if e.is_signed() { m.val() as i32 as i64 } else { m.val() as i64 };
                            (self.btf.resolve_name(m).unwrap_or_default(), v)
                        })
                        .collect());
                }
                Type::Enum64(e) => {
                    return Ok(e
                        .members
                        .iter()
                        .map(|m| (self.btf.resolve_name(m).unwrap_or_default(), m.val() as i64))
                        .collect());
                }
                _ => {}
            }
        }
        bail!("`enum {name}` not found in kernel BTF")
    }

    pub fn has_type(&self, name: &str) -> bool {
        self.btf.resolve_ids_by_name(name).is_ok_and(|ids| !ids.is_empty())
    }

    pub fn inner(&self) -> &Btf {
        &self.btf
    }
}

/// Offsets of the task -> memory cgroup walk; `memcg_enabled` is 0 (and the
/// reason returned) when this kernel's BTF lacks any of them.
pub fn task_offsets(btf: &KernelBtf) -> (tracer_common::task::TaskOffsets, Option<String>) {
    use tracer_common::task::TaskOffsets;
    let mm = btf.member_offset("task_struct", "mm").unwrap_or(u32::MAX);
    let memcg = (|| -> Result<TaskOffsets> {
        let memory_id = btf.enum_value("cgroup_subsys_id", "memory_cgrp_id")?;
        Ok(TaskOffsets {
            task_mm: mm,
            task_cgroups: btf.member_offset("task_struct", "cgroups")?,
            task_comm: btf.member_offset("task_struct", "comm")?,
            css_set_memory: btf.member_offset("css_set", "subsys")? + 8 * memory_id as u32,
            css_cgroup: btf.member_offset("cgroup_subsys_state", "cgroup")?,
            css_parent: btf.member_offset("cgroup_subsys_state", "parent")?,
            cgroup_kn: btf.member_offset("cgroup", "kn")?,
            kn_id: btf.member_offset("kernfs_node", "id")?,
            memcg_enabled: 1,
            _pad: 0,
        })
    })();
    match memcg {
        Ok(offsets) => (offsets, None),
        Err(e) => (
            TaskOffsets {
                task_mm: mm,
                task_comm: btf.member_offset("task_struct", "comm").unwrap_or(0),
                ..TaskOffsets::default()
            },
            Some(format!("memory cgroups unknown (kernel BTF: {e}); cgroups are not reported or filtered")),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The memfd copy (what kernels before 6.16 get) answers as the sysfs
    /// file does.
    #[test]
    fn a_memfd_copy_reads_like_the_sysfs_file() {
        let Ok(bytes) = std::fs::read(VMLINUX_BTF) else {
            panic!("{VMLINUX_BTF} is readable on the machines that run the tests");
        };
        let direct = KernelBtf::load().unwrap();
        let copy = KernelBtf { btf: mmap_copy(&bytes).unwrap() };
        let parsed = KernelBtf::from_bytes(&bytes).unwrap();
        for (name, member) in [("task_struct", "pid"), ("request", "q"), ("mm_struct", "pgtables_bytes")] {
            let expected = direct.member_offset(name, member).ok();
            assert_eq!(copy.member_offset(name, member).ok(), expected, "{name}.{member}");
            assert_eq!(parsed.member_offset(name, member).ok(), expected, "{name}.{member}");
        }
        assert!(direct.member_offset("task_struct", "pid").is_ok());
    }

    #[test]
    fn missing_btf_says_what_the_kernel_needs() {
        let err = KernelBtf::load_from(std::path::Path::new("/nonexistent/vmlinux")).err().unwrap();
        assert!(err.to_string().contains("CONFIG_DEBUG_INFO_BTF"), "{err}");
    }
}
