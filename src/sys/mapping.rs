//! The flat key/value form of the config.
//!
//! Module files are nested documents; the shared config is a flat mapping from `/`-joined
//! paths under the prefix `raptiformica/` to JSON leaves (string, number, bool, list). The flat
//! form is what is cached in `mutable_config.json` and stored in consul's KV, exactly as the
//! original project did, so both sides of a mixed cluster read the same keys.

use std::collections::BTreeMap;

use serde_json::Value;

/// Every key of the shared config starts with this segment.
pub const PREFIX: &str = "raptiformica";

/// The sections a complete mapping must have (`raptiformica/<section>/...`).
pub const REQUIRED_SECTIONS: [&str; 3] = ["server", "compute", "platform"];

/// A flat config mapping, sorted by key.
pub type Mapping = BTreeMap<String, Value>;

/// Flattens a nested document into `prefix/a/b = leaf` pairs, added to `out`.
///
/// Empty objects vanish (they carry no leaf); every other value is a leaf.
pub fn flatten_into(prefix: &str, value: &Value, out: &mut Mapping) {
    match value {
        Value::Object(map) => {
            for (k, v) in map {
                flatten_into(&format!("{prefix}/{k}"), v, out);
            }
        }
        leaf => {
            out.insert(prefix.to_string(), leaf.clone());
        }
    }
}

/// Flattens a whole module document under [`PREFIX`].
pub fn flatten(document: &Value) -> Mapping {
    let mut out = Mapping::new();
    flatten_into(PREFIX, document, &mut out);
    out
}

/// Rebuilds the nested document from a flat mapping (the inverse of [`flatten`]), without the
/// `raptiformica` root.
///
/// Fails when one key is both a leaf and the parent of another key (`a/b` and `a/b/c`), which
/// a nested document cannot express.
pub fn unflatten(mapping: &Mapping) -> Result<Value, String> {
    let mut root = serde_json::Map::new();
    for (key, value) in mapping {
        let rest = key
            .strip_prefix(PREFIX)
            .and_then(|r| r.strip_prefix('/'))
            .ok_or_else(|| format!("key `{key}` does not start with `{PREFIX}/`"))?;
        let parts: Vec<&str> = rest.split('/').collect();
        let mut node = &mut root;
        for part in &parts[..parts.len() - 1] {
            let entry = node
                .entry(part.to_string())
                .or_insert_with(|| Value::Object(Default::default()));
            node = entry
                .as_object_mut()
                .ok_or_else(|| format!("key `{key}` lies below the leaf `{part}`"))?;
        }
        let last = parts[parts.len() - 1];
        if node.contains_key(last) {
            return Err(format!("key `{key}` is both a value and a section"));
        }
        node.insert(last.to_string(), value.clone());
    }
    Ok(Value::Object(root))
}

/// Normalizes a key typed by a user: `compute/docker` becomes `raptiformica/compute/docker`,
/// trailing slashes go. Empty segments are refused.
pub fn normalize_key(key: &str) -> Result<String, String> {
    // Slashes at the ends are a path's decoration; blanks are not trimmed but refused (a key
    // with a blank is another key, or a typo).
    let trimmed = key.trim_matches('/');
    if trimmed.trim().is_empty() {
        return Err("the key is empty".into());
    }
    let full = if trimmed == PREFIX || trimmed.starts_with(&format!("{PREFIX}/")) {
        trimmed.to_string()
    } else {
        format!("{PREFIX}/{trimmed}")
    };
    if full.split('/').any(str::is_empty) {
        return Err(format!("the key `{key}` has an empty segment (`//`)"));
    }
    check_key(&full)?;
    Ok(full)
}

/// What `config` prints instead of a secret.
pub const MASK: &str = "<secret>";

/// Whether `key` holds a secret (the gossip key, tokens): its last segment is `password`,
/// `token`, `secret` or `private_key`, or ends in `_password`, `_token` or `_secret`.
pub fn is_secret(key: &str) -> bool {
    let last = key.rsplit('/').next().unwrap_or(key);
    matches!(last, "password" | "token" | "secret" | "private_key")
        || ["_password", "_token", "_secret"].iter().any(|s| last.ends_with(s))
}

/// The value to show for `key`: masked when it is a secret, unless `show` is set.
pub fn shown<'a>(key: &str, value: &'a Value, show: bool) -> std::borrow::Cow<'a, Value> {
    if !show && is_secret(key) {
        std::borrow::Cow::Owned(Value::String(MASK.into()))
    } else {
        std::borrow::Cow::Borrowed(value)
    }
}

