use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;

/// Maximum length of a selector's type.
const MAX_TYPE_LEN: usize = 64;
/// Maximum length of a selector's value.
const MAX_VALUE_LEN: usize = 1024;

/// A selector: one attested property of a node or workload, `type:value`
/// (for example `unix:uid:1000` has type `unix` and value `uid:1000`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize)]
pub struct Selector {
    /// The attestor that produced it (`unix`, `k8s`, `join_token`, ...).
    pub kind: String,
    /// The attested value; may itself contain `:`.
    pub value: String,
}

/// Why a selector was rejected.
#[derive(Debug, thiserror::Error, PartialEq, Eq, Clone)]
#[non_exhaustive]
pub enum SelectorError {
    /// No `:` separates type and value.
    #[error("selector {0:?} must have the form type:value")]
    MissingSeparator(String),
    /// The type is empty or holds characters other than `[a-z0-9_-]`.
    #[error("selector type {0:?} must be non-empty and use only a-z, 0-9, '_' and '-'")]
    BadType(String),
    /// The value is empty.
    #[error("selector {0:?} has an empty value")]
    EmptyValue(String),
    /// Type or value is too long.
    #[error("selector is too long (type at most {MAX_TYPE_LEN} bytes, value at most {MAX_VALUE_LEN})")]
    TooLong,
    /// The value has a control character.
    #[error("selector value has a control character")]
    ControlChar,
}

impl Selector {
    /// Builds a selector, validating both parts.
    pub fn new(kind: impl Into<String>, value: impl Into<String>) -> Result<Self, SelectorError> {
        let (kind, value) = (kind.into(), value.into());
        if kind.len() > MAX_TYPE_LEN || value.len() > MAX_VALUE_LEN {
            return Err(SelectorError::TooLong);
        }
        if kind.is_empty()
            || !kind.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
        {
            return Err(SelectorError::BadType(kind));
        }
        if value.is_empty() {
            return Err(SelectorError::EmptyValue(kind));
        }
        if value.chars().any(char::is_control) {
            return Err(SelectorError::ControlChar);
        }
        Ok(Self { kind, value })
    }
}

impl FromStr for Selector {
    type Err = SelectorError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (kind, value) = s.split_once(':').ok_or_else(|| SelectorError::MissingSeparator(s.to_owned()))?;
        Self::new(kind, value)
    }
}

impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.kind, self.value)
    }
}

/// A set of selectors, as attested for one node or workload.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SelectorSet(BTreeSet<Selector>);

impl SelectorSet {
    /// An empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a selector.
    pub fn insert(&mut self, s: Selector) {
        self.0.insert(s);
    }

    /// Whether every one of `required` is in this set (an entry matches when all its
    /// selectors were attested). An empty `required` never matches: an entry must
    /// name at least one selector.
    pub fn satisfies(&self, required: &[Selector]) -> bool {
        !required.is_empty() && required.iter().all(|s| self.0.contains(s))
    }

    /// Iterates in sorted order.
    pub fn iter(&self) -> impl Iterator<Item = &Selector> {
        self.0.iter()
    }

    /// Number of selectors.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl FromIterator<Selector> for SelectorSet {
    fn from_iter<I: IntoIterator<Item = Selector>>(iter: I) -> Self {
        Self(iter.into_iter().collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_type_and_value_with_colons() {
        let s: Selector = "unix:uid:1000".parse().unwrap();
        assert_eq!((s.kind.as_str(), s.value.as_str()), ("unix", "uid:1000"));
        assert_eq!(s.to_string(), "unix:uid:1000");
    }

    #[test]
    fn rejects_malformed() {
        assert!(matches!("nocolon".parse::<Selector>(), Err(SelectorError::MissingSeparator(_))));
        assert!(matches!(":v".parse::<Selector>(), Err(SelectorError::BadType(_))));
        assert!(matches!("Unix:v".parse::<Selector>(), Err(SelectorError::BadType(_))));
        assert!(matches!("unix:".parse::<Selector>(), Err(SelectorError::EmptyValue(_))));
        assert!(matches!("unix:a\nb".parse::<Selector>(), Err(SelectorError::ControlChar)));
        assert!(matches!(Selector::new("unix", "x".repeat(2000)), Err(SelectorError::TooLong)));
    }

    #[test]
    fn all_required_must_match() {
        let set: SelectorSet =
            ["unix:uid:1000", "unix:gid:1000"].iter().map(|s| s.parse().unwrap()).collect();
        let one: Vec<Selector> = vec!["unix:uid:1000".parse().unwrap()];
        let two: Vec<Selector> = vec!["unix:uid:1000".parse().unwrap(), "unix:gid:0".parse().unwrap()];
        assert!(set.satisfies(&one));
        assert!(!set.satisfies(&two));
        assert!(!set.satisfies(&[]));
    }
}
