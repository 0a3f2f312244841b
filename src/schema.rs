//! Field types and stream schemas: what a row of one input looks like.
//!
//! A [`Schema`] is resolved once from the configuration and never changes while a
//! job runs. It owns the positions of the key fields and of the event-time field, so
//! the hot path never looks a field up by name.
//!
//! Invariants: `fields.len() <= FIELDS_MAX`; `key` is non-empty and every entry is
//! a valid field index; `time` indexes an integer field.

use serde::{Deserialize, Serialize};

/// At most this many fields per input (one null bitmap word).
pub const FIELDS_MAX: usize = 64;

/// The type of one field. Every field may also be NULL.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FieldType {
    I32,
    I64,
    U32,
    U64,
    F64,
    Bool,
    String,
}

impl FieldType {
    pub fn is_integer(self) -> bool {
        matches!(self, FieldType::I32 | FieldType::I64 | FieldType::U32 | FieldType::U64)
    }

    pub fn name(self) -> &'static str {
        match self {
            FieldType::I32 => "i32",
            FieldType::I64 => "i64",
            FieldType::U32 => "u32",
            FieldType::U64 => "u64",
            FieldType::F64 => "f64",
            FieldType::Bool => "bool",
            FieldType::String => "string",
        }
    }
}

/// One named, typed field.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Field {
    pub name: String,
    #[serde(rename = "type")]
    pub ty: FieldType,
}

impl Field {
    pub fn new(name: &str, ty: FieldType) -> Field {
        Field { name: name.to_string(), ty }
    }
}

/// The resolved schema of one input.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Schema {
    /// The input's name, e.g. `impressions`; prefixes output column names.
    pub name: String,
    pub fields: Vec<Field>,
    /// Indices of the key fields, in key order.
    pub key: Vec<usize>,
    /// Index of the event-time field (integer, ms since the Unix epoch).
    pub time: usize,
}

impl Schema {
    /// Builds a schema; the error names what is wrong. Callers add the config path.
    pub fn new(name: &str, fields: Vec<Field>, key: &[String], time: &str) -> Result<Schema, String> {
        if fields.is_empty() {
            return Err("`fields` is empty".into());
        }
        if fields.len() > FIELDS_MAX {
            return Err(format!("{} fields, at most {FIELDS_MAX} are supported", fields.len()));
        }
        for (i, f) in fields.iter().enumerate() {
            if f.name.is_empty() {
                return Err(format!("field {i} has an empty name"));
            }
            if fields[..i].iter().any(|g| g.name == f.name) {
                return Err(format!("field `{}` is declared twice", f.name));
            }
        }
        let find = |n: &str| fields.iter().position(|f| f.name == n);
        if key.is_empty() {
            return Err("`key` is empty: name at least one key field".into());
        }
        let mut key_idx = Vec::with_capacity(key.len());
        for k in key {
            match find(k) {
                Some(i) => key_idx.push(i),
                None => return Err(format!("key field `{k}` is not in `fields`")),
            }
        }
        let time_idx = find(time).ok_or_else(|| format!("time field `{time}` is not in `fields`"))?;
        if !fields[time_idx].ty.is_integer() {
            return Err(format!(
                "time field `{time}` has type {}, it must be an integer (ms since the Unix epoch)",
                fields[time_idx].ty.name()
            ));
        }
        Ok(Schema { name: name.to_string(), fields, key: key_idx, time: time_idx })
    }

    pub fn key_types(&self) -> Vec<FieldType> {
        self.key.iter().map(|&i| self.fields[i].ty).collect()
    }

    pub fn field_index(&self, name: &str) -> Option<usize> {
        self.fields.iter().position(|f| f.name == name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(n: &str, t: FieldType) -> Field {
        Field::new(n, t)
    }

    #[test]
    fn resolves_key_and_time() {
        let s = Schema::new(
            "imp",
            vec![f("a", FieldType::U64), f("ts", FieldType::I64), f("b", FieldType::String)],
            &["b".into(), "a".into()],
            "ts",
        )
        .unwrap();
        assert_eq!(s.key, vec![2, 0]);
        assert_eq!(s.time, 1);
    }

    #[test]
    fn rejects_bad_time_and_missing_key() {
        let fields = vec![f("a", FieldType::U64), f("ts", FieldType::F64)];
        assert!(Schema::new("x", fields.clone(), &["a".into()], "ts").unwrap_err().contains("integer"));
        assert!(Schema::new("x", fields.clone(), &["zz".into()], "a").unwrap_err().contains("`zz`"));
        assert!(Schema::new("x", fields, &[], "a").unwrap_err().contains("empty"));
    }
}
