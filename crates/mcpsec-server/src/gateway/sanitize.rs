//! What the upstream says, made safe to pass on: results scanned and
//! sanitised (binary payloads aside), tools' descriptions sanitised, names
//! checked.

use mcpsec_core::scan::sanitize;
use std::sync::Arc;

use rmcp::model::{CallToolResult, JsonObject, Tool};
use serde_json::Value;

/// An upstream's tool result with every string scanned (`seen` is called
/// with each, keys included) and then sanitised: text, an embedded
/// resource's text, links, `structuredContent` and every `_meta`, at any
/// depth and whatever the key is called.
///
/// Only binary payloads are left alone, known by their content block's type
/// (an `image` or `audio` block's `data`, an embedded resource's `blob`),
/// never by a key's name, and only while they are base64: what is not
/// base64 is not a binary payload and is treated as text.
///
/// `None` if the result could not be checked (it must not be passed on).
pub(crate) fn scan_and_sanitize_result(
    mut result: CallToolResult,
    seen: &mut dyn FnMut(&str),
) -> Option<CallToolResult> {
    let payloads = take_binary_payloads(&mut result);
    let mut v = serde_json::to_value(&result).ok()?;
    scan_and_sanitize(&mut v, seen);
    let mut result: CallToolResult = serde_json::from_value(v).ok()?;
    restore_binary_payloads(&mut result, payloads)?;
    Some(result)
}

/// The base64 binary payload of a content block, by the block's type.
pub(super) fn binary_payload(block: &mut rmcp::model::ContentBlock) -> Option<&mut String> {
    use rmcp::model::{ContentBlock, ResourceContents};
    let payload = match block {
        ContentBlock::Image(image) => &mut image.data,
        ContentBlock::Audio(audio) => &mut audio.data,
        ContentBlock::Resource(embedded) => match &mut embedded.resource {
            ResourceContents::BlobResourceContents { blob, .. } => blob,
            _ => return None,
        },
        _ => return None,
    };
    is_base64(payload).then_some(payload)
}

/// Whether `s` holds only the characters of base64 (RFC 4648, standard or
/// URL-safe alphabet, with padding): no space, control or non-ASCII
/// character, so nothing that could hide from a human or read as a phrase.
pub(super) fn is_base64(s: &str) -> bool {
    s.bytes().all(|b| b.is_ascii_alphanumeric() || b"+/=-_".contains(&b))
}

/// Takes every binary payload out of `result` (leaving it empty), with the
/// index of its block.
pub(super) fn take_binary_payloads(result: &mut CallToolResult) -> Vec<(usize, String)> {
    let blocks = result.content.iter_mut().enumerate();
    blocks.filter_map(|(i, block)| binary_payload(block).map(|p| (i, std::mem::take(p)))).collect()
}

/// Puts back what [`take_binary_payloads`] took. `None` if a block is no
/// longer where it was, or of another type (which sanitising never does).
pub(super) fn restore_binary_payloads(result: &mut CallToolResult, payloads: Vec<(usize, String)>) -> Option<()> {
    for (i, payload) in payloads {
        *binary_payload(result.content.get_mut(i)?)? = payload;
    }
    Some(())
}

/// Calls `seen` with every string of `v` (keys included), then sanitises
/// them in place.
pub(super) fn scan_and_sanitize(v: &mut Value, seen: &mut dyn FnMut(&str)) {
    match v {
        Value::String(s) => {
            seen(s);
            if let std::borrow::Cow::Owned(clean) = sanitize(s) {
                *s = clean;
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|i| scan_and_sanitize(i, seen)),
        Value::Object(map) => {
            for k in map.keys() {
                seen(k);
            }
            let dirty: Vec<String> = map.keys().filter(|k| sanitize(k).len() != k.len()).cloned().collect();
            for k in dirty {
                if let Some(value) = map.remove(&k) {
                    map.insert(sanitize(&k).into_owned(), value);
                }
            }
            map.values_mut().for_each(|item| scan_and_sanitize(item, seen));
        }
        _ => {}
    }
}

/// Every string in `v` sanitised (schemas carry descriptions too).
pub(crate) fn sanitize_value(v: &mut Value) {
    match v {
        Value::String(s) => {
            if let std::borrow::Cow::Owned(clean) = sanitize(s) {
                *s = clean;
            }
        }
        Value::Array(items) => items.iter_mut().for_each(sanitize_value),
        Value::Object(map) => {
            let dirty: Vec<String> = map.keys().filter(|k| sanitize(k).len() != k.len()).cloned().collect();
            for k in dirty {
                if let Some(value) = map.remove(&k) {
                    map.insert(sanitize(&k).into_owned(), value);
                }
            }
            map.values_mut().for_each(sanitize_value);
        }
        _ => {}
    }
}

/// A tool as the model is shown it: every string the upstream wrote
/// sanitised.
pub(super) fn sanitized(tool: &Tool) -> Tool {
    let mut v = serde_json::to_value(tool).unwrap_or(Value::Null);
    sanitize_value(&mut v);
    // The name is the upstream's key for calls: kept as is (sanitising it
    // would call a different tool); a name that needs sanitising is
    // refused by MCP clients anyway.
    match serde_json::from_value::<Tool>(v) {
        Ok(mut clean) => {
            clean.name = tool.name.clone();
            clean
        }
        Err(_) => Tool::new(tool.name.clone(), "", Arc::new(JsonObject::new())),
    }
}

/// Whether an upstream tool name may be offered: 1-128 of `[A-Za-z0-9_.-]`
/// (the MCP specification's recommendation).
pub(crate) fn valid_tool_name(name: &str) -> bool {
    (1..=128).contains(&name.len()) && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b))
}
