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
}
