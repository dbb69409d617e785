//! The systemd dlopen metadata note (`.note.dlopen`): a JSON array of objects, each with a
//! `soname` array of alternatives. See: <https://systemd.io/ELF_DLOPEN_METADATA/>
//!
//! The descriptor is parsed leniently: anything that is not valid JSON of that shape yields no
//! sonames, never an error, because the note is advisory.

/// Sonames listed in one note descriptor, in order, without duplicates.
#[cfg(test)]
pub(crate) fn sonames(descriptor: &[u8]) -> Vec<Vec<u8>> {
    let mut found: Vec<Vec<u8>> = Vec::new();
    for name in groups(descriptor).into_iter().flatten() {
        if !found.contains(&name) {
            found.push(name);
        }
    }
    found
}

/// The groups of one note descriptor, in order: each object's `soname` array, a list of
/// alternatives of which one is enough. Objects without sonames give no group.
pub(crate) fn groups(descriptor: &[u8]) -> Vec<Vec<Vec<u8>>> {
    let text = descriptor
        .split(|&byte| byte == 0)
        .next()
        .unwrap_or_default();
    let Ok(serde_json::Value::Array(objects)) = serde_json::from_slice::<serde_json::Value>(text)
    else {
        return Vec::new();
    };
    let mut groups: Vec<Vec<Vec<u8>>> = Vec::new();
    for object in &objects {
        let Some(serde_json::Value::Array(names)) = object.get("soname") else {
            continue;
        };
        let mut group: Vec<Vec<u8>> = Vec::new();
        for name in names.iter().filter_map(serde_json::Value::as_str) {
            let name = name.as_bytes().to_vec();
            if !group.contains(&name) {
                group.push(name);
            }
        }
        if !group.is_empty() {
            groups.push(group);
        }
    }
    groups
}

#[cfg(test)]
mod tests {
    use super::sonames;

    #[test]
    fn reads_all_alternatives() {
        let note = br#"[{"feature":"zstd","soname":["libzstd.so.1","libzstd.so"]},{"soname":["liblz4.so.1"]}]"#;
        assert_eq!(
            sonames(note),
            vec![
                b"libzstd.so.1".to_vec(),
                b"libzstd.so".to_vec(),
                b"liblz4.so.1".to_vec()
            ]
        );
    }

    #[test]
    fn keeps_each_object_as_a_group_of_alternatives() {
        let note = br#"[{"soname":["libzstd.so.1","libzstd.so"]},{"soname":[]},{"soname":["liblz4.so.1"]}]"#;
        assert_eq!(
            super::groups(note),
            vec![
                vec![b"libzstd.so.1".to_vec(), b"libzstd.so".to_vec()],
                vec![b"liblz4.so.1".to_vec()]
            ]
        );
    }

    #[test]
    fn ignores_garbage() {
        assert!(sonames(b"not json").is_empty());
        assert!(sonames(br#"{"soname":["x"]}"#).is_empty());
        assert!(sonames(br#"[{"soname":"x"}]"#).is_empty());
    }
}
