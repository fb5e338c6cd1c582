//! The check of a call's arguments against the input schema its tool
//! declared, as pinned.

use rmcp::model::JsonObject;

use super::line_io::upstream_text;

/// The check of a call's arguments against the input schema the upstream
/// declared for the tool, exactly as pinned (not the sanitised copy
/// `tools/list` shows).
#[derive(Debug)]
pub(crate) enum ArgumentCheck {
    /// The compiled schema.
    Schema(jsonschema::Validator),
    /// The schema cannot be used (invalid, or it refers to a document
    /// elsewhere, which mcpsec does not fetch): the tool is not called.
    Unusable(String),
}

/// The most schema errors a refusal lists.
pub(super) const MAX_ARGUMENT_ERRORS: usize = 3;

/// How far a `pattern` with lookaround or backreferences (a backtracking
/// engine) may search before the value is refused; patterns without them
/// run on a linear-time engine.
pub(super) const PATTERN_BACKTRACK_LIMIT: usize = 100_000;

impl ArgumentCheck {
    /// Compiles `schema`. No reference outside it is followed: no file is
    /// read and no URL fetched on an upstream's say-so.
    pub(super) fn new(schema: &JsonObject) -> ArgumentCheck {
        let schema = serde_json::Value::Object(schema.clone());
        let options = jsonschema::options().with_pattern_options(
            jsonschema::PatternOptions::fancy_regex().backtrack_limit(PATTERN_BACKTRACK_LIMIT).size_limit(1 << 20),
        );
        match options.build(&schema) {
            Ok(v) => ArgumentCheck::Schema(v),
            Err(e) => ArgumentCheck::Unusable(upstream_text(&e.to_string())),
        }
    }

    /// Hands back `args` if they match the schema; else refuses them,
    /// saying where and why. The arguments are checked in place, not copied.
    pub(crate) fn check(&self, qualified: &str, args: JsonObject) -> Result<JsonObject, crate::error::ToolError> {
        let schema = match self {
            ArgumentCheck::Schema(v) => v,
            ArgumentCheck::Unusable(why) => {
                return Err(crate::error::ToolError::Refused(format!(
                    "refused: calling `{qualified}`: mcpsec cannot check its arguments against the input schema the \
                     upstream declared ({why}), so it does not call it. The upstream's author can fix the schema"
                )));
            }
        };
        let instance = serde_json::Value::Object(args);
        let mut errors = schema.iter_errors(&instance).peekable();
        if errors.peek().is_none() {
            drop(errors);
            let serde_json::Value::Object(args) = instance else { unreachable!("built as an object above") };
            return Ok(args);
        }
        let found: Vec<String> = errors
            .take(MAX_ARGUMENT_ERRORS)
            .map(|e| {
                let at = e.instance_path().to_string();
                let at = if at.is_empty() { "the arguments".to_owned() } else { format!("`{at}`") };
                format!("{at}: {}", upstream_text(&e.to_string()).chars().take(200).collect::<String>())
            })
            .collect();
        Err(crate::error::ToolError::Mismatch {
            tool: qualified.to_owned(),
            message: format!(
                "they do not match the input schema the upstream declared for it (and a human pinned): {}",
                found.join("; ")
            ),
        })
    }
}
