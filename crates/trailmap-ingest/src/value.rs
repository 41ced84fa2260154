//! The dynamic value a reader hands to the mapper for one field of one record.

use std::borrow::Cow;

#[derive(Debug, Clone, PartialEq)]
pub enum Value<'a> {
    Str(Cow<'a, str>),
    Int(i64),
    Float(f64),
    Bool(bool),
    /// Already a point in time: microseconds since the epoch, UTC.
    Micros(i64),
}

impl<'a> Value<'a> {
    /// The value as text, as it would be written in a CSV.
    pub fn to_text(&self) -> Cow<'_, str> {
        match self {
            Value::Str(s) => Cow::Borrowed(s.as_ref()),
            Value::Int(i) => Cow::Owned(i.to_string()),
            Value::Float(f) => Cow::Owned(f.to_string()),
            Value::Bool(b) => Cow::Borrowed(if *b { "true" } else { "false" }),
            Value::Micros(us) => Cow::Owned(crate::time::format_micros(*us)),
        }
    }

    /// Empty strings count as absent: exports write missing values as "".
    pub fn is_empty(&self) -> bool {
        matches!(self, Value::Str(s) if s.trim().is_empty())
    }

    pub fn from_json(v: &'a serde_json::Value) -> Option<Value<'a>> {
        match v {
            serde_json::Value::Null => None,
            serde_json::Value::String(s) => Some(Value::Str(Cow::Borrowed(s))),
            serde_json::Value::Bool(b) => Some(Value::Bool(*b)),
            serde_json::Value::Number(n) => Some(Value::from_number(n)),
            // Objects and arrays are passed as their JSON text (properties fields).
            other => Some(Value::Str(Cow::Owned(other.to_string()))),
        }
    }

    pub fn from_number(n: &serde_json::Number) -> Value<'static> {
        match n.as_i64() {
            Some(i) => Value::Int(i),
            None => Value::Float(n.as_f64().unwrap_or(f64::NAN)),
        }
    }

    pub fn to_json(&self) -> serde_json::Value {
        match self {
            Value::Str(s) => serde_json::Value::String(s.to_string()),
            Value::Int(i) => (*i).into(),
            Value::Float(f) => serde_json::Number::from_f64(*f)
                .map(serde_json::Value::Number)
                .unwrap_or(serde_json::Value::Null),
            Value::Bool(b) => (*b).into(),
            Value::Micros(us) => serde_json::Value::String(crate::time::format_micros(*us)),
        }
    }
}
