//! Schema evolution: whether rows stored under one schema of an input (a checkpoint's)
//! can be carried into the schema a restarted job declares, and how.
//!
//! Decided per input and field, as Flink decides compatible-as-is /
//! compatible-after-migration / incompatible:
//! - a field of the new schema is the stored field of its name, or of one of its
//!   `aliases` (a rename); fields may be reordered;
//! - a new field with no stored field is *added*: stored rows take its `default`, else
//!   NULL (every weft field is nullable, so an added field is always compatible);
//! - a stored field no new field answers to is *dropped*, unless it is a key or the
//!   time field;
//! - a type may *widen* where every old value is exactly a new one: i32->i64,
//!   u32->u64, u32->i64, i32->f64, u32->f64. i64->f64 and u64->f64 are refused (above
//!   2^53 an integer has no exact f64), as is every narrowing or other change;
//! - the key fields (in key order) and the time field must be the same stored fields
//!   with the same types: the key's bytes route rows to shards and find their matches,
//!   the time orders and expires them.
//!
//! A [`Migration`] rewrites a stored row record into the new layout ([`Migration::apply`]);
//! the restore applies it once to every row in state (see `checkpoint::barrier`), so
//! the hot path never meets an old row. An identity migration (same types in the same
//! places, names aside) is not applied at all.

use crate::event::{RowBuilder, RowView, Value};
use crate::schema::{Field, FieldType, Literal, Schema};

/// An input's schema as a checkpoint recorded it.
#[derive(Clone, Copy, Debug)]
pub struct Stored<'a> {
    pub fields: &'a [Field],
    /// Key field indexes, in key order.
    pub key: &'a [u32],
    /// The time field's index; `None` in checkpoints that did not record it (then the
    /// stored field the new time field answers to is taken as the time field).
    pub time: Option<u32>,
}

/// Where a field of a migrated row gets its value.
#[derive(Clone, Debug, PartialEq)]
pub enum FieldFrom {
    /// Stored field `index`, widened as `widen` says.
    Stored { index: usize, widen: Widen },
    /// Not stored: the field's default.
    Default(Value),
    /// Not stored and no default.
    Null,
}

/// A value conversion of a widened field. i32->i64, u32->u64 and u32->i64 need none
/// (a row slot holds i32 as i64 bits and u32 as u64, see `event`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Widen {
    None,
    SignedToF64,
    UnsignedToF64,
}

/// What becomes of one field, for `weft schema check` and the restart's log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verdict {
    pub field: String,
    pub verdict: String,
}

/// How stored rows of one input become rows of the new schema.
#[derive(Clone, Debug)]
pub struct Migration {
    pub fields: Vec<FieldFrom>,
    /// One per field of the new schema, then one per dropped stored field.
    pub verdicts: Vec<Verdict>,
}

/// A change that would corrupt the state: the restart is refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("input {input}, field `{field}`: {old} -> {new}: {rule}")]
pub struct Incompatible {
    pub input: String,
    pub field: String,
    /// The stored field and type (or "absent").
    pub old: String,
    /// The new field and type (or "absent").
    pub new: String,
    pub rule: String,
}

fn typed(f: &Field) -> String {
    format!("`{}` {}", f.name, f.ty.name())
}

/// The conversion that widens `from` to `to`, or why it cannot.
fn widening(from: FieldType, to: FieldType) -> Result<Widen, String> {
    use FieldType::*;
    match (from, to) {
        (a, b) if a == b => Ok(Widen::None),
        (I32, I64) | (U32, U64) | (U32, I64) => Ok(Widen::None),
        (I32, F64) => Ok(Widen::SignedToF64),
        (U32, F64) => Ok(Widen::UnsignedToF64),
        (I64 | U64, F64) => Err(format!(
            "{} -> f64 is not exact (an integer above 2^53 has no f64): keep {} or add a new f64 field",
            from.name(),
            from.name()
        )),
        _ => {
            Err("a narrowing or other type change; only i32->i64, u32->u64, u32->i64, i32->f64 and u32->f64 widen"
                .into())
        }
    }
}

