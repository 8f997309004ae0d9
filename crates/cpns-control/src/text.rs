//! Serde as text for the ids of `cpns-wire` (which has no serde of its own: its messages are
//! CBOR only): each id is written as the string its `Display` gives and read back with its
//! `FromStr`, so a malformed id is refused where it is read, naming why.

use core::fmt::Display;
use core::str::FromStr;

use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serializer};

/// One id as text.
pub(crate) fn serialize<T: Display, S: Serializer>(v: &T, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(v)
}

/// One id from text.
pub(crate) fn deserialize<'de, T, D>(d: D) -> Result<T, D::Error>
where
    T: FromStr,
    T::Err: Display,
    D: Deserializer<'de>,
{
    let text = String::deserialize(d)?;
    text.parse()
        .map_err(|e| D::Error::custom(format!("`{text}`: {e}")))
}

/// An optional id as text, or `null`.
pub(crate) mod opt {
    use super::*;

    /// Writes the id, or `null`.
    pub(crate) fn serialize<T: Display, S: Serializer>(
        v: &Option<T>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        match v {
            Some(v) => s.collect_str(v),
            None => s.serialize_none(),
        }
    }

    /// Reads the id, or `null`.
    pub(crate) fn deserialize<'de, T, D>(d: D) -> Result<Option<T>, D::Error>
    where
        T: FromStr,
        T::Err: Display,
        D: Deserializer<'de>,
    {
        match Option::<String>::deserialize(d)? {
            Some(text) => text
                .parse()
                .map(Some)
                .map_err(|e| D::Error::custom(format!("`{text}`: {e}"))),
            None => Ok(None),
        }
    }
}

/// A list of ids, each as text.
pub(crate) mod list {
    use super::*;
    use serde::ser::SerializeSeq;

    /// Writes the ids.
    pub(crate) fn serialize<T: Display, S: Serializer>(v: &[T], s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(v.len()))?;
        for item in v {
            seq.serialize_element(&item.to_string())?;
        }
        seq.end()
    }

    /// Reads the ids.
    pub(crate) fn deserialize<'de, T, D>(d: D) -> Result<Vec<T>, D::Error>
    where
        T: FromStr,
        T::Err: Display,
        D: Deserializer<'de>,
    {
        Vec::<String>::deserialize(d)?
            .into_iter()
            .map(|text| {
                text.parse()
                    .map_err(|e| D::Error::custom(format!("`{text}`: {e}")))
            })
            .collect()
    }
}

/// An optional list of ids, each as text.
pub(crate) mod opt_list {
    use super::*;

    /// Writes the ids, or `null`.
    pub(crate) fn serialize<T: Display, S: Serializer>(
        v: &Option<Vec<T>>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        match v {
            Some(v) => super::list::serialize(v, s),
            None => s.serialize_none(),
        }
    }

    /// Reads the ids, or `null`.
    pub(crate) fn deserialize<'de, T, D>(d: D) -> Result<Option<Vec<T>>, D::Error>
    where
        T: FromStr,
        T::Err: Display,
        D: Deserializer<'de>,
    {
        Option::<Vec<String>>::deserialize(d)?
            .map(|v| {
                v.into_iter()
                    .map(|text| {
                        text.parse()
                            .map_err(|e| D::Error::custom(format!("`{text}`: {e}")))
                    })
                    .collect()
            })
            .transpose()
    }
}
