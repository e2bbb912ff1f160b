//! How the verbs print: `--output table` (aligned columns with a header line, or `field  value`
//! lines for one record) for people, `--output json` (the server's JSON as it answered, one
//! document; JSON lines for the streamed list) for scripts. Only this module writes to stdout.

use std::io::Write;

use clap::ValueEnum;
use serde_json::Value;

use super::CtlError;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    /// Aligned columns.
    Table,
    /// The server's JSON.
    Json,
}

/// Prints one JSON document, indented.
pub fn json(value: &Value) -> Result<(), CtlError> {
    let mut out = std::io::stdout().lock();
    serde_json::to_writer_pretty(&mut out, value)?;
    writeln!(out)?;
    Ok(())
}

/// Prints JSON values one a line (JSON lines), flushed, as they arrive.
pub fn json_lines<'a>(values: impl IntoIterator<Item = &'a Value>) -> Result<(), CtlError> {
    let mut out = std::io::stdout().lock();
    for value in values {
        serde_json::to_writer(&mut out, value)?;
        writeln!(out)?;
    }
    out.flush()?;
    Ok(())
}

/// An empty line, between two parts of an answer.
pub fn blank() -> Result<(), CtlError> {
    writeln!(std::io::stdout().lock())?;
    Ok(())
}

/// One record as `field  value` lines, the values aligned.
pub fn record(fields: &[(&str, String)]) -> Result<(), CtlError> {
    let width = fields.iter().map(|(name, _)| name.len()).max().unwrap_or(0);
    let mut out = std::io::stdout().lock();
    for (name, value) in fields {
        writeln!(out, "{name:<width$}  {value}")?;
    }
    Ok(())
}

/// Rows under a header, each column as wide as its widest cell. A table printed in parts
/// ([`Table::print_part`]) keeps the widths it had and widens a column only for a wider cell.
#[derive(Debug)]
pub struct Table {
    header: Vec<&'static str>,
    widths: Vec<usize>,
    header_printed: bool,
}

impl Table {
    pub fn new(header: Vec<&'static str>) -> Self {
        let widths = header.iter().map(|h| h.len()).collect();
        Self { header, widths, header_printed: false }
    }

    /// Prints the whole table.
    pub fn print(mut self, rows: &[Vec<String>]) -> Result<(), CtlError> {
        self.print_part(rows)
    }

    /// Prints rows (and the header, the first time), flushed.
    pub fn print_part(&mut self, rows: &[Vec<String>]) -> Result<(), CtlError> {
        for row in rows {
            for (width, cell) in self.widths.iter_mut().zip(row) {
                *width = (*width).max(cell.chars().count());
            }
        }
        let mut out = std::io::stdout().lock();
        if !self.header_printed {
            let header: Vec<String> = self.header.iter().map(|h| (*h).to_owned()).collect();
            writeln!(out, "{}", line(&self.widths, &header))?;
            self.header_printed = true;
        }
        for row in rows {
            writeln!(out, "{}", line(&self.widths, row))?;
        }
        out.flush()?;
        Ok(())
    }
}

/// Cells padded to their widths, two spaces apart, without trailing blanks.
fn line(widths: &[usize], cells: &[String]) -> String {
    let mut text = String::new();
    for (width, cell) in widths.iter().zip(cells) {
        text.push_str(&format!("{cell:<width$}  "));
    }
    text.trim_end().to_owned()
}

/// A unix time in milliseconds as RFC 3339 (UTC, to the second).
pub fn time(unix_ms: u64) -> String {
    let at = std::time::UNIX_EPOCH + std::time::Duration::from_millis(unix_ms);
    humantime::format_rfc3339_seconds(at).to_string()
}

/// An optional value, `-` when absent.
pub fn or_dash<T: ToString>(value: Option<T>) -> String {
    value.map_or_else(|| "-".to_owned(), |v| v.to_string())
}

/// A serde enum's name as it is on the wire (`round_robin`, `passing`).
pub fn name_of<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_value(value).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cells_are_padded_to_their_column_and_lines_have_no_trailing_blanks() {
        let widths = [2, 5, 3];
        let cells = ["a".to_owned(), "bb".to_owned(), "".to_owned()];
        assert_eq!(line(&widths, &cells), "a   bb");
        assert_eq!(line(&widths, &["ID".into(), "NAME".into(), "X".into()]), "ID  NAME   X");
    }
}
