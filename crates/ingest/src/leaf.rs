//! Leaf values of JSON input, from either a parsed [`serde_json::Value`] or a streaming
//! [`Scalar`] that never fails to deserialize: the conversions in `json` take either.

use std::borrow::Cow;
use std::fmt;
use std::marker::PhantomData;

use serde::de::{self, Deserialize, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::Value;

pub(crate) trait Leaf {
    /// "a string", "an array"... for error messages.
    fn kind(&self) -> &'static str;
    fn str(&self) -> Option<&str>;
    fn u64(&self) -> Option<u64>;
    fn i64(&self) -> Option<i64>;
    fn f64(&self) -> Option<f64>;
    /// A number's decimal text in shortest round-trip form (what the sender wrote).
    fn number_text(&self) -> Option<String>;
}

impl Leaf for Value {
    fn kind(&self) -> &'static str {
        match self {
            Value::Null => "null",
            Value::Bool(_) => "a boolean",
            Value::Number(_) => "a number",
            Value::String(_) => "a string",
            Value::Array(_) => "an array",
            Value::Object(_) => "an object",
        }
    }
    fn str(&self) -> Option<&str> {
        self.as_str()
    }
    fn u64(&self) -> Option<u64> {
        self.as_u64()
    }
    fn i64(&self) -> Option<i64> {
        self.as_i64()
    }
    fn f64(&self) -> Option<f64> {
        self.as_f64()
    }
    fn number_text(&self) -> Option<String> {
        match self {
            Value::Number(n) => Some(n.to_string()),
            _ => None,
        }
    }
}

/// Any JSON value reduced to what a leaf field needs; arrays and objects are skipped without
/// building them, so a wrong-shaped field costs nothing and fails only where it is read.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Scalar<'a> {
    Str(Cow<'a, str>),
    U64(u64),
    I64(i64),
    F64(f64),
    Bool(bool),
    Null,
    Container(&'static str),
}

impl Leaf for Scalar<'_> {
    fn kind(&self) -> &'static str {
        match self {
            Scalar::Str(_) => "a string",
            Scalar::U64(_) | Scalar::I64(_) | Scalar::F64(_) => "a number",
            Scalar::Bool(_) => "a boolean",
            Scalar::Null => "null",
            Scalar::Container(k) => k,
        }
    }
    fn str(&self) -> Option<&str> {
        match self {
            Scalar::Str(s) => Some(s),
            _ => None,
        }
    }
    fn u64(&self) -> Option<u64> {
        match *self {
            Scalar::U64(u) => Some(u),
            Scalar::I64(i) => u64::try_from(i).ok(),
            _ => None,
        }
    }
    fn i64(&self) -> Option<i64> {
        match *self {
            Scalar::U64(u) => i64::try_from(u).ok(),
            Scalar::I64(i) => Some(i),
            _ => None,
        }
    }
    fn f64(&self) -> Option<f64> {
        match *self {
            Scalar::U64(u) => Some(u as f64),
            Scalar::I64(i) => Some(i as f64),
            Scalar::F64(f) => Some(f),
            _ => None,
        }
    }
    fn number_text(&self) -> Option<String> {
        match self {
            Scalar::U64(u) => Some(u.to_string()),
            Scalar::I64(i) => Some(i.to_string()),
            // Rust prints f64 in shortest round-trip form, like serde_json.
            Scalar::F64(f) => Some(f.to_string()),
            _ => None,
        }
    }
}

struct ScalarVisitor<'a>(PhantomData<&'a ()>);

impl<'de: 'a, 'a> Visitor<'de> for ScalarVisitor<'a> {
    type Value = Scalar<'a>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(Scalar::Str(Cow::Borrowed(v)))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Scalar::Str(Cow::Owned(v.to_owned())))
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
        Ok(Scalar::Str(Cow::Owned(v)))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
        Ok(Scalar::U64(v))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
        Ok(Scalar::I64(v))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
        Ok(Scalar::F64(v))
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Self::Value, E> {
        Ok(Scalar::Bool(v))
    }
    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(Scalar::Null)
    }
    fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(Scalar::Null)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Scalar::Container("an array"))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(Scalar::Container("an object"))
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Scalar<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ScalarVisitor(PhantomData))
    }
}

