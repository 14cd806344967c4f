//! `patchpanda status`: the rotation worker's view of every secret and the
//! KMS key, as a table or JSON.

use clap::Args;

use super::Outcome;
use crate::context::Ctx;
use crate::output::{self, Table};

#[derive(Debug, Args)]
pub struct StatusArgs {
    #[arg(long)]
    pub json: bool,
}

fn secs(s: i64) -> String {
    output::age(chrono::Utc::now() - chrono::Duration::seconds(s))
}

pub async fn run(ctx: &Ctx, a: StatusArgs) -> Outcome {
    // Reading status is metadata only; it runs as the caller.
    let b = ctx.backends().await?;
    let settings = rotation_worker::Settings::from_env(&ctx.config, &ctx.env)?;
    let r =
        rotation_worker::Rotator::new(b.secrets.clone(), b.kms.clone(), b.bus.clone(), settings);
    let report = r.status().await?;
    if a.json {
        output::print_json(&report);
        return Ok(());
    }
    let mut t = Table::new(&[
        "SECRET",
        "CURRENT",
        "AGE",
        "PREVIOUS",
        "GRACE UNTIL",
        "PENDING",
        "DUE",
        "LAST ROTATION",
    ]);
    for s in &report.secrets {
        if !s.exists {
            t.row(vec![
                s.secret.clone(),
                "-".into(),
                "-".into(),
                "-".into(),
                "-".into(),
                "-".into(),
                "(not created)".into(),
                "-".into(),
            ]);
            continue;
        }
        // A version an emergency retired is compromised: say so wherever
        // it shows, and mark the current version that replaced it.
        let v = |v: &Option<rotation_worker::status::VersionInfo>| {
            v.as_ref()
                .map(|v| {
                    let compromised = if s.compromised.contains(&v.number) {
                        ", compromised"
                    } else {
                        ""
                    };
                    format!("{} ({}{compromised})", v.number, v.state)
                })
                .unwrap_or_else(|| "-".into())
        };
        let current = match (&s.current, s.emergency) {
            (Some(c), true) => format!("{} (emergency)", v(&Some(c.clone()))),
            _ => v(&s.current),
        };
        let pending = match (&s.pending, &s.rotation) {
            (_, Some(r)) if r.lapsed => format!(
                "{} (interrupted at {:?}; next trigger resumes)",
                output::opt(r.pending),
                r.step
            ),
            (_, Some(r)) => format!("{} (rotating: {:?})", output::opt(r.pending), r.step),
            (Some(p), None) => p.number.to_string(),
            (None, None) => match s.unpromoted_upload {
                Some(u) => format!("{u} (uploaded, not promoted)"),
                None => "-".into(),
            },
        };
        let grace = match (s.in_grace, s.grace_until) {
            (true, Some(t)) => output::time(t),
            (false, Some(_)) => "over".into(),
            _ => "-".into(),
        };
        let due = if s.due {
            format!("yes: {}", s.due_reason.clone().unwrap_or_default())
        } else {
            "no".into()
        };
        let last = s
            .last_rotation
            .as_ref()
            .map(|l| {
                format!(
                    "{}{} {} ago",
                    l.result,
                    if l.emergency { " (emergency)" } else { "" },
                    output::age(l.time)
                )
            })
            .unwrap_or_else(|| "-".into());
        t.row(vec![
            s.secret.clone(),
            current,
            s.current
                .as_ref()
                .map(|c| secs(c.age_seconds))
                .unwrap_or_else(|| "-".into()),
            v(&s.previous),
            grace,
            pending,
            due,
            last,
        ]);
    }
    t.print();
    let k = &report.kms;
    println!();
    match &k.error {
        Some(e) => println!("KMS key: cannot be read: {e}"),
        None => println!(
            "KMS key {}: primary version {} ({}), {} old; {} of {} versions enabled; rotates every {}, next {}",
            output::opt(k.name.clone()),
            output::opt(k.primary_version),
            output::opt(k.primary_state.map(|s| s.to_string())),
            k.primary_age_seconds
                .map(secs)
                .unwrap_or_else(|| "-".into()),
            k.enabled_versions,
            k.versions,
            k.rotation_period_seconds
                .map(|s| format!("{}d", s / 86_400))
                .unwrap_or_else(|| "never".into()),
            output::opt(k.next_rotation_time.map(output::time)),
        ),
    }
    Ok(())
}
