//! `execute_command`'s execute step: the program runner ([`shell`](crate::tools::shell)) behind it.

use rmcp::model::{CallToolResult, ContentBlock, JsonObject};

use crate::error::ToolError;
use crate::tools::args::parse;
use crate::tools::call::Call;

pub(super) fn execute_command(call: &Call, args: JsonObject) -> Result<CallToolResult, ToolError> {
    let tool = call.tool();
    let a: crate::tools::shell::ExecArgs = parse(tool, args)?;
    let Some(shell) = call.shell() else {
        return Err(ToolError::Refused(
            "refused: no program may run: [shell] allow is empty. The operator can list programs there".into(),
        ));
    };
    let out = shell.run(&call.sandbox, &a)?;
    let status = match (out.exit_code, out.signal, out.timed_out) {
        (_, _, true) => format!("killed after the {}s timeout", out.timeout_s),
        (Some(code), _, _) => format!("exit code {code}"),
        (None, Some(sig), _) => format!("killed by signal {sig}"),
        (None, None, _) => "ended".to_owned(),
    };
    let cut = |t: bool| if t { " (truncated)" } else { "" };
    let text = format!(
        "{status}\n--- stdout{} ---\n{}\n--- stderr{} ---\n{}",
        cut(out.stdout_truncated),
        out.stdout,
        cut(out.stderr_truncated),
        out.stderr
    );
    let structured = serde_json::to_value(&out).map_err(|e| ToolError::Failed(e.to_string()))?;
    let mut result = if out.exit_code == Some(0) {
        CallToolResult::success(vec![ContentBlock::text(text)])
    } else {
        CallToolResult::error(vec![ContentBlock::text(text)])
    };
    result.structured_content = Some(structured);
    Ok(result)
}