/// The one rule for keys, wherever they come from (the command line, module files, consul's
/// KV): `/`-separated segments, none empty, none `.` or `..`, no whitespace or control
/// characters. Such keys are refused: consul would store them, but a URL drops `.` and `..`
/// segments (so `a/..` would act on its parent) and shells split on whitespace.
pub fn check_key(key: &str) -> Result<(), String> {
    for segment in key.split('/') {
        match segment {
            "" => return Err(format!("the key `{key}` has an empty segment")),
            "." | ".." => {
                return Err(format!(
                    "the key `{key}` has a `{segment}` segment; keys name paths literally"
                ));
            }
            s if s.chars().any(|c| c.is_whitespace() || c.is_control()) => {
                return Err(format!(
                    "the key `{}` has whitespace or a control character in segment `{}`",
                    key.escape_debug(),
                    s.escape_debug()
                ));
            }
            _ => {}
        }
    }
    Ok(())
}

/// Checks that a mapping is complete enough to be cached or shared: every key under the
/// prefix, and the `server`, `compute` and `platform` sections present.
pub fn validate(mapping: &Mapping) -> Result<(), String> {
    if let Some(bad) = mapping.keys().find(|k| !k.starts_with(&format!("{PREFIX}/"))) {
        return Err(format!("key `{bad}` does not start with `{PREFIX}/`"));
    }
    for key in mapping.keys() {
        check_key(key)?;
    }
    let missing: Vec<&str> = REQUIRED_SECTIONS
        .iter()
        .copied()
        .filter(|s| !has_section(mapping, s))
        .collect();
    if !missing.is_empty() {
        return Err(format!("it lacks the section(s) {}", missing.join(", ")));
    }
    Ok(())
}

fn has_section(mapping: &Mapping, section: &str) -> bool {
    let prefix = format!("{PREFIX}/{section}/");
    mapping
        .range(prefix.clone()..)
        .next()
        .is_some_and(|(k, _)| k.starts_with(&prefix))
}

/// The keys at or below `key` (`key` itself and `key/...`).
pub fn subtree<'a>(mapping: &'a Mapping, key: &'a str) -> impl Iterator<Item = (&'a String, &'a Value)> {
    let below = format!("{key}/");
    mapping
        .range(key.to_string()..)
        .take_while(move |(k, _)| k.as_str() == key || k.starts_with(&below))
}

/// A copy of the keys at or below `key`.
pub fn tree(mapping: &Mapping, key: &str) -> Mapping {
    subtree(mapping, key).map(|(k, v)| (k.clone(), v.clone())).collect()
}

/// Removes `key` and what lies below `key/` (never a sibling that merely starts with the same
/// letters).
pub fn remove_subtree(mapping: &mut Mapping, key: &str) {
    let below = format!("{key}/");
    mapping.retain(|k, _| k != key && !k.starts_with(&below));
}

/// Refuses to set `key` when it would clash with the tree shape: it must not be the parent of
/// existing keys, nor lie below an existing leaf.
pub fn check_settable(mapping: &Mapping, key: &str) -> Result<(), String> {
    let below = format!("{key}/");
    if let Some((child, _)) = mapping.range(below.clone()..).next()
        && child.starts_with(&below)
    {
        return Err(format!("`{key}` is a section (it holds `{child}`); set a key below it"));
    }
    let mut parent = key;
    while let Some((p, _)) = parent.rsplit_once('/') {
        if mapping.contains_key(p) {
            return Err(format!("`{p}` is a value, so `{key}` cannot lie below it"));
        }
        parent = p;
    }
    Ok(())
}

