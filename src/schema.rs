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

/// A field's `default`: a TOML (or manifest JSON) literal, checked against the field's
/// type by [`Schema::new`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Literal {
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
}

impl Literal {
    /// Whether the literal is a value of type `ty` (an integer literal is also an f64).
    pub fn fits(&self, ty: FieldType) -> bool {
        match (self, ty) {
            (Literal::Bool(_), FieldType::Bool) | (Literal::Str(_), FieldType::String) => true,
            (Literal::Int(v), FieldType::I32) => i32::try_from(*v).is_ok(),
            (Literal::Int(v), FieldType::U32) => u32::try_from(*v).is_ok(),
            (Literal::Int(v), FieldType::U64) => *v >= 0,
            (Literal::Int(_), FieldType::I64 | FieldType::F64) | (Literal::Float(_), FieldType::F64) => true,
            _ => false,
        }
    }

    /// The literal as TOML writes it, for messages.
    pub fn show(&self) -> String {
        match self {
            Literal::Bool(b) => b.to_string(),
            Literal::Int(v) => v.to_string(),
            Literal::Float(v) => format!("{v:?}"),
            Literal::Str(s) => format!("{s:?}"),
        }
    }
}

/// One named, typed field. `default` is the value a row (or a row stored in state
/// before the field existed) takes when it has none; without one such a row holds
/// NULL. `aliases` are former names: an input column, a JSON key or a checkpoint's
/// field of that name is this field.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Field {
    pub name: String,
    #[serde(rename = "type")]
    pub ty: FieldType,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<Literal>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub aliases: Vec<String>,
}

impl Field {
    pub fn new(name: &str, ty: FieldType) -> Field {
        Field { name: name.to_string(), ty, default: None, aliases: Vec::new() }
    }

    /// Whether `name` is this field's name or one of its aliases.
    pub fn answers_to(&self, name: &str) -> bool {
        self.name == name || self.aliases.iter().any(|a| a == name)
    }
}

/// The resolved schema of one input.
#[derive(Clone, Debug, PartialEq)]
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
            for a in &f.aliases {
                if a.is_empty() {
                    return Err(format!("field `{}` has an empty alias", f.name));
                }
                if let Some(g) = fields.iter().enumerate().find(|&(j, g)| g.answers_to(a) && (j != i || g.name == *a)) {
                    return Err(format!(
                        "alias `{a}` of field `{}` is also a name or alias of field `{}`",
                        f.name, g.1.name
                    ));
                }
                if f.aliases.iter().filter(|b| *b == a).count() > 1 {
                    return Err(format!("field `{}` lists alias `{a}` twice", f.name));
                }
            }
            if let Some(d) = &f.default {
                if !d.fits(f.ty) {
                    return Err(format!(
                        "field `{}` has type {} but its default {} is not a {} value",
                        f.name,
                        f.ty.name(),
                        d.show(),
                        f.ty.name()
                    ));
                }
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
        for &i in key_idx.iter().chain([&time_idx]) {
            if let Some(d) = &fields[i].default {
                let role = if i == time_idx { "time" } else { "key" };
                return Err(format!(
                    "{role} field `{}` has a default ({}): a row without its {role} cannot be joined, so it is a dead letter; remove the default",
                    fields[i].name,
                    d.show()
                ));
            }
        }
        Ok(Schema { name: name.to_string(), fields, key: key_idx, time: time_idx })
    }

    pub fn key_types(&self) -> Vec<FieldType> {
        self.key.iter().map(|&i| self.fields[i].ty).collect()
    }

    pub fn field_index(&self, name: &str) -> Option<usize> {
        self.fields.iter().position(|f| f.name == name)
    }

    /// The field whose name or alias is `name` (an input column, a JSON key).
    pub fn field_answering(&self, name: &str) -> Option<usize> {
        self.fields.iter().position(|f| f.answers_to(name))
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

    #[test]
    fn defaults_must_fit_their_type_and_not_sit_on_key_or_time() {
        let with = |ty, d| Field { default: Some(d), ..f("d", ty) };
        let mk = |extra: Field| {
            Schema::new("imp", vec![f("k", FieldType::U64), f("ts", FieldType::I64), extra], &["k".into()], "ts")
        };
        assert!(mk(with(FieldType::String, Literal::Str("tv".into()))).is_ok());
        assert!(mk(with(FieldType::F64, Literal::Int(3))).is_ok(), "an integer literal is an f64");
        let e = mk(with(FieldType::U32, Literal::Int(-1))).unwrap_err();
        assert!(e.contains("`d` has type u32") && e.contains("-1"), "{e}");
        let e = mk(with(FieldType::I64, Literal::Str("x".into()))).unwrap_err();
        assert!(e.contains("\"x\" is not a i64 value"), "{e}");
        let key_default = Field { default: Some(Literal::Int(1)), ..f("k", FieldType::U64) };
        let e = Schema::new("imp", vec![key_default, f("ts", FieldType::I64)], &["k".into()], "ts").unwrap_err();
        assert!(e.contains("key field `k` has a default"), "{e}");
    }

    #[test]
    fn aliases_must_not_clash() {
        let aka = |n: &str, t, a: &[&str]| Field { aliases: a.iter().map(|s| s.to_string()).collect(), ..f(n, t) };
        let base = |extra: Field| {
            Schema::new("imp", vec![f("k", FieldType::U64), f("ts", FieldType::I64), extra], &["k".into()], "ts")
        };
        let s = base(aka("watched_ms", FieldType::I64, &["duration_ms"])).unwrap();
        assert_eq!(s.field_answering("duration_ms"), Some(2));
        assert_eq!(s.field_answering("watched_ms"), Some(2));
        assert_eq!(s.field_answering("nope"), None);
        let e = base(aka("x", FieldType::I64, &["ts"])).unwrap_err();
        assert!(e.contains("alias `ts` of field `x`") && e.contains("field `ts`"), "{e}");
        let e = base(aka("x", FieldType::I64, &["x"])).unwrap_err();
        assert!(e.contains("alias `x` of field `x`"), "{e}");
        let e = base(aka("x", FieldType::I64, &["y", "y"])).unwrap_err();
        assert!(e.contains("twice"), "{e}");
    }
}
