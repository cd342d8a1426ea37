//! Is this process allowed to load and attach tracing programs?

use std::fs;

use anyhow::{Result, bail};

const CAP_SYS_ADMIN: u32 = 21;
const CAP_PERFMON: u32 = 38;
const CAP_BPF: u32 = 39;

/// Effective capability mask from `/proc/self/status`.
pub fn effective() -> Result<u64> {
    let status = fs::read_to_string("/proc/self/status")?;
    parse_cap_eff(&status).ok_or_else(|| anyhow::anyhow!("no CapEff line in /proc/self/status"))
}

pub fn parse_cap_eff(status: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
}

/// What is missing for tracing, in words, or `None` when allowed.
/// Tracing programs need CAP_BPF and CAP_PERFMON, or CAP_SYS_ADMIN.
pub fn missing_for_tracing(cap_eff: u64) -> Option<String> {
    let has = |cap: u32| cap_eff & (1u64 << cap) != 0;
    if has(CAP_SYS_ADMIN) || (has(CAP_BPF) && has(CAP_PERFMON)) {
        return None;
    }
    let mut missing = Vec::new();
    if !has(CAP_BPF) {
        missing.push("CAP_BPF");
    }
    if !has(CAP_PERFMON) {
        missing.push("CAP_PERFMON");
    }
    Some(missing.join(" and "))
}

/// Fails with what to do when this process may not trace.
pub fn require_tracing() -> Result<()> {
    if let Some(missing) = missing_for_tracing(effective()?) {
        let who = if unsafe { libc::geteuid() } == 0 { "root without" } else { "not root and lacks" };
        bail!(
            "tracer must load eBPF programs, but this process is {who} {missing} \
             (or CAP_SYS_ADMIN). Run it as root (sudo tracer ...) or grant the binary \
             the capabilities: setcap cap_bpf,cap_perfmon,cap_sys_admin+ep $(command -v tracer)"
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_capeff() {
        let status = "Name:\ttracer\nCapInh:\t0000000000000000\nCapEff:\t000001ffffffffff\n";
        assert_eq!(parse_cap_eff(status), Some(0x1ff_ffff_ffff));
    }

    #[test]
    fn decides_what_is_missing() {
        assert_eq!(missing_for_tracing(1 << CAP_SYS_ADMIN), None);
        assert_eq!(missing_for_tracing((1 << CAP_BPF) | (1 << CAP_PERFMON)), None);
        assert_eq!(missing_for_tracing(1 << CAP_BPF).as_deref(), Some("CAP_PERFMON"));
        assert_eq!(missing_for_tracing(0).as_deref(), Some("CAP_BPF and CAP_PERFMON"));
    }
}
