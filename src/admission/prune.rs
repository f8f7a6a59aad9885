//! Decoding part of a JSON document into the ecosystem's own types.
//!
//! A [`Keep`] tree names the object keys worth decoding; the value of every other key is skipped
//! by the JSON parser without building anything. What is kept is decoded by the target type's own
//! `Deserialize` (kube's, k8s-openapi's), so the result is the usual typed value with the skipped
//! fields left at their defaults.
//!
//! Why, measured (`tests/decode_memory.rs`, BENCHMARKS.md): memory. A review carries the object
//! twice, and a client that can write PersistentVolumes controls their annotations (and so their
//! `managedFields`). For a 2 MiB review of two such volumes, kube's full typed decode holds
//! 12.7 MiB beyond the body; this one 0.01 MiB. The server admits 16 MiB of bodies at once
//! (`--max-buffered-bytes`), so without it a few such reviews would take the server past the
//! chart's 64 MiB limit. The CPU it saves (about 9 µs a review, `cargo bench --bench review`) is
//! not what keeps it: a review through the API server costs hundreds of µs either way.

use std::borrow::Cow;
use std::fmt;
use std::marker::PhantomData;

use serde::de::value::{BorrowedStrDeserializer, StringDeserializer};
use serde::de::{
    self, DeserializeOwned, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, Visitor,
};

/// Which parts of a JSON value to decode.
#[derive(Debug)]
pub enum Keep {
    /// All of it.
    All,
    /// An object: only these keys, each with its own rule; the others are skipped.
    Fields(&'static [(&'static str, &'static Keep)]),
    /// A map: only the keys that start with this prefix, each value whole.
    Prefixed(&'static str),
}

impl Keep {
    fn child(&self, key: &str) -> Option<&'static Keep> {
        match self {
            Keep::All => Some(&Keep::All),
            Keep::Fields(fields) => fields.iter().find(|(k, _)| *k == key).map(|(_, c)| *c),
            Keep::Prefixed(prefix) => key.starts_with(prefix).then_some(&Keep::All),
        }
    }
}

/// Decodes `T` from one JSON document, keeping only what `keep` names.
pub fn from_slice<T: DeserializeOwned>(body: &[u8], keep: &'static Keep) -> serde_json::Result<T> {
    let mut de = serde_json::Deserializer::from_slice(body);
    let value = Pruned::new(PhantomData::<T>, keep).deserialize(&mut de)?;
    de.end()?;
    Ok(value)
}

/// `seed`, decoding only what `keep` names.
pub struct Pruned<S> {
    seed: S,
    keep: &'static Keep,
}

impl<S> Pruned<S> {
    pub fn new(seed: S, keep: &'static Keep) -> Self {
        Self { seed, keep }
    }
}

impl<'de, S: DeserializeSeed<'de>> DeserializeSeed<'de> for Pruned<S> {
    type Value = S::Value;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<S::Value, D::Error> {
        match self.keep {
            // Nothing to filter below here: the parser's own deserializer, at full speed.
            Keep::All => self.seed.deserialize(d),
            keep => self.seed.deserialize(PrunedDeserializer { inner: d, keep }),
        }
    }
}

/// A map key, borrowed from the input unless it had escapes.
pub(super) struct Key<'de>(pub(super) Cow<'de, str>);

impl<'de> de::Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl<'de> Visitor<'de> for KeyVisitor {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string key")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(v)))
            }
        }
        d.deserialize_str(KeyVisitor)
    }
}

struct PrunedDeserializer<D> {
    inner: D,
    keep: &'static Keep,
}

macro_rules! forward_pruned {
    ($($method:ident($($arg:ident: $ty:ty),*);)*) => {$(
        fn $method<V: Visitor<'de>>(self, $($arg: $ty,)* visitor: V) -> Result<V::Value, D::Error> {
            self.inner.$method($($arg,)* PrunedVisitor { inner: visitor, keep: self.keep })
        }
    )*};
}

