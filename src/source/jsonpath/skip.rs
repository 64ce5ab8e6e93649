//! Values outside the pointers: skipped, and with `Skip::Validate` still parsed the
//! way `serde_json::Value` parses them (same errors, no allocation).

use super::*;

/// A value outside the pointers.
pub(super) struct Skipper(pub(super) Skip);

impl<'de> DeserializeSeed<'de> for Skipper {
    type Value = ();

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        match self.0 {
            Skip::Validate => d.deserialize_any(Validate),
            Skip::Lenient => d.deserialize_ignored_any(IgnoredAny).map(|_| ()),
        }
    }
}

/// Consumes any value through the same deserializer calls as `serde_json::Value`.
pub(super) struct Validate;

impl<'de> DeserializeSeed<'de> for Validate {
    type Value = ();

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Validate {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_none<E>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_some<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }

    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        Ok(())
    }

    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        Ok(())
    }

    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        Ok(())
    }

    fn visit_f64<E>(self, _: f64) -> Result<(), E> {
        Ok(())
    }

    fn visit_str<E>(self, _: &str) -> Result<(), E> {
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while seq.next_element_seed(Validate)?.is_some() {}
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        // Keys go through `deserialize_str`, as `serde_json::Value`'s do.
        while map.next_key_seed(ValidateKey)?.is_some() {
            map.next_value_seed(Validate)?;
        }
        Ok(())
    }
}

pub(super) struct ValidateKey;

impl<'de> DeserializeSeed<'de> for ValidateKey {
    type Value = ();

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_str(Validate)
    }
}