/// A nested object that never fails to deserialize: `Wrong` says what came instead, so the
/// consumer can warn at the field's path and go on.
#[derive(Debug)]
pub(crate) enum Obj<T> {
    Ok(T),
    Wrong(&'static str),
}

/// A nested array that never fails to deserialize. `Text` keeps a string in its place (some
/// exporters store arrays as JSON text).
#[derive(Debug)]
pub(crate) enum List<'a, T> {
    Ok(Vec<T>),
    Text(Cow<'a, str>),
    Wrong(&'static str),
}

struct ObjVisitor<T>(PhantomData<T>);

macro_rules! wrong_scalars {
    ($wrong:expr) => {
        fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
            Ok($wrong("a boolean"))
        }
        fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
            Ok($wrong("a number"))
        }
        fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
            Ok($wrong("a number"))
        }
        fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
            Ok($wrong("a number"))
        }
        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok($wrong("null"))
        }
    };
}

impl<'de, T: Deserialize<'de>> Visitor<'de> for ObjVisitor<T> {
    type Value = Obj<T>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        T::deserialize(de::value::MapAccessDeserializer::new(map)).map(Obj::Ok)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Obj::Wrong("an array"))
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<Self::Value, E> {
        Ok(Obj::Wrong("a string"))
    }
    wrong_scalars!(Obj::Wrong);
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Obj<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ObjVisitor(PhantomData))
    }
}

struct ListVisitor<'a, T>(PhantomData<(&'a (), T)>);

impl<'de: 'a, 'a, T: Deserialize<'de>> Visitor<'de> for ListVisitor<'a, T> {
    type Value = List<'a, T>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON array")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(64));
        while let Some(x) = seq.next_element::<T>()? {
            out.push(x);
        }
        Ok(List::Ok(out))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(List::Wrong("an object"))
    }
    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(List::Text(Cow::Borrowed(v)))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(List::Text(Cow::Owned(v.to_owned())))
    }
    wrong_scalars!(List::Wrong);
}

impl<'de: 'a, 'a, T: Deserialize<'de>> Deserialize<'de> for List<'a, T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ListVisitor(PhantomData))
    }
}

/// A struct of optional fields read from a JSON object in one pass. Unlike serde's derive it
/// never fails on content: unknown keys are skipped, a repeated key keeps its last value, and
/// every field type is itself infallible (`Scalar`, `Obj`, `List`), so one odd field cannot
/// fail its parent. JSON `null` leaves a field `None`, like an absent key.
macro_rules! lenient_struct {
    ($(#[$m:meta])* struct $name:ident<$lt:lifetime> { $($field:ident : $ty:ty = $key:literal),* $(,)? }) => {
        $(#[$m])*
        #[derive(Debug, Default)]
        struct $name<$lt> {
            $($field: Option<$ty>,)*
            _lt: std::marker::PhantomData<&$lt ()>,
        }

        impl<'de: $lt, $lt> serde::Deserialize<'de> for $name<$lt> {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                struct V<$lt>(std::marker::PhantomData<&$lt ()>);
                impl<'de: $lt, $lt> serde::de::Visitor<'de> for V<$lt> {
                    type Value = $name<$lt>;
                    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                        f.write_str("a JSON object")
                    }
                    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                        let mut out = $name::default();
                        while let Some(key) = map.next_key::<$crate::leaf::Scalar<'de>>()? {
                            match $crate::leaf::Leaf::str(&key).unwrap_or("") {
                                $($key => out.$field = map.next_value()?,)*
                                _ => {
                                    map.next_value::<serde::de::IgnoredAny>()?;
                                }
                            }
                        }
                        Ok(out)
                    }
                }
                d.deserialize_map(V(std::marker::PhantomData))
            }
        }
    };
}
pub(crate) use lenient_struct;
