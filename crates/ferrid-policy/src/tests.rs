use super::*;

#[test]
fn embedded_schema_and_default_set_are_valid() {
    let (_, warnings) = Schema::from_cedarschema_str(SCHEMA_TEXT).unwrap();
    assert_eq!(warnings.count(), 0);
    let set = PolicySet::default_permit();
    assert_eq!(set.len(), 2);
}

#[test]
fn line_column_counts_characters_from_one() {
    let text = "ab\ncdé\nf";
    assert_eq!(line_column(text, 0), (1, 1));
    assert_eq!(line_column(text, 4), (2, 2));
    // 'f' comes after "é" (2 bytes) and a newline.
    assert_eq!(line_column(text, text.len() - 1), (3, 1));
    assert_eq!(line_column(text, 7), (2, 4));
}

#[test]
fn hash_depends_on_names_and_contents_not_on_order() {
    let s = |n: &str, t: &str| Source { name: n.into(), origin: n.into(), text: t.into() };
    let ab = canonical_hash(&[s("a.cedar", "x"), s("b.cedar", "y")]);
    assert_eq!(ab, canonical_hash(&[s("b.cedar", "y"), s("a.cedar", "x")]));
    assert_ne!(ab, canonical_hash(&[s("a.cedar", "x"), s("b.cedar", "z")]));
    assert_ne!(ab, canonical_hash(&[s("a.cedar", "xy"), s("b.cedar", "")]));
    assert_ne!(ab, canonical_hash(&[s("c.cedar", "x"), s("b.cedar", "y")]));
    assert_eq!(ab.len(), 64);
}
