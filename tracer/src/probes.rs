//! `tracer probes`: which hooks this kernel offers each family, and which
//! `trace` would use, found by attaching for real (then detaching).

use std::process::ExitCode;

use anyhow::Result;

use crate::{
    cli::{Cli, Command, ProbesArgs},
    families::{Hook, REGISTRY, stacks::Stacks},
    kernel::caps,
    session,
};

pub fn run(args: ProbesArgs) -> Result<ExitCode> {
    caps::require_tracing()?;
    let mut notices = Vec::new();
    let env = session::kernel_env(&mut notices, true)?;
    for notice in &notices {
        eprintln!("tracer: {notice}");
    }
    // What `tracer trace` without options would do, done for real (then
    // detached): the verdicts are the hooks trace would use, not a guess.
    let Ok(Cli { command: Command::Trace(defaults), .. }) =
        <Cli as clap::Parser>::try_parse_from(["tracer", "trace"])
    else {
        unreachable!("`tracer trace` parses")
    };
    let defaults = defaults.run;
    let shared = session::SharedGlobals::new(&defaults, &env, &mut Vec::new())?;
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let _runtime_context = runtime.enter();
    let stacks = Stacks::new(None);
    let attached = session::attach_families(&defaults, &[], &env, &shared, &stacks, true)?;
    let statuses = attached.statuses.clone();
    drop(attached);

    let mut table: Vec<(&str, Vec<Hook>, String)> = Vec::new();
    for family in REGISTRY {
        let status = statuses.iter().find(|s| s.family == family.name);
        let mut hooks = (family.hooks)(&env, &defaults.family_options());
        let verdict = match status {
            Some(s) if s.state == "traced" => {
                // The ways of attaching (not the tracepoints themselves):
                // in use exactly when trace's hook is of that kind.
                let kind = s.hook.split_whitespace().next().unwrap_or_default();
                for h in &mut hooks {
                    let row_kind = h.name.split_whitespace().next().unwrap_or_default();
                    if ["tp_btf", "fentry", "kprobe", "/proc/vmstat"].contains(&row_kind) {
                        h.used = row_kind == kind;
                    }
                    // Tried at attach and refused: not a hook that works.
                    if let Some(why) = s.detail.split("; ").find(|r| r.starts_with(&format!("{row_kind} "))) {
                        h.available = false;
                        h.note = format!("refused: {why}");
                    }
                }
                format!("traced with {}", s.hook)
            }
            Some(s) => {
                hooks.iter_mut().for_each(|h| h.used = false);
                format!("{}: {}", s.state, s.detail)
            }
            None => "not requested".to_string(),
        };
        table.push((family.name, hooks, verdict));
    }
    if args.json {
        let value: Vec<serde_json::Value> = table
            .iter()
            .map(|(family, hooks, verdict)| {
                serde_json::json!({
                    "family": family,
                    "verdict": verdict,
                    "hooks": hooks.iter().map(|h| serde_json::json!({
                        "hook": h.name, "available": h.available, "used": h.used,
                        "required": h.required, "note": h.note,
                    })).collect::<Vec<_>>(),
                })
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&value)?);
    } else {
        for (family, hooks, verdict) in &table {
            println!("{family}: {verdict}");
            for h in hooks {
                let mark = if h.used {
                    "use"
                } else if h.available {
                    "ok "
                } else {
                    "-- "
                };
                println!("  [{mark}] {:<36} {}", h.name, h.note);
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
