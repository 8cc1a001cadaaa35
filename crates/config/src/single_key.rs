//! Enums written in YAML as a map with one key (`path: {exact: /v1}`), the seeds' style.
//!
//! The YAML crate reads externally tagged enums only from `!tags`; these enums instead derive
//! serde with `remote = "Self"` (inherent `deserialize`/`serialize` fns) and this macro adds
//! trait impls that read a one-key map and hand it to the derived code, which keeps its error
//! messages ("unknown variant `x`, expected one of ...") and positions.

macro_rules! single_key_enum {
    ($t:ident, $expected:literal) => {
        impl<'de> serde::Deserialize<'de> for $t {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                struct V;
                impl<'de> serde::de::Visitor<'de> for V {
                    type Value = $t;
                    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                        f.write_str(concat!("a map with ", $expected))
                    }
                    fn visit_map<A: serde::de::MapAccess<'de>>(
                        self,
                        mut map: A,
                    ) -> Result<$t, A::Error> {
                        let value = $t::deserialize(serde::de::value::MapAccessDeserializer::new(
                            &mut map,
                        ))?;
                        if map.next_key::<serde::de::IgnoredAny>()?.is_some() {
                            return Err(serde::de::Error::custom(concat!(
                                "expected exactly ",
                                $expected
                            )));
                        }
                        Ok(value)
                    }
                }
                d.deserialize_map(V)
            }
        }
        impl serde::Serialize for $t {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                $t::serialize(self, s)
            }
        }
    };
}
