//! Access modes as a set: order and duplicates never change a decision.

use std::fmt;

use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};

use super::{Claim, Volume};

/// One of the four access modes Kubernetes defines, or something else a manifest may carry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum AccessMode {
    ReadWriteOnce,
    ReadOnlyMany,
    ReadWriteMany,
    ReadWriteOncePod,
}

impl AccessMode {
    /// All known modes, in the order they are printed.
    pub const ALL: [AccessMode; 4] = [
        AccessMode::ReadWriteOnce,
        AccessMode::ReadOnlyMany,
        AccessMode::ReadWriteMany,
        AccessMode::ReadWriteOncePod,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            AccessMode::ReadWriteOnce => "ReadWriteOnce",
            AccessMode::ReadOnlyMany => "ReadOnlyMany",
            AccessMode::ReadWriteMany => "ReadWriteMany",
            AccessMode::ReadWriteOncePod => "ReadWriteOncePod",
        }
    }

    pub fn parse(s: &str) -> Option<AccessMode> {
        AccessMode::ALL.into_iter().find(|m| m.as_str() == s)
    }

    fn bit(self) -> u8 {
        1 << (self as u8)
    }
}

impl fmt::Display for AccessMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A set of access modes. Unknown names (a typo in a manifest) are kept, so that they count as
/// "another mode" next to ReadWriteOncePod and show up in messages.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct AccessModes {
    known: u8,
    unknown: Vec<String>,
}

impl AccessModes {
    pub fn empty() -> Self {
        Self::default()
    }

    pub fn only(mode: AccessMode) -> Self {
        Self {
            known: mode.bit(),
            unknown: Vec::new(),
        }
    }

    pub fn from_names<I, S>(names: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut set = Self::default();
        for name in names {
            set.insert_name(name.as_ref());
        }
        set
    }

    /// Reads `spec.accessModes` as it appears on an object; absent means empty.
    pub fn from_optional(names: Option<&Vec<String>>) -> Self {
        names.map(Self::from_names).unwrap_or_default()
    }

    pub fn insert(&mut self, mode: AccessMode) {
        self.known |= mode.bit();
    }

    pub fn insert_name(&mut self, name: &str) {
        match AccessMode::parse(name) {
            Some(mode) => self.insert(mode),
            None => {
                if let Err(at) = self.unknown.binary_search_by(|u| u.as_str().cmp(name)) {
                    self.unknown.insert(at, name.to_owned());
                }
            }
        }
    }

    pub fn contains(&self, mode: AccessMode) -> bool {
        self.known & mode.bit() != 0
    }

    pub fn len(&self) -> usize {
        self.known.count_ones() as usize + self.unknown.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// True when the set is exactly `{mode}`.
    pub fn is_only(&self, mode: AccessMode) -> bool {
        self.unknown.is_empty() && self.known == mode.bit()
    }

    /// The names in canonical order: known modes first, then unknown ones sorted.
    pub fn names(&self) -> impl Iterator<Item = &str> + '_ {
        AccessMode::ALL
            .into_iter()
            .filter(|m| self.contains(*m))
            .map(|m| m.as_str())
            .chain(self.unknown.iter().map(String::as_str))
    }
}

impl FromIterator<AccessMode> for AccessModes {
    fn from_iter<I: IntoIterator<Item = AccessMode>>(iter: I) -> Self {
        let mut set = Self::default();
        for mode in iter {
            set.insert(mode);
        }
        set
    }
}

/// Printed as `[ReadWriteOnce, ReadWriteOncePod]`, the way kubectl users write them.
impl fmt::Display for AccessModes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[")?;
        for (i, name) in self.names().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            f.write_str(name)?;
        }
        f.write_str("]")
    }
}

/// An object that carries `spec.accessModes`: the one way to read them, for volumes and claims
/// (a StatefulSet's `volumeClaimTemplates` are claims too).
pub trait HasAccessModes {
    /// `spec.accessModes` as a set; an absent spec or field is the empty set.
    fn access_modes(&self) -> AccessModes;
}

/// `spec.accessModes` of each type, read the one way.
macro_rules! access_modes_in_spec {
    ($($t:ty),*) => {$(
        impl HasAccessModes for $t {
            fn access_modes(&self) -> AccessModes {
                AccessModes::from_optional(self.spec.as_ref().and_then(|s| s.access_modes.as_ref()))
            }
        }
    )*};
}

access_modes_in_spec!(PersistentVolume, PersistentVolumeClaim, Claim, Volume);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn order_and_duplicates_do_not_matter() {
        let a = AccessModes::from_names(["ReadWriteOncePod", "ReadWriteOnce", "ReadWriteOnce"]);
        let b = AccessModes::from_names(["ReadWriteOnce", "ReadWriteOncePod"]);
        assert_eq!(a, b);
        assert_eq!(a.len(), 2);
        assert_eq!(a.to_string(), "[ReadWriteOnce, ReadWriteOncePod]");
    }

    #[test]
    fn unknown_names_are_kept_and_counted() {
        let m = AccessModes::from_names(["ReadWriteOncePod", "ReadWriteOnePod", "ReadWriteOnePod"]);
        assert_eq!(m.len(), 2);
        assert!(!m.is_only(AccessMode::ReadWriteOncePod));
        assert_eq!(m.to_string(), "[ReadWriteOncePod, ReadWriteOnePod]");
    }

    #[test]
    fn is_only_and_empty() {
        assert!(AccessModes::only(AccessMode::ReadWriteOnce).is_only(AccessMode::ReadWriteOnce));
        assert!(!AccessModes::empty().is_only(AccessMode::ReadWriteOnce));
        assert!(AccessModes::from_optional(None).is_empty());
        assert_eq!(AccessModes::empty().to_string(), "[]");
    }
}