/// The value a row without field `f` takes: its default, or `None` (NULL).
pub fn field_default(f: &Field) -> Option<Value> {
    f.default.as_ref().map(|d| default_value(d, f.ty))
}

/// A default literal as the row value of a field of type `ty` (checked to fit by
/// `Schema::new`).
fn default_value(l: &Literal, ty: FieldType) -> Value {
    match (l, ty) {
        (Literal::Int(v), FieldType::U32 | FieldType::U64) => Value::UInt(*v as u64),
        (Literal::Int(v), FieldType::F64) => Value::Float(*v as f64),
        (Literal::Int(v), _) => Value::Int(*v),
        (Literal::Float(v), _) => Value::Float(*v),
        (Literal::Bool(b), _) => Value::Bool(*b),
        (Literal::Str(s), _) => Value::Str(s.clone()),
    }
}

/// Decides how rows of `input` stored under `old` become rows of `new`.
pub fn plan(input: &str, old: &Stored, new: &Schema) -> Result<Migration, Incompatible> {
    let refuse = |field: &str, old: String, new: String, rule: String| Incompatible {
        input: input.to_string(),
        field: field.to_string(),
        old,
        new,
        rule,
    };
    let mut fields = Vec::with_capacity(new.fields.len());
    let mut verdicts = Vec::new();
    let mut used = vec![false; old.fields.len()];
    for nf in &new.fields {
        let found: Vec<usize> = (0..old.fields.len()).filter(|&j| nf.answers_to(&old.fields[j].name)).collect();
        match found[..] {
            [] => {
                let (from, v) = match &nf.default {
                    Some(d) => (
                        FieldFrom::Default(default_value(d, nf.ty)),
                        format!("added: rows in state take the default {}", d.show()),
                    ),
                    None => (FieldFrom::Null, "added: rows in state hold NULL (no default)".to_string()),
                };
                fields.push(from);
                verdicts.push(Verdict { field: nf.name.clone(), verdict: v });
            }
            [j] => {
                let of = &old.fields[j];
                used[j] = true;
                // A key or time field whose type changes is refused below by the key
                // and time rules (which name the rule that matters), not as a widening.
                let keyed = old.key.contains(&(j as u32)) || old.time == Some(j as u32);
                let widen = match widening(of.ty, nf.ty) {
                    Ok(w) => w,
                    Err(_) if keyed => Widen::None,
                    Err(rule) => return Err(refuse(&nf.name, typed(of), typed(nf), rule)),
                };
                let mut what = Vec::new();
                if of.name != nf.name {
                    what.push(format!("renamed from `{}` (alias)", of.name));
                }
                if of.ty != nf.ty {
                    what.push(format!("widened {} -> {}", of.ty.name(), nf.ty.name()));
                }
                let v = if what.is_empty() { "unchanged".to_string() } else { what.join(", ") };
                fields.push(FieldFrom::Stored { index: j, widen });
                verdicts.push(Verdict { field: nf.name.clone(), verdict: v });
            }
            _ => {
                let names: Vec<String> = found.iter().map(|&j| format!("`{}`", old.fields[j].name)).collect();
                return Err(refuse(
                    &nf.name,
                    names.join(" and "),
                    typed(nf),
                    "two stored fields answer to it (its name and an alias): keep one of them".into(),
                ));
            }
        }
    }
    let old_time = match old.time {
        Some(t) => Some(t as usize),
        None => match &fields[new.time] {
            FieldFrom::Stored { index, .. } => Some(*index),
            _ => None,
        },
    };
    for (j, of) in old.fields.iter().enumerate() {
        if used[j] {
            continue;
        }
        if old.key.contains(&(j as u32)) {
            return Err(refuse(
                &of.name,
                typed(of),
                "absent".into(),
                "a key field cannot be dropped or renamed without an alias".into(),
            ));
        }
        if old_time == Some(j) {
            return Err(refuse(
                &of.name,
                typed(of),
                "absent".into(),
                "the time field cannot be dropped or renamed without an alias".into(),
            ));
        }
        verdicts.push(Verdict { field: of.name.clone(), verdict: format!("dropped (was {})", of.ty.name()) });
    }
    // The key: the same stored fields, in the same order, with the same types.
    let old_key: Vec<String> = old.key.iter().map(|&k| old.fields.get(k as usize).map_or("?".into(), typed)).collect();
    let new_key: Vec<String> = new.key.iter().map(|&k| typed(&new.fields[k])).collect();
    let same_key = old.key.len() == new.key.len()
        && new.key.iter().zip(old.key).all(|(&nk, &ok)| {
            matches!(fields[nk], FieldFrom::Stored { index, .. } if index == ok as usize)
                && old.fields[ok as usize].ty == new.fields[nk].ty
        });
    if !same_key {
        return Err(refuse(
            &new.key.iter().map(|&k| new.fields[k].name.as_str()).collect::<Vec<_>>().join(","),
            format!("key ({})", old_key.join(", ")),
            format!("key ({})", new_key.join(", ")),
            "a change to the key fields or their types: rows in state would be found under another key".into(),
        ));
    }
    let nt = &new.fields[new.time];
    match (&fields[new.time], old_time) {
        (FieldFrom::Stored { index, .. }, Some(ot)) if *index == ot && old.fields[ot].ty == nt.ty => {}
        (_, ot) => {
            let was = ot.and_then(|t| old.fields.get(t)).map_or("absent".into(), typed);
            return Err(refuse(
                &nt.name,
                format!("time {was}"),
                format!("time {}", typed(nt)),
                "a change to the time field or its type".into(),
            ));
        }
    }
    Ok(Migration { fields, verdicts })
}

