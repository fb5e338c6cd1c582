//! What every execute step shares: its arguments parsed, a text result.

use rmcp::model::{CallToolResult, ContentBlock, JsonObject};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::error::ToolError;

pub(crate) fn parse<T: for<'de> Deserialize<'de>>(tool: &'static str, args: JsonObject) -> Result<T, ToolError> {
    serde_json::from_value(Value::Object(args)).map_err(|e| ToolError::Invalid { tool, message: e.to_string() })
}

/// A successful result with text content mirrored in `structuredContent`.
pub(crate) fn text_result(text: String) -> CallToolResult {
    let mut result = CallToolResult::success(Vec::new());
    result.structured_content = Some(json!({ "content": text }));
    result.content = vec![ContentBlock::text(text)];
    result
}

pub(crate) fn to_text(bytes: Vec<u8>) -> String {
    match String::from_utf8(bytes) {
        Ok(s) => s,
        Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
    }
}
