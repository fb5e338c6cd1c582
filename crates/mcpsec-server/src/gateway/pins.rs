//! What is pinned of a tool, and how it is hashed: its definition as the
//! client sees it, keys sorted.

use rmcp::model::Tool;
use serde_json::Value;

/// What is pinned of a tool: everything the client is shown of it, `_meta`
/// included (an MCP Apps host renders a UI from `_meta.ui.resourceUri`).
///
/// `_meta` is part of the definition only when it holds something, so the
/// definition of a tool without one (or with an empty one) is what it was
/// before `_meta` was pinned: those pins keep their hash. A tool that has a
/// `_meta` hashes differently than before, and is held once for a human's
/// approval.
pub(super) fn definition(tool: &Tool) -> Value {
    let mut v = serde_json::to_value(tool).unwrap_or(Value::Null);
    if let Value::Object(map) = &mut v
        && map.get("_meta").is_some_and(|m| m.as_object().is_some_and(serde_json::Map::is_empty))
    {
        map.remove("_meta");
    }
    v
}

/// `v` with every object's keys sorted (so the hash does not depend on the
/// upstream's key order).
pub(super) fn sorted(v: &Value) -> Value {
    match v {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            Value::Object(keys.into_iter().map(|k| (k.clone(), sorted(&map[k]))).collect())
        }
        Value::Array(items) => Value::Array(items.iter().map(sorted).collect()),
        other => other.clone(),
    }
}

/// Compact JSON with sorted keys.
pub(super) fn canonical(v: &Value) -> String {
    serde_json::to_string(&sorted(v)).unwrap_or_default()
}