impl<'de, D: Deserializer<'de>> Deserializer<'de> for PrunedDeserializer<D> {
    type Error = D::Error;

    forward_pruned! {
        deserialize_any();
        deserialize_bool();
        deserialize_i8();
        deserialize_i16();
        deserialize_i32();
        deserialize_i64();
        deserialize_i128();
        deserialize_u8();
        deserialize_u16();
        deserialize_u32();
        deserialize_u64();
        deserialize_u128();
        deserialize_f32();
        deserialize_f64();
        deserialize_char();
        deserialize_str();
        deserialize_string();
        deserialize_bytes();
        deserialize_byte_buf();
        deserialize_option();
        deserialize_unit();
        deserialize_unit_struct(name: &'static str);
        deserialize_newtype_struct(name: &'static str);
        deserialize_seq();
        deserialize_tuple(len: usize);
        deserialize_tuple_struct(name: &'static str, len: usize);
        deserialize_map();
        deserialize_struct(name: &'static str, fields: &'static [&'static str]);
        deserialize_enum(name: &'static str, variants: &'static [&'static str]);
        deserialize_identifier();
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, D::Error> {
        self.inner.deserialize_ignored_any(visitor)
    }

    fn is_human_readable(&self) -> bool {
        self.inner.is_human_readable()
    }
}

/// Passes everything through, except that maps are filtered and `Some` keeps filtering.
struct PrunedVisitor<V> {
    inner: V,
    keep: &'static Keep,
}

macro_rules! forward_visit {
    ($($method:ident($ty:ty);)*) => {$(
        fn $method<E: de::Error>(self, v: $ty) -> Result<V::Value, E> {
            self.inner.$method(v)
        }
    )*};
}

impl<'de, V: Visitor<'de>> Visitor<'de> for PrunedVisitor<V> {
    type Value = V::Value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        self.inner.expecting(f)
    }

    forward_visit! {
        visit_bool(bool);
        visit_i64(i64);
        visit_i128(i128);
        visit_u64(u64);
        visit_u128(u128);
        visit_f64(f64);
        visit_char(char);
        visit_str(&str);
        visit_borrowed_str(&'de str);
        visit_string(String);
        visit_bytes(&[u8]);
        visit_borrowed_bytes(&'de [u8]);
        visit_byte_buf(Vec<u8>);
    }

    fn visit_none<E: de::Error>(self) -> Result<V::Value, E> {
        self.inner.visit_none()
    }

    fn visit_unit<E: de::Error>(self) -> Result<V::Value, E> {
        self.inner.visit_unit()
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<V::Value, D::Error> {
        self.inner.visit_some(PrunedDeserializer {
            inner: d,
            keep: self.keep,
        })
    }

    fn visit_newtype_struct<D: Deserializer<'de>>(self, d: D) -> Result<V::Value, D::Error> {
        self.inner.visit_newtype_struct(PrunedDeserializer {
            inner: d,
            keep: self.keep,
        })
    }

    fn visit_seq<A: de::SeqAccess<'de>>(self, seq: A) -> Result<V::Value, A::Error> {
        self.inner.visit_seq(seq)
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<V::Value, A::Error> {
        self.inner.visit_map(PrunedMap {
            inner: map,
            keep: self.keep,
            value: &Keep::All,
        })
    }

    fn visit_enum<A: de::EnumAccess<'de>>(self, data: A) -> Result<V::Value, A::Error> {
        self.inner.visit_enum(data)
    }
}

/// A map that hides the keys `keep` does not name, skipping their values unparsed.
struct PrunedMap<A> {
    inner: A,
    keep: &'static Keep,
    /// The rule for the value of the key returned last.
    value: &'static Keep,
}

impl<'de, A: MapAccess<'de>> MapAccess<'de> for PrunedMap<A> {
    type Error = A::Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, A::Error> {
        while let Some(Key(key)) = self.inner.next_key::<Key<'de>>()? {
            let Some(child) = self.keep.child(&key) else {
                self.inner.next_value::<IgnoredAny>()?;
                continue;
            };
            self.value = child;
            return match key {
                Cow::Borrowed(k) => seed.deserialize(BorrowedStrDeserializer::new(k)),
                Cow::Owned(k) => seed.deserialize(StringDeserializer::new(k)),
            }
            .map(Some);
        }
        Ok(None)
    }

    fn next_value_seed<S: DeserializeSeed<'de>>(&mut self, seed: S) -> Result<S::Value, A::Error> {
        self.inner.next_value_seed(Pruned::new(seed, self.value))
    }
}