/// Renders a leaf for humans: strings bare, everything else as JSON.
pub fn display_value(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// The names of the sections directly below `prefix` (which ends with `/`), sorted, once each.
pub fn children<'a>(mapping: &'a Mapping, prefix: &str) -> Vec<&'a str> {
    let mut names: Vec<&str> = mapping
        .range(prefix.to_string()..)
        .map_while(|(k, _)| k.strip_prefix(prefix))
        .filter_map(|rest| rest.split('/').next())
        .collect();
    names.dedup();
    names
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn secrets_are_masked_unless_asked_for() {
        assert!(is_secret("raptiformica/meshnet/consul/password"));
        assert!(is_secret("raptiformica/meshnet/consul/acl/management_token"));
        assert!(!is_secret("raptiformica/meshnet/consul/servers"));
        let v = json!("k3y");
        assert_eq!(*shown("raptiformica/meshnet/consul/password", &v, false), json!(MASK));
        assert_eq!(*shown("raptiformica/meshnet/consul/password", &v, true), v);
        assert_eq!(*shown("raptiformica/x", &v, false), v);
    }

    #[test]
    fn keys_with_dot_segments_blanks_or_control_characters_are_refused() {
        for bad in [
            "..",
            "a/..",
            "./a",
            "a/./b",
            "a b",
            "a/\tb",
            "a/b\u{7}x",
            "a/\u{7f}",
            " a/b",
            "a/b ",
            "\ta",
        ] {
            let err = normalize_key(bad).unwrap_err();
            assert!(err.contains("segment") || err.contains("whitespace"), "{bad}: {err}");
        }
        for good in ["a.b", "a/.hidden", "1.2.3.4/x", "a-b_c~d"] {
            assert!(normalize_key(good).is_ok(), "{good}");
        }
        let mut m = flatten(&json!({"server": {"s": 1}, "compute": {"c": 1}, "platform": {"p": 1}}));
        assert!(validate(&m).is_ok());
        m.insert("raptiformica/x/..".into(), json!(1));
        assert!(validate(&m).unwrap_err().contains(".."));
    }

    #[test]
    fn flatten_joins_paths_and_keeps_leaf_types() {
        let doc = json!({"raptiformica_api_version": "0.1",
            "compute": {"docker": {"headless": {"get_port": "echo 22", "n": 3, "on": true, "l": [1]}}},
            "empty": {}});
        let m = flatten(&doc);
        assert_eq!(m["raptiformica/raptiformica_api_version"], json!("0.1"));
        assert_eq!(m["raptiformica/compute/docker/headless/get_port"], json!("echo 22"));
        assert_eq!(m["raptiformica/compute/docker/headless/n"], json!(3));
        assert_eq!(m["raptiformica/compute/docker/headless/on"], json!(true));
        assert_eq!(m["raptiformica/compute/docker/headless/l"], json!([1]));
        assert!(!m.keys().any(|k| k.contains("empty")));
    }

    #[test]
    fn unflatten_inverts_flatten() {
        let doc = json!({"server": {"a": {"bootstrap": "x"}}, "compute": {"c": {"s": {"k": 1}}}});
        assert_eq!(unflatten(&flatten(&doc)).unwrap(), doc);
    }

    #[test]
    fn unflatten_refuses_leaf_and_section_at_once() {
        let mut m = Mapping::new();
        m.insert("raptiformica/a".into(), json!(1));
        m.insert("raptiformica/a/b".into(), json!(2));
        assert!(unflatten(&m).is_err());
    }

    #[test]
    fn normalize_adds_prefix_and_refuses_empty_segments() {
        assert_eq!(normalize_key("compute/x/").unwrap(), "raptiformica/compute/x");
        assert_eq!(normalize_key("raptiformica/a").unwrap(), "raptiformica/a");
        assert!(normalize_key("a//b").is_err());
        assert!(normalize_key("  ").is_err());
    }

    #[test]
    fn validate_wants_all_three_sections() {
        let mut m = flatten(&json!({"server": {"a": {"bootstrap": "x"}}, "compute": {"c": {"s": {"k": 1}}}}));
        assert!(validate(&m).unwrap_err().contains("platform"));
        m.insert("raptiformica/platform/default/hooks/h/x/command".into(), json!("true"));
        validate(&m).unwrap();
        m.insert("other/key".into(), json!(1));
        assert!(validate(&m).is_err());
    }

    #[test]
    fn check_settable_guards_tree_shape() {
        let m = flatten(&json!({"a": {"b": "leaf"}}));
        assert!(check_settable(&m, "raptiformica/a").is_err());
        assert!(check_settable(&m, "raptiformica/a/b/c").is_err());
        check_settable(&m, "raptiformica/a/b").unwrap();
        check_settable(&m, "raptiformica/a/c").unwrap();
    }

    #[test]
    fn subtree_stops_at_siblings_with_common_prefix() {
        let m = flatten(&json!({"a": {"b": 1, "bc": 2}, "ab": 3}));
        let keys: Vec<_> = subtree(&m, "raptiformica/a/b").map(|(k, _)| k.clone()).collect();
        assert_eq!(keys, vec!["raptiformica/a/b"]);
    }
}