impl Migration {
    /// True when stored rows are already rows of the new schema (same types in the
    /// same places; names may differ): nothing to rewrite.
    pub fn is_identity(&self, stored_fields: usize) -> bool {
        self.fields.len() == stored_fields
            && self
                .fields
                .iter()
                .enumerate()
                .all(|(i, f)| matches!(f, FieldFrom::Stored { index, widen: Widen::None } if *index == i))
    }

    /// True when any field changed (name, type, added, dropped, moved).
    pub fn changes_anything(&self, stored_fields: usize) -> bool {
        !self.is_identity(stored_fields) || self.verdicts.iter().any(|v| v.verdict != "unchanged")
    }

    /// Writes `old` (a row of the stored schema) as a row of the new one into `out`.
    /// `types` are the new schema's field types.
    pub fn apply(&self, old: RowView, types: &[FieldType], out: &mut RowBuilder) -> Result<(), &'static str> {
        out.begin(self.fields.len());
        for (i, from) in self.fields.iter().enumerate() {
            match from {
                FieldFrom::Stored { index, widen } => {
                    let j = *index;
                    if old.is_null(j) {
                        continue;
                    }
                    match (widen, types[i]) {
                        (Widen::SignedToF64, _) => out.set_f64(i, old.i64(j) as f64),
                        (Widen::UnsignedToF64, _) => out.set_f64(i, old.slot(j) as f64),
                        (Widen::None, FieldType::String) => out.set_str(i, old.str(j))?,
                        (Widen::None, _) => out.set_u64(i, old.slot(j)),
                    }
                }
                FieldFrom::Default(v) => out.set_value(i, v)?,
                FieldFrom::Null => {}
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field(n: &str, ty: FieldType) -> Field {
        Field::new(n, ty)
    }

    fn v1() -> Vec<Field> {
        vec![
            field("profile_id", FieldType::U64),
            field("ts", FieldType::I64),
            field("duration_ms", FieldType::I32),
            field("score", FieldType::U32),
            field("note", FieldType::String),
        ]
    }

    fn stored(f: &[Field]) -> Stored<'_> {
        Stored { fields: f, key: &[0], time: Some(1) }
    }

    fn schema(fields: Vec<Field>) -> Schema {
        Schema::new("plays", fields, &["profile_id".into()], "ts").unwrap()
    }

    fn row(fields: &[Field], vals: &[Value]) -> Vec<u8> {
        let mut b = RowBuilder::new();
        b.begin(fields.len());
        for (i, v) in vals.iter().enumerate() {
            b.set_value(i, v).unwrap();
        }
        b.bytes().to_vec()
    }

    fn values(fields: &[Field], bytes: &[u8]) -> Vec<Value> {
        fields.iter().enumerate().map(|(i, f)| RowView(bytes).value(f.ty, i)).collect()
    }

    #[test]
    fn add_rename_widen_reorder_and_drop_migrate_rows() {
        let old = v1();
        let new_fields = vec![
            field("ts", FieldType::I64),
            Field { default: Some(Literal::Str("tv".into())), ..field("device", FieldType::String) },
            field("profile_id", FieldType::U64),
            Field { aliases: vec!["duration_ms".into()], ..field("watched_ms", FieldType::I64) },
            field("score", FieldType::F64),
            field("extra", FieldType::Bool),
        ];
        let new = schema(new_fields.clone());
        let m = plan("plays", &stored(&old), &new).unwrap();
        assert!(!m.is_identity(old.len()));
        let verdicts: Vec<(&str, &str)> = m.verdicts.iter().map(|v| (v.field.as_str(), v.verdict.as_str())).collect();
        assert_eq!(
            verdicts,
            vec![
                ("ts", "unchanged"),
                ("device", "added: rows in state take the default \"tv\""),
                ("profile_id", "unchanged"),
                ("watched_ms", "renamed from `duration_ms` (alias), widened i32 -> i64"),
                ("score", "widened u32 -> f64"),
                ("extra", "added: rows in state hold NULL (no default)"),
                ("note", "dropped (was string)"),
            ]
        );
        let bytes = row(
            &old,
            &[Value::UInt(7), Value::Int(1000), Value::Int(-5), Value::UInt(4_000_000_000), Value::Str("x".into())],
        );
        let mut b = RowBuilder::new();
        let types: Vec<FieldType> = new_fields.iter().map(|f| f.ty).collect();
        m.apply(RowView(&bytes), &types, &mut b).unwrap();
        assert_eq!(
            values(&new_fields, b.bytes()),
            vec![
                Value::Int(1000),
                Value::Str("tv".into()),
                Value::UInt(7),
                Value::Int(-5),
                Value::Float(4_000_000_000.0),
                Value::Null
            ]
        );
        // NULL stays NULL through a widening.
        let bytes = row(&old, &[Value::UInt(7), Value::Int(1), Value::Null, Value::Null, Value::Null]);
        m.apply(RowView(&bytes), &types, &mut b).unwrap();
        assert_eq!(values(&new_fields, b.bytes())[3..5], [Value::Null, Value::Null]);
    }

    /// One case per type pair: exactly the five widenings migrate (values kept exactly,
    /// the extremes of the old type included); every other change of type is refused.
    #[test]
    fn exactly_the_five_widenings_migrate_and_keep_every_value() {
        use FieldType::*;
        let all = [I32, I64, U32, U64, F64, Bool, String];
        let extremes = |t: FieldType| match t {
            I32 => vec![Value::Int(i32::MIN as i64), Value::Int(-1), Value::Int(i32::MAX as i64)],
            U32 => vec![Value::UInt(0), Value::UInt(u32::MAX as u64)],
            _ => vec![],
        };
        for from in all {
            for to in all.into_iter().filter(|&t| t != from) {
                let old = vec![field("profile_id", U64), field("ts", I64), field("v", from)];
                let new = vec![field("profile_id", U64), field("ts", I64), field("v", to)];
                let verdict = plan("plays", &stored(&old), &schema(new.clone()));
                let widens = matches!((from, to), (I32, I64) | (U32, U64) | (U32, I64) | (I32, F64) | (U32, F64));
                assert_eq!(verdict.is_ok(), widens, "{from:?} -> {to:?}");
                let Ok(m) = verdict else { continue };
                let types: Vec<FieldType> = new.iter().map(|f| f.ty).collect();
                let mut b = RowBuilder::new();
                for v in extremes(from) {
                    let bytes = row(&old, &[Value::UInt(1), Value::Int(2), v.clone()]);
                    m.apply(RowView(&bytes), &types, &mut b).unwrap();
                    let want = match (&v, to) {
                        (Value::Int(x), F64) => Value::Float(*x as f64),
                        (Value::UInt(x), F64) => Value::Float(*x as f64),
                        (Value::UInt(x), I64) => Value::Int(*x as i64),
                        _ => v.clone(),
                    };
                    assert_eq!(values(&new, b.bytes())[2], want, "{from:?} -> {to:?} of {v:?}");
                }
            }
        }
    }

    #[test]
    fn same_types_in_place_is_identity_even_renamed() {
        let old = v1();
        let mut f = v1();
        f[4] = Field { aliases: vec!["note".into()], ..field("comment", FieldType::String) };
        let m = plan("plays", &stored(&old), &schema(f)).unwrap();
        assert!(m.is_identity(old.len()));
        assert!(m.changes_anything(old.len()));
        let m = plan("plays", &stored(&old), &schema(v1())).unwrap();
        assert!(m.is_identity(old.len()) && !m.changes_anything(old.len()));
    }

    #[test]
    fn incompatible_changes_name_input_field_types_and_rule() {
        let old = v1();
        let check = |f: Vec<Field>, key: &[&str], time: &str| {
            let s = Schema::new("plays", f, &key.iter().map(|k| k.to_string()).collect::<Vec<_>>(), time).unwrap();
            plan("plays", &stored(&old), &s).unwrap_err()
        };
        let mut narrowed = v1();
        narrowed[2].ty = FieldType::U32;
        let e = check(narrowed, &["profile_id"], "ts");
        assert_eq!(
            (e.field.as_str(), e.old.as_str(), e.new.as_str()),
            ("duration_ms", "`duration_ms` i32", "`duration_ms` u32")
        );
        assert!(e.rule.contains("narrowing or other"), "{e}");
        assert!(e.to_string().starts_with("input plays, field `duration_ms`"), "{e}");

        let mut inexact = v1();
        inexact[1] = field("ts", FieldType::I64);
        inexact.push(field("big", FieldType::F64));
        let mut old_big = v1();
        old_big.push(field("big", FieldType::I64));
        let s = Schema::new("plays", inexact, &["profile_id".into()], "ts").unwrap();
        let e = plan("plays", &stored(&old_big), &s).unwrap_err();
        assert!(e.rule.contains("not exact"), "{e}");

        let mut key_type = v1();
        key_type[0].ty = FieldType::I64;
        let e = check(key_type, &["profile_id"], "ts");
        assert!(e.rule.contains("key"), "{e}");

        let e = check(v1(), &["profile_id", "note"], "ts");
        assert!(e.rule.contains("key") && e.new.contains("`note` string"), "{e}");

        let mut time_type = v1();
        time_type[1].ty = FieldType::U64;
        let e = check(time_type, &["profile_id"], "ts");
        assert!(e.rule.contains("time field"), "{e}");

        let mut no_key = v1();
        no_key[0].name = "member_id".into();
        let e = check(no_key, &["member_id"], "ts");
        assert!(e.rule.contains("key field cannot be dropped") || e.rule.contains("key"), "{e}");

        let both = vec![
            field("profile_id", FieldType::U64),
            field("ts", FieldType::I64),
            Field { aliases: vec!["duration_ms".into()], ..field("note", FieldType::String) },
            field("score", FieldType::U32),
        ];
        let e = check(both, &["profile_id"], "ts");
        assert!(e.rule.contains("two stored fields"), "{e}");
    }
}
