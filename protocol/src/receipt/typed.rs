//! The quick way in for receipts that are already valid, as nearly every receipt the agent
//! drains is (the ingest validated it before it was queued).
//!
//! serde builds the typed [`Receipt`] straight from the JSON, with no `serde_json::Value` tree
//! per receipt, and [`accept`] then applies every rule of the validation walk (`check`)
//! through the same rule functions (`rules`). The walk stays the authority: a receipt this
//! path does not accept (any serde error, any broken rule) is validated again by the walk,
//! which names each fault with its pointer. So this path only has to be *sound*: whatever it
//! accepts, the walk accepts too, normalised the same way. The tests hold it to that.

use std::marker::PhantomData;

use serde::de::{value::MapAccessDeserializer, MapAccess, Visitor};
use serde::{Deserialize, Deserializer};

use super::check::metadata_ok;
use super::rules::{check_chars, check_date, check_len, parse_uuid_ok, sha256, tenant_id};
use super::*;

/// A `T` that serde may only build from a JSON object. Derived struct deserializers also take
/// a JSON array of the fields in order, which the walk refuses ("must be a JSON object").
pub(crate) struct Object<T>(pub(crate) T);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Object<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Only<T>(PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for Only<T> {
            type Value = T;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
                T::deserialize(MapAccessDeserializer::new(map))
            }
        }
        deserializer.deserialize_map(Only(PhantomData)).map(Object)
    }
}

/// `#[serde(deserialize_with)]` for an optional nested object ([`Receipt::image`]).
pub(super) fn optional_object<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Ok(Option::<Object<T>>::deserialize(deserializer)?.map(|o| o.0))
}

/// `#[serde(deserialize_with)]` for a list of objects ([`Receipt::items`]).
pub(super) fn objects<'de, D, T>(deserializer: D) -> Result<Vec<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Ok(Vec::<Object<T>>::deserialize(deserializer)?
        .into_iter()
        .map(|o| o.0)
        .collect())
}

/// Whether a receipt serde built passes every rule of the walk; on `true` it is normalised as
/// the walk normalises (canonical `receipt_id`, lowercase `image.sha256`). On `false` the
/// receipt must go through the walk for its errors.
///
/// serde already checked what its derives check: the field names (unknown or repeated ones
/// fail), the JSON types, `image.bytes` as a whole number, and every [`Decimal`] (its
/// deserializer is [`Decimal::parse`], whose accepted text is all SQS-safe).
pub(crate) fn accept(r: &mut Receipt) -> bool {
    let text = |s: &str, rule: &dyn Fn(&str) -> Result<(), String>| {
        check_chars(s).is_ok() && rule(s).is_ok()
    };
    let ok = text(&r.tenant_id, &tenant_id)
        && r.submitted_by
            .as_deref()
            .is_none_or(|s| text(s, &|s| check_len(s, 0, MAX_SUBMITTED_BY_CHARS)))
        && text(&r.merchant, &|s| check_len(s, 1, MAX_MERCHANT_CHARS))
        && text(&r.issued_on, &check_date)
        && text(&r.currency, &super::rules::currency)
        && r.category
            .as_deref()
            .is_none_or(|s| text(s, &|s| check_len(s, 0, MAX_CATEGORY_CHARS)))
        && r.image.as_ref().is_none_or(|i| {
            i.key
                .as_deref()
                .is_none_or(|k| text(k, &|s| check_len(s, 1, MAX_IMAGE_KEY_CHARS)))
                && text(&i.sha256, &sha256)
                && i.content_type
                    .as_deref()
                    .is_none_or(|c| text(c, &super::rules::content_type))
                && (i.key.is_some()
                    || (i.content_type.is_some() && super::rules::photo_bytes(i.bytes).is_ok()))
        })
        && r.items.len() <= MAX_ITEMS
        && r.items.iter().all(|item| {
            text(&item.description, &|s| {
                check_len(s, 1, MAX_DESCRIPTION_CHARS)
            })
        })
        && r.metadata.as_ref().is_none_or(metadata_ok);
    if !ok {
        return false;
    }
    // Last: the id checked, and made canonical where it is not (without a new string: the
    // 36-character form `parse_uuid` accepts is canonical once lowercased).
    if parse_uuid_ok(&r.receipt_id) {
        r.receipt_id.make_ascii_lowercase();
    } else {
        return false;
    }
    if let Some(image) = &mut r.image {
        image.sha256.make_ascii_lowercase();
    }
    true
}

#[cfg(test)]
mod tests;
