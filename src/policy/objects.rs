//! What the rules read of a claim and of a volume, as types: [`Claim`] and [`Volume`].
//!
//! These types are the decode's keep list. serde decodes only their fields and skips every other
//! key of the object unparsed, so a rule can read only what was decoded: a new rule that needs
//! another field adds it here, and the compiler sees to the rest. Leaf fields are k8s-openapi's
//! own types; `metadata` is k8s-openapi's `ObjectMeta` holding only the name, generateName,
//! namespace and the `rwop-guard.dev/` annotations (see [`ANNOTATION_PREFIX`]).
//!
//! Why not decode the whole object, measured (`tests/decode_memory.rs`, BENCHMARKS.md): memory.
//! A review carries the object twice, and a client that can write PersistentVolumes controls
//! their annotations and so their `managedFields`. For a 2 MiB review of two such volumes,
//! decoding k8s-openapi's whole objects holds 12.7 MiB beyond the body; these types 3 KiB.
//! The server admits 16 MiB of bodies at once (`--max-buffered-bytes`), so whole objects would
//! take it past the 64 MiB the server's bounds are sized for with a few such reviews.

use std::collections::BTreeMap;
use std::fmt;

use k8s_openapi::api::core::v1::{
    CSIPersistentVolumeSource, ObjectReference, PersistentVolume, PersistentVolumeClaim,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use serde::de::{Deserializer, IgnoredAny, MapAccess, Visitor};
use serde::{Deserialize, Serialize};

use super::ANNOTATION_PREFIX;

/// A PersistentVolumeClaim as the rules see it.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
pub struct Claim {
    #[serde(default, deserialize_with = "kept_metadata")]
    pub metadata: ObjectMeta,
    pub spec: Option<ClaimSpec>,
}

#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ClaimSpec {
    pub access_modes: Option<Vec<String>>,
    pub selector: Option<LabelSelector>,
    pub storage_class_name: Option<String>,
    pub volume_name: Option<String>,
}

/// A PersistentVolume as the rules see it.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
pub struct Volume {
    #[serde(default, deserialize_with = "kept_metadata")]
    pub metadata: ObjectMeta,
    pub spec: Option<VolumeSpec>,
}

#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct VolumeSpec {
    pub access_modes: Option<Vec<String>>,
    pub claim_ref: Option<ObjectReference>,
    pub csi: Option<CSIPersistentVolumeSource>,
    pub persistent_volume_reclaim_policy: Option<String>,
}

/// The part of `metadata` the rules read: the rest (labels, managedFields, others' annotations)
/// is skipped unparsed.
fn kept_metadata<'de, D: Deserializer<'de>>(d: D) -> Result<ObjectMeta, D::Error> {
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Kept {
        name: Option<String>,
        generate_name: Option<String>,
        namespace: Option<String>,
        #[serde(default, deserialize_with = "our_annotations")]
        annotations: Option<BTreeMap<String, String>>,
    }
    let kept = Option::<Kept>::deserialize(d)?;
    Ok(kept.map_or_else(ObjectMeta::default, |k| ObjectMeta {
        name: k.name,
        generate_name: k.generate_name,
        namespace: k.namespace,
        annotations: k.annotations,
        ..ObjectMeta::default()
    }))
}

/// Only the `rwop-guard.dev/` annotations. The map stays present (perhaps empty) when the object
/// has one, which the mutation patches depend on.
fn our_annotations<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<Option<BTreeMap<String, String>>, D::Error> {
    struct Ours;
    impl<'de> Visitor<'de> for Ours {
        type Value = Option<BTreeMap<String, String>>;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a map of annotations")
        }
        fn visit_unit<E>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut ours = BTreeMap::new();
            while let Some(key) = map.next_key::<String>()? {
                if key.starts_with(ANNOTATION_PREFIX) {
                    ours.insert(key, map.next_value()?);
                } else {
                    map.next_value::<IgnoredAny>()?;
                }
            }
            Ok(Some(ours))
        }
    }
    d.deserialize_any(Ours)
}

/// Any other kind of object: allowed without being read, so nothing of it is decoded.
#[derive(Clone, Debug, Default)]
pub(crate) struct Unread {
    pub metadata: ObjectMeta,
}

impl<'de> Deserialize<'de> for Unread {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        IgnoredAny::deserialize(d)?;
        Ok(Unread::default())
    }
}

/// `Resource` (which kube's `AdmissionRequest` and `Api` ask of their objects) for a type that
/// holds part of a `$whole`, in its `metadata` field.
macro_rules! resource_as {
    ($view:ty, $whole:ty) => {
        impl ::kube::core::Resource for $view {
            type DynamicType = ();
            type Scope = <$whole as ::kube::core::Resource>::Scope;
            fn kind(dt: &()) -> ::std::borrow::Cow<'_, str> {
                <$whole as ::kube::core::Resource>::kind(dt)
            }
            fn group(dt: &()) -> ::std::borrow::Cow<'_, str> {
                <$whole as ::kube::core::Resource>::group(dt)
            }
            fn version(dt: &()) -> ::std::borrow::Cow<'_, str> {
                <$whole as ::kube::core::Resource>::version(dt)
            }
            fn plural(dt: &()) -> ::std::borrow::Cow<'_, str> {
                <$whole as ::kube::core::Resource>::plural(dt)
            }
            fn meta(&self) -> &::k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
                &self.metadata
            }
            fn meta_mut(
                &mut self,
            ) -> &mut ::k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
                &mut self.metadata
            }
        }
    };
}
pub(crate) use resource_as;

resource_as!(Claim, PersistentVolumeClaim);
resource_as!(Volume, PersistentVolume);
// Its kind is whatever the request says (the answer takes it from there); the type's own is
// never asked for.
resource_as!(Unread, PersistentVolume);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::{
        HasAccessModes, MIGRATION_ANNOTATION, MUTATED_FROM_ANNOTATION, OPT_OUT_ANNOTATION,
    };

    /// The annotations the rules read are the ones the decode keeps.
    #[test]
    fn rule_annotations_are_under_the_kept_prefix() {
        for a in [
            MIGRATION_ANNOTATION,
            OPT_OUT_ANNOTATION,
            MUTATED_FROM_ANNOTATION,
        ] {
            assert!(a.starts_with(ANNOTATION_PREFIX), "{a}");
        }
    }

    /// Keys written with an escape are recognised: a field, and one of our annotations.
    #[test]
    fn escaped_keys_are_kept() {
        let claim: Claim = serde_json::from_str(
            r#"{"metadata":{"name":"c","annotations":{"rwop-guard.dev/m\u0075tate":"false",
                "other.example/a":"x"}},
                "spec":{"acc\u0065ssModes":["ReadWriteOncePod","ReadWriteOnce"]}}"#,
        )
        .unwrap();
        assert_eq!(claim.access_modes().len(), 2);
        assert_eq!(
            claim.metadata.annotations,
            Some(BTreeMap::from([(
                OPT_OUT_ANNOTATION.to_owned(),
                "false".to_owned()
            )]))
        );
    }
}
