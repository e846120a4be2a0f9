//! A small RFC 4180 CSV reader and writer: quoted fields, doubled quotes, line
//! breaks inside quotes (CBIS-DDSM's path columns have them), CRLF, a UTF-8 BOM.
//! Every row remembers the line it started on, so errors can point at it.

use std::borrow::Cow;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// One record and the 1-based line of the file where it starts.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub line: usize,
    pub fields: Vec<String>,
}

/// A CSV file: its header and the records below it.
#[derive(Debug, Clone, PartialEq)]
pub struct Table {
    pub path: PathBuf,
    pub header: Vec<String>,
    pub rows: Vec<Row>,
}

impl Table {
    /// Reads and parses `path`.
    ///
    /// # Errors
    /// [`Error::Io`] when unreadable; [`Error::Format`] with the line number for an
    /// unterminated quote or a record whose field count differs from the header's.
    pub fn read(path: &Path) -> Result<Table> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        Table::parse(&text, path)
    }

    /// Parses CSV text; `path` only names the source in errors.
    ///
    /// # Errors
    /// As for [`Table::read`], without the I/O part.
    pub fn parse(text: &str, path: &Path) -> Result<Table> {
        let mut records = split_records(text.strip_prefix('\u{feff}').unwrap_or(text), path)?;
        if records.is_empty() {
            return Err(Error::format(path, "empty CSV: no header line"));
        }
        let header_row = records.remove(0);
        let header: Vec<String> = header_row
            .fields
            .iter()
            .map(|h| h.trim().to_string())
            .collect();
        for r in &records {
            if r.fields.len() != header.len() {
                return Err(Error::format(
                    path,
                    format!(
                        "line {}: {} fields, but the header has {} ({})",
                        r.line,
                        r.fields.len(),
                        header.len(),
                        header.join(",")
                    ),
                ));
            }
        }
        Ok(Table {
            path: path.to_path_buf(),
            header,
            rows: records,
        })
    }

    /// Index of the first column whose name is one of `names` (case-insensitive).
    pub fn find_column(&self, names: &[&str]) -> Option<usize> {
        names.iter().find_map(|n| {
            self.header
                .iter()
                .position(|h| h.eq_ignore_ascii_case(n.trim()))
        })
    }

    /// Index of a required column.
    ///
    /// # Errors
    /// [`Error::Format`] naming the missing column and listing those present.
    pub fn column(&self, names: &[&str]) -> Result<usize> {
        self.find_column(names).ok_or_else(|| {
            Error::format(
                &self.path,
                format!(
                    "no column {} (columns: {})",
                    names
                        .iter()
                        .map(|n| format!("`{n}`"))
                        .collect::<Vec<_>>()
                        .join(" or "),
                    self.header.join(", ")
                ),
            )
        })
    }

    /// An error about one row, naming the file and the line.
    pub fn row_error(&self, row: &Row, reason: impl std::fmt::Display) -> Error {
        Error::format(&self.path, format!("line {}: {reason}", row.line))
    }
}

/// Splits text into records, honouring quotes.
fn split_records(text: &str, path: &Path) -> Result<Vec<Row>> {
    let mut rows = Vec::new();
    let (mut fields, mut field) = (Vec::new(), String::new());
    let (mut line, mut start_line) = (1usize, 1usize);
    let (mut in_quotes, mut quote_line) = (false, 0usize);
    let mut chars = text.chars().peekable();
    let mut record_has_content = false;
    while let Some(c) = chars.next() {
        if in_quotes {
            match c {
                '"' if chars.peek() == Some(&'"') => {
                    chars.next();
                    field.push('"');
                }
                '"' => in_quotes = false,
                '\n' => {
                    line += 1;
                    field.push('\n');
                }
                _ => field.push(c),
            }
            continue;
        }
        match c {
            '"' => {
                in_quotes = true;
                quote_line = line;
                record_has_content = true;
            }
            ',' => {
                fields.push(std::mem::take(&mut field));
                record_has_content = true;
            }
            '\r' if chars.peek() == Some(&'\n') => {}
            '\n' => {
                if record_has_content || !field.is_empty() {
                    fields.push(std::mem::take(&mut field));
                    rows.push(Row {
                        line: start_line,
                        fields: std::mem::take(&mut fields),
                    });
                }
                record_has_content = false;
                line += 1;
                start_line = line;
            }
            _ => {
                field.push(c);
                record_has_content = true;
            }
        }
    }
    if in_quotes {
        return Err(Error::format(
            path,
            format!("line {quote_line}: quote opened here is never closed"),
        ));
    }
    if record_has_content || !field.is_empty() {
        fields.push(field);
        rows.push(Row {
            line: start_line,
            fields,
        });
    }
    Ok(rows)
}

/// A field as it must be written: quoted when it holds a comma, quote or line break.
pub fn quote(field: &str) -> Cow<'_, str> {
    if field.contains([',', '"', '\n', '\r']) {
        Cow::Owned(format!("\"{}\"", field.replace('"', "\"\"")))
    } else {
        Cow::Borrowed(field)
    }
}

/// One CSV line (with its `\n`) from fields.
pub fn line<S: AsRef<str>>(fields: &[S]) -> String {
    let mut s = fields
        .iter()
        .map(|f| quote(f.as_ref()).into_owned())
        .collect::<Vec<_>>()
        .join(",");
    s.push('\n');
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotes_line_breaks_and_line_numbers() {
        let text =
            "\u{feff}a, b ,c\r\n1,\"x,y\",\"he said \"\"hi\"\"\"\n\n2,\"multi\nline\",3\n4,5,6";
        let t = Table::parse(text, Path::new("t.csv")).unwrap();
        assert_eq!(t.header, ["a", "b", "c"]);
        assert_eq!(t.rows.len(), 3);
        assert_eq!(t.rows[0].fields, ["1", "x,y", "he said \"hi\""]);
        assert_eq!(
            (t.rows[1].line, t.rows[1].fields[1].as_str()),
            (4, "multi\nline")
        );
        assert_eq!(t.rows[2].line, 6);
        assert_eq!(t.column(&["B"]).unwrap(), 1);
        assert!(t
            .column(&["d"])
            .unwrap_err()
            .to_string()
            .contains("columns: a, b, c"));
    }

    #[test]
    fn bad_rows_name_their_line() {
        let e = Table::parse("a,b\n1,2\n3\n", Path::new("t.csv")).unwrap_err();
        assert!(e.to_string().contains("line 3: 1 fields"), "{e}");
        let e = Table::parse("a,b\n1,\"2\n", Path::new("t.csv")).unwrap_err();
        assert!(e.to_string().contains("line 2: quote"), "{e}");
        assert!(Table::parse("", Path::new("t.csv")).is_err());
    }

    #[test]
    fn written_lines_read_back() {
        let fields = ["plain", "a,b", "q\"q", "two\nlines"];
        let text = format!("{}{}", line(&["w", "x", "y", "z"]), line(&fields));
        let t = Table::parse(&text, Path::new("t.csv")).unwrap();
        assert_eq!(t.rows[0].fields, fields);
    }
}
