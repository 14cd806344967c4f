//! gcloud-style plain tables and JSON for command output. Hand-written: the
//! style is two-space-separated left-aligned columns, which no table crate
//! does more simply.

use chrono::{DateTime, Utc};
use serde::Serialize;

pub struct Table {
    headers: Vec<&'static str>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(headers: &[&'static str]) -> Self {
        Self {
            headers: headers.to_vec(),
            rows: Vec::new(),
        }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    pub fn render(&self) -> String {
        let mut widths: Vec<usize> = self.headers.iter().map(|h| h.len()).collect();
        for row in &self.rows {
            for (i, c) in row.iter().enumerate() {
                if i < widths.len() {
                    widths[i] = widths[i].max(c.chars().count());
                }
            }
        }
        let mut out = String::new();
        let line = |cells: Vec<&str>, out: &mut String| {
            let last = cells.len().saturating_sub(1);
            for (i, c) in cells.iter().enumerate() {
                out.push_str(c);
                if i < last {
                    let pad = widths[i] - c.chars().count() + 2;
                    out.extend(std::iter::repeat_n(' ', pad));
                }
            }
            out.push('\n');
        };
        line(self.headers.clone(), &mut out);
        for row in &self.rows {
            line(row.iter().map(String::as_str).collect(), &mut out);
        }
        out
    }

    pub fn print(&self) {
        print!("{}", self.render());
    }
}

pub fn print_json<T: Serialize>(value: &T) {
    match serde_json::to_string_pretty(value) {
        Ok(s) => println!("{s}"),
        Err(e) => eprintln!("patchpanda: cannot render JSON: {e}"),
    }
}

/// A short human age: 45s, 12m, 5h, 3d.
pub fn age(since: DateTime<Utc>) -> String {
    let secs = (Utc::now() - since).num_seconds().max(0);
    match secs {
        s if s < 120 => format!("{s}s"),
        s if s < 7200 => format!("{}m", s / 60),
        s if s < 172_800 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86_400),
    }
}

pub fn time(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

pub fn opt<T: ToString>(v: Option<T>) -> String {
    v.map(|v| v.to_string()).unwrap_or_else(|| "-".to_string())
}

/// How to run this very binary from another terminal: `patchpanda` when
/// that name on PATH is this executable (after `make install`), else its
/// absolute path (after `cargo run` or `make run`, which do not touch PATH).
pub fn program() -> String {
    let Ok(me) = std::env::current_exe().and_then(std::fs::canonicalize) else {
        return "patchpanda".into();
    };
    program_for(&me, std::env::var_os("PATH").as_deref())
}

fn program_for(me: &std::path::Path, path: Option<&std::ffi::OsStr>) -> String {
    let on_path = path
        .map(std::env::split_paths)
        .into_iter()
        .flatten()
        .map(|dir| dir.join("patchpanda"))
        .find(|candidate| candidate.is_file());
    match on_path.and_then(|p| std::fs::canonicalize(p).ok()) {
        Some(found) if found == me => "patchpanda".into(),
        _ => me.display().to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_align() {
        let mut t = Table::new(&["NAME", "STATE"]);
        t.row(vec!["webhook-secret".into(), "enabled".into()]);
        t.row(vec!["k".into(), "disabled".into()]);
        let r = t.render();
        let lines: Vec<&str> = r.lines().collect();
        assert_eq!(lines[0], "NAME            STATE");
        assert_eq!(lines[1], "webhook-secret  enabled");
        assert_eq!(lines[2], "k               disabled");
    }

    #[test]
    fn ages_are_short() {
        assert_eq!(age(Utc::now() - chrono::Duration::seconds(30)), "30s");
        assert_eq!(age(Utc::now() - chrono::Duration::hours(3)), "3h");
        assert_eq!(age(Utc::now() - chrono::Duration::days(40)), "40d");
    }

    #[test]
    fn the_program_is_its_name_only_when_path_finds_this_very_file() {
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("bin");
        std::fs::create_dir(&bin).unwrap();
        let me = bin.join("patchpanda");
        std::fs::write(&me, b"").unwrap();
        let me = std::fs::canonicalize(&me).unwrap();
        let path = std::env::join_paths([dir.path(), &bin]).unwrap();
        assert_eq!(program_for(&me, Some(&path)), "patchpanda");
        // Not on PATH, or another patchpanda first on it: the full path.
        assert_eq!(program_for(&me, None), me.display().to_string());
        let other = dir.path().join("patchpanda");
        std::fs::write(&other, b"").unwrap();
        assert_eq!(program_for(&me, Some(&path)), me.display().to_string());
    }
}
