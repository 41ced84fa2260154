//! Output formats: a table for people on a terminal, CSV or JSON for programs.

use clap::ValueEnum;
use comfy_table::{Table, presets::UTF8_FULL_CONDENSED};
use serde::Serialize;
use std::io::{IsTerminal, Write};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Table,
    Csv,
    Json,
}

impl Format {
    /// A table on a terminal, JSON when piped.
    pub fn resolve(requested: Option<Format>) -> Format {
        requested.unwrap_or_else(|| {
            if std::io::stdout().is_terminal() {
                Format::Table
            } else {
                Format::Json
            }
        })
    }
}

/// Prints rows with a header in the chosen format; `json` is what `--format json` prints.
pub fn print_rows(
    format: Format,
    header: &[&str],
    rows: &[Vec<String>],
    json: &impl Serialize,
) -> anyhow::Result<()> {
    // Stdout writes each line as it ends: a report of a few hundred lines was as many
    // system calls.
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    match format {
        Format::Json => {
            serde_json::to_writer_pretty(&mut out, json)?;
            writeln!(out)?;
        }
        Format::Csv => {
            let mut w = csv::Writer::from_writer(&mut out);
            w.write_record(header)?;
            for row in rows {
                w.write_record(row)?;
            }
            w.flush()?;
        }
        Format::Table => {
            let mut table = Table::new();
            table
                .load_preset(UTF8_FULL_CONDENSED)
                .set_header(header.to_vec());
            for row in rows {
                table.add_row(row.clone());
            }
            writeln!(out, "{table}")?;
        }
    }
    out.flush()?;
    Ok(())
}

/// Numbers for people: 1234567 → "1,234,567".
pub fn thousands(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::with_capacity(s.len() + s.len() / 3);
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn thousands_groups_digits() {
        assert_eq!(super::thousands(0), "0");
        assert_eq!(super::thousands(999), "999");
        assert_eq!(super::thousands(262_200), "262,200");
        assert_eq!(super::thousands(1_234_567), "1,234,567");
    }
}
