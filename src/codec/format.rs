//! Row formatters: output rows (left fields then right fields, NULL for a missing
//! side) and input rows (late-data output, `weft gen` files) as CSV or JSON lines.
//! Shared by the streaming sinks, the batch join and `weft gen`, so all of them
//! write byte-identical rows.
//!
//! Costs: a formatter precomputes its JSON keys, so formatting a row allocates
//! nothing once the output buffer has grown; the header is built once per file.
//! Never does I/O: the caller owns the buffer and the file.

use super::csv::write_csv_cell;
use super::json::{write_json_str, write_json_value};
use super::Format;
use crate::event::RowView;
use crate::schema::Schema;

/// The output header: `<left name>.<field>`, then `<right name>.<field>`.
pub fn output_columns(left: &Schema, right: &Schema) -> Vec<String> {
    let mut cols = Vec::with_capacity(left.fields.len() + right.fields.len());
    for s in [left, right] {
        for f in &s.fields {
            cols.push(format!("{}.{}", s.name, f.name));
        }
    }
    cols
}

/// Appends a CSV header line for `cols`.
pub fn write_csv_header(out: &mut Vec<u8>, cols: &[String]) {
    for (i, c) in cols.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(c.as_bytes());
    }
    out.push(b'\n');
}

/// Formats joined rows. Precomputes the JSON keys so a row costs no allocation.
pub struct OutputFormatter {
    format: Format,
    left: Schema,
    right: Schema,
    json_keys: Vec<Vec<u8>>,
}

impl OutputFormatter {
    pub fn new(format: Format, left: &Schema, right: &Schema) -> OutputFormatter {
        let json_keys = output_columns(left, right)
            .iter()
            .map(|c| {
                let mut k = Vec::new();
                write_json_str(&mut k, c.as_bytes());
                k.push(b':');
                k
            })
            .collect();
        OutputFormatter { format, left: left.clone(), right: right.clone(), json_keys }
    }

    pub fn header(&self) -> Vec<u8> {
        let mut h = Vec::new();
        if self.format == Format::Csv {
            write_csv_header(&mut h, &output_columns(&self.left, &self.right));
        }
        h
    }

    /// Appends one output row; `None` = the NULL-padded side of an outer row.
    pub fn write(&self, out: &mut Vec<u8>, l: Option<RowView>, r: Option<RowView>) {
        let mut col = 0;
        match self.format {
            Format::Csv => {
                for (schema, row) in [(&self.left, l), (&self.right, r)] {
                    for (i, f) in schema.fields.iter().enumerate() {
                        if col > 0 {
                            out.push(b',');
                        }
                        col += 1;
                        if let Some(row) = row {
                            write_csv_cell(out, row, f.ty, i);
                        }
                    }
                }
                out.push(b'\n');
            }
            Format::Jsonl => {
                out.push(b'{');
                for (schema, row) in [(&self.left, l), (&self.right, r)] {
                    for (i, f) in schema.fields.iter().enumerate() {
                        if col > 0 {
                            out.push(b',');
                        }
                        out.extend_from_slice(&self.json_keys[col]);
                        col += 1;
                        match row {
                            Some(row) => write_json_value(out, row, f.ty, i),
                            None => out.extend_from_slice(b"null"),
                        }
                    }
                }
                out.extend_from_slice(b"}\n");
            }
        }
    }
}

/// Formats rows of one input in its own columns (the late-data side output).
pub struct InputFormatter {
    format: Format,
    schema: Schema,
    json_keys: Vec<Vec<u8>>,
}

impl InputFormatter {
    pub fn new(format: Format, schema: &Schema) -> InputFormatter {
        let json_keys = schema
            .fields
            .iter()
            .map(|f| {
                let mut k = Vec::new();
                write_json_str(&mut k, f.name.as_bytes());
                k.push(b':');
                k
            })
            .collect();
        InputFormatter { format, schema: schema.clone(), json_keys }
    }

    pub fn header(&self) -> Vec<u8> {
        let mut h = Vec::new();
        if self.format == Format::Csv {
            let cols: Vec<String> = self.schema.fields.iter().map(|f| f.name.clone()).collect();
            write_csv_header(&mut h, &cols);
        }
        h
    }

    pub fn write(&self, out: &mut Vec<u8>, row: RowView) {
        match self.format {
            Format::Csv => {
                for (i, f) in self.schema.fields.iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    write_csv_cell(out, row, f.ty, i);
                }
                out.push(b'\n');
            }
            Format::Jsonl => {
                out.push(b'{');
                for (i, f) in self.schema.fields.iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    out.extend_from_slice(&self.json_keys[i]);
                    write_json_value(out, row, f.ty, i);
                }
                out.extend_from_slice(b"}\n");
            }
        }
    }
}
