//! The systemd dlopen metadata note (`.note.dlopen`): a JSON array of objects, each with a
//! `soname` array of alternatives. See: <https://systemd.io/ELF_DLOPEN_METADATA/>
//!
//! The descriptor is parsed leniently: anything that is not valid JSON of that shape yields no
//! sonames, never an error, because the note is advisory.

/// Sonames listed in one note descriptor, in order, without duplicates.
pub(crate) fn sonames(descriptor: &[u8]) -> Vec<Vec<u8>> {
    let text = descriptor
        .split(|&byte| byte == 0)
        .next()
        .unwrap_or_default();
    let Ok(serde_json::Value::Array(objects)) = serde_json::from_slice::<serde_json::Value>(text)
    else {
        return Vec::new();
    };
    let mut found: Vec<Vec<u8>> = Vec::new();
    for object in &objects {
        let Some(serde_json::Value::Array(names)) = object.get("soname") else {
            continue;
        };
        for name in names.iter().filter_map(serde_json::Value::as_str) {
            let name = name.as_bytes().to_vec();
            if !found.contains(&name) {
                found.push(name);
            }
        }
    }
    found
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
    fn ignores_garbage() {
        assert!(sonames(b"not json").is_empty());
        assert!(sonames(br#"{"soname":["x"]}"#).is_empty());
        assert!(sonames(br#"[{"soname":"x"}]"#).is_empty());
    }
}
