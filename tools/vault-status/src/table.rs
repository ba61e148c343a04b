//! The human table (stdout on a terminal).

use crate::Row;
use std::io::Write;

/// `3s`, `4m12s`, `2h05m`, `3d04h`.
pub fn age(secs: u64) -> String {
    match secs {
        0..60 => format!("{secs}s"),
        60..3600 => format!("{}m{:02}s", secs / 60, secs % 60),
        3600..86_400 => format!("{}h{:02}m", secs / 3600, secs % 3600 / 60),
        _ => format!("{}d{:02}h", secs / 86_400, secs % 86_400 / 3600),
    }
}

/// `850ms`, `12.3s`, or as [`age`] from a minute on.
pub fn duration(ms: u64) -> String {
    match ms {
        0..1000 => format!("{ms}ms"),
        1000..60_000 => format!("{:.1}s", ms as f64 / 1000.0),
        _ => age(ms / 1000),
    }
}

pub fn write(out: &mut impl Write, rows: &[Row]) -> std::io::Result<()> {
    const HEAD: [&str; 8] = [
        "ID",
        "STATUS",
        "AGE",
        "DISPATCHER",
        "DURATION",
        "EXIT",
        "APPROVER",
        "REASON",
    ];
    let dash = || "-".to_string();
    let cells: Vec<[String; 8]> = rows
        .iter()
        .map(|r| {
            [
                r.id.clone(),
                r.status.clone(),
                r.age_s.map_or_else(dash, age),
                r.dispatcher.clone().unwrap_or_else(dash),
                r.duration_ms.map_or_else(dash, duration),
                r.exit_code.map_or_else(dash, |c| c.to_string()),
                r.approver.clone().unwrap_or_else(dash),
                r.reason.clone().unwrap_or_default(),
            ]
        })
        .collect();
    let mut width = HEAD.map(str::len);
    for row in &cells {
        for (w, c) in width.iter_mut().zip(row) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |out: &mut dyn Write, row: &[&str]| -> std::io::Result<()> {
        let mut text = String::new();
        for (i, (c, w)) in row.iter().zip(width).enumerate() {
            if i + 1 == row.len() {
                text.push_str(c);
            } else {
                text.push_str(&format!("{c:<w$}  "));
            }
        }
        writeln!(out, "{}", text.trim_end())
    };
    line(out, &HEAD)?;
    for row in &cells {
        let refs: Vec<&str> = row.iter().map(String::as_str).collect();
        line(out, &refs)?;
    }
    if rows.is_empty() {
        writeln!(
            out,
            "(nothing pending, running, stuck or recently finished)"
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_and_durations_read_at_a_glance() {
        assert_eq!(age(5), "5s");
        assert_eq!(age(252), "4m12s");
        assert_eq!(age(7500), "2h05m");
        assert_eq!(age(273_600), "3d04h");
        assert_eq!(duration(850), "850ms");
        assert_eq!(duration(12_345), "12.3s");
        assert_eq!(duration(125_000), "2m05s");
    }
}
