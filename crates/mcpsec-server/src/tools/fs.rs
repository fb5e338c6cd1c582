//! The file tools' execute steps: each parses its arguments and acts
//! through the call's sandbox (confined to the token's paths).

use base64::Engine as _;
use mcpsec_core::Capability;
use mcpsec_core::time::rfc3339;
use mcpsec_pathguard::{EntryKind, Sandbox};
use rmcp::model::{CallToolResult, ContentBlock, JsonObject, ResourceContents};
use serde::Deserialize;

use crate::error::ToolError;
use crate::tools::args::{parse, text_result, to_text};
use crate::tools::call::Call;
use crate::tools::edit;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PathArgs {
    path: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ReadArgs {
    path: String,
    head: Option<f64>,
    tail: Option<f64>,
}

fn line_count(tool: &'static str, name: &str, n: f64) -> Result<usize, ToolError> {
    if n.is_finite() && n >= 0.0 && n.fract() == 0.0 && n <= 1e12 {
        Ok(n as usize)
    } else {
        Err(ToolError::Invalid { tool, message: format!("`{name}` must be a whole number of lines, not {n}") })
    }
}

pub(super) fn read_text_file(call: &Call, args: JsonObject) -> Result<CallToolResult, ToolError> {
    let tool = call.tool();
    let sb = &call.sandbox;
    let a: ReadArgs = parse(tool, args)?;
    let bytes = match (a.head, a.tail) {
        (Some(_), Some(_)) => {
            return Err(ToolError::Invalid { tool, message: "cannot specify both head and tail".into() });
        }
        (Some(h), None) => sb.read_head(&a.path, line_count(tool, "head", h)?)?,
        (None, Some(t)) => sb.read_tail(&a.path, line_count(tool, "tail", t)?)?,
        (None, None) => sb.read(&a.path)?,
    };
    Ok(text_result(to_text(bytes)))
}

fn mime_of(path: &str) -> &'static str {
    let ext = path.rsplit_once('.').map(|(_, e)| e.to_ascii_lowercase()).unwrap_or_default();
    match ext.as_str() {
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "gif" => "image/gif",
        "webp" => "image/webp",
        "bmp" => "image/bmp",
        "svg" => "image/svg+xml",
        "mp3" => "audio/mpeg",
        "wav" => "audio/wav",
        "ogg" => "audio/ogg",
        "flac" => "audio/flac",
        _ => "application/octet-stream",
    }
}

pub(super) fn read_media_file(call: &Call, args: JsonObject) -> Result<CallToolResult, ToolError> {
    let tool = call.tool();
    let sb = &call.sandbox;
    let a: PathArgs = parse(tool, args)?;
    let data = base64::engine::general_purpose::STANDARD.encode(sb.read(&a.path)?);
    let mime = mime_of(&a.path);
    let block = if mime.starts_with("image/") {
        ContentBlock::image(data, mime)
    } else if mime.starts_with("audio/") {
        ContentBlock::audio(data, mime)
    } else {
        let uri = format!("file://{}", sb.display_path(&a.path)?.display());
        ContentBlock::resource(ResourceContents::BlobResourceContents {
            uri,
            mime_type: Some(mime.to_owned()),
            blob: data,
            meta: None,
        })
    };
    Ok(CallToolResult::success(vec![block]))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MultiArgs {
    paths: Vec<String>,
}

pub(super) fn read_multiple_files(call: &Call, args: JsonObject) -> Result<CallToolResult, ToolError> {
    let tool = call.tool();
    let sb = &call.sandbox;
    let a: MultiArgs = parse(tool, args)?;
    if a.paths.is_empty() {
        return Err(ToolError::Invalid { tool, message: "`paths` must name at least one file".into() });
    }
    let parts: Vec<String> = a
        .paths
        .iter()
        .map(|p| match sb.read(p) {
            Ok(bytes) => format!("{p}:\n{}\n", to_text(bytes)),
            Err(e) => format!("{p}: Error - {e}"),
        })
        .collect();
    Ok(text_result(parts.join("\n---\n")))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WriteArgs {
    path: String,
    content: String,
}

pub(super) fn write_file(call: &Call, args: JsonObject) -> Result<CallToolResult, ToolError> {
    let tool = call.tool();
    let a: WriteArgs = parse(tool, args)?;
    call.write(&a.path, a.content.as_bytes())?;
    Ok(text_result(format!("Successfully wrote to {}", a.path)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct EditArgs {
    path: String,
    edits: Vec<edit::Edit>,
    #[serde(default)]
    dry_run: bool,
}

pub(super) fn edit_file(call: &Call, args: JsonObject) -> Result<CallToolResult, ToolError> {
    let tool = call.tool();
    let sb = &call.sandbox;
    let a: EditArgs = parse(tool, args)?;
    let original = to_text(sb.read(&a.path)?);
    let (modified, diff) = edit::apply(&original, &a.edits, &a.path).map_err(ToolError::Failed)?;
    if !a.dry_run {
        call.write(&a.path, modified.as_bytes())?;
    }
    Ok(text_result(diff))
}

pub(super) fn create_directory(call: &Call, args: JsonObject) -> Result<CallToolResult, ToolError> {
    let tool = call.tool();
    let sb = &call.sandbox;
    let a: PathArgs = parse(tool, args)?;
    sb.create_dir_all(&a.path)?;
    Ok(text_result(format!("Successfully created directory {}", a.path)))
}

fn sorted_entries(sb: &Sandbox, path: &str) -> Result<Vec<mcpsec_pathguard::Entry>, ToolError> {
    let mut entries = sb.list(path)?;
    entries.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(entries)
}

fn tag(kind: EntryKind) -> &'static str {
    if kind == EntryKind::Dir { "[DIR]" } else { "[FILE]" }
}

pub(super) fn list_directory(call: &Call, args: JsonObject) -> Result<CallToolResult, ToolError> {
    let tool = call.tool();
    let sb = &call.sandbox;
    let a: PathArgs = parse(tool, args)?;
    let lines: Vec<String> =
        sorted_entries(sb, &a.path)?.iter().map(|e| format!("{} {}", tag(e.kind), e.name)).collect();
    Ok(text_result(lines.join("\n")))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct SizesArgs {
    path: String,
    #[serde(default)]
    sort_by: SortBy,
}

#[derive(Deserialize, Default, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
enum SortBy {
    #[default]
    Name,
    Size,
}

/// Sizes the way the reference server prints them (`1.50 KB`).
fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KB", "MB", "GB", "TB"];
    if bytes == 0 {
        return "0 B".into();
    }
    let i = ((bytes as f64).ln() / 1024f64.ln()).floor() as usize;
    let i = i.min(UNITS.len() - 1);
    if i == 0 {
        return format!("{bytes} B");
    }
    format!("{:.2} {}", bytes as f64 / 1024f64.powi(i as i32), UNITS[i])
}

pub(super) fn list_directory_with_sizes(call: &Call, args: JsonObject) -> Result<CallToolResult, ToolError> {
    let tool = call.tool();
    let sb = &call.sandbox;
    let a: SizesArgs = parse(tool, args)?;
    let mut entries = sorted_entries(sb, &a.path)?;
    if a.sort_by == SortBy::Size {
        entries.sort_by_key(|e| std::cmp::Reverse(e.size));
    }
    let mut lines: Vec<String> = entries
        .iter()
        .map(|e| {
            // A symlink has no size of its own worth showing (see `Entry::size`).
            let size = match e.size {
                Some(size) if e.kind != EntryKind::Dir => human_size(size),
                _ => String::new(),
            };
            format!("{} {:<30} {:>10}", tag(e.kind), e.name, size)
        })
        .collect();
    let files = entries.iter().filter(|e| e.kind != EntryKind::Dir).count();
    let dirs = entries.len() - files;
    let total: u64 = entries.iter().filter(|e| e.kind != EntryKind::Dir).filter_map(|e| e.size).sum();
    lines.push(String::new());
    lines.push(format!("Total: {files} files, {dirs} directories"));
    lines.push(format!("Combined size: {}", human_size(total)));
    Ok(text_result(lines.join("\n")))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct TreeArgs {
    path: String,
    #[serde(default)]
    exclude_patterns: Vec<String>,
}

fn glob_set(tool: &'static str, patterns: &[String], name_only_too: bool) -> Result<globset::GlobSet, ToolError> {
    let mut builder = globset::GlobSetBuilder::new();
    for p in patterns {
        let mut add = |g: &str| -> Result<(), ToolError> {
            let glob = mcpsec_pathguard::compile_glob(g)
                .map_err(|e| ToolError::Invalid { tool, message: format!("`{p}` is not a valid glob: {e}") })?;
            builder.add(glob);
            Ok(())
        };
        add(p)?;
        // Like the reference: a pattern without `*` also matches that name
        // anywhere, and everything below such a directory.
        if name_only_too && !p.contains('*') {
            add(&format!("**/{p}"))?;
            add(&format!("**/{p}/**"))?;
        }
    }
    builder.build().map_err(|e| ToolError::Invalid { tool, message: e.to_string() })
}

#[derive(serde::Serialize)]
struct Node {
    name: String,
    #[serde(rename = "type")]
    kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    children: Option<Vec<Node>>,
}

pub(super) fn directory_tree(call: &Call, args: JsonObject) -> Result<CallToolResult, ToolError> {
    let tool = call.tool();
    let sb = &call.sandbox;
    let a: TreeArgs = parse(tool, args)?;
    let exclude = glob_set(tool, &a.exclude_patterns, true)?;
    // `levels[d]` collects the children of the directory open at depth d.
    let mut levels: Vec<Vec<Node>> = vec![Vec::new()];
    sb.walk(&a.path, |e| {
        if exclude.is_match(e.rel) {
            return false;
        }
        while levels.len() > e.depth {
            close_level(&mut levels);
        }
        let is_dir = e.kind == EntryKind::Dir;
        levels[e.depth - 1].push(Node {
            name: e.name.to_owned(),
            kind: if is_dir { "directory" } else { "file" },
            children: is_dir.then(Vec::new),
        });
        if is_dir {
            levels.push(Vec::new());
        }
        true
    })?;
    while levels.len() > 1 {
        close_level(&mut levels);
    }
    let tree = levels.pop().unwrap_or_default();
    let text = serde_json::to_string_pretty(&tree).map_err(|e| ToolError::Failed(e.to_string()))?;
    Ok(text_result(text))
}

/// Moves the innermost level's nodes into the last directory node of the
/// level above.
fn close_level(levels: &mut Vec<Vec<Node>>) {
    if let Some(done) = levels.pop()
        && let Some(parent) = levels.last_mut().and_then(|l| l.last_mut())
    {
        parent.children = Some(done);
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MoveArgs {
    source: String,
    destination: String,
}

pub(super) fn move_file(call: &Call, args: JsonObject) -> Result<CallToolResult, ToolError> {
    let tool = call.tool();
    let sb = &call.sandbox;
    let a: MoveArgs = parse(tool, args)?;
    match call.undo_for(Capability::WriteFiles) {
        Some(undo) => undo.moved(call, &a.source, &a.destination)?,
        None => sb.rename(&a.source, &a.destination)?,
    }
    Ok(text_result(format!("Successfully moved {} to {}", a.source, a.destination)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct SearchArgs {
    path: String,
    pattern: String,
    #[serde(default)]
    exclude_patterns: Vec<String>,
}

pub(super) fn search_files(call: &Call, args: JsonObject) -> Result<CallToolResult, ToolError> {
    let tool = call.tool();
    let sb = &call.sandbox;
    let a: SearchArgs = parse(tool, args)?;
    let pattern = glob_set(tool, std::slice::from_ref(&a.pattern), false)?;
    let exclude = glob_set(tool, &a.exclude_patterns, false)?;
    let base = sb.display_path(&a.path)?;
    let mut hits = Vec::new();
    sb.walk(&a.path, |e| {
        if exclude.is_match(e.rel) {
            return false;
        }
        if pattern.is_match(e.rel) {
            hits.push(base.join(e.rel).display().to_string());
        }
        true
    })?;
    let text = if hits.is_empty() { "No matches found".to_owned() } else { hits.join("\n") };
    Ok(text_result(text))
}

pub(super) fn get_file_info(call: &Call, args: JsonObject) -> Result<CallToolResult, ToolError> {
    let tool = call.tool();
    let sb = &call.sandbox;
    let a: PathArgs = parse(tool, args)?;
    let info = sb.info(&a.path)?;
    let time = |t: Option<std::time::SystemTime>| t.map(rfc3339).unwrap_or_else(|| "unknown".into());
    let text = format!(
        "size: {}\ncreated: {}\nmodified: {}\naccessed: {}\nisDirectory: {}\nisFile: {}\npermissions: {:03o}",
        info.size,
        time(info.created),
        time(info.modified),
        time(info.accessed),
        info.is_dir,
        info.is_file,
        info.mode & 0o777
    );
    Ok(text_result(text))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NoArgs {}

pub(super) fn list_allowed_directories(call: &Call, args: JsonObject) -> Result<CallToolResult, ToolError> {
    let tool = call.tool();
    let sb = &call.sandbox;
    let NoArgs {} = parse(tool, args)?;
    let roots: Vec<String> = sb.roots().map(|r| r.display().to_string()).collect();
    Ok(text_result(format!("Allowed directories:\n{}", roots.join("\n"))))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DeleteArgs {
    path: String,
    #[serde(default)]
    recursive: bool,
}

pub(super) fn delete_file(call: &Call, args: JsonObject) -> Result<CallToolResult, ToolError> {
    let tool = call.tool();
    let sb = &call.sandbox;
    let a: DeleteArgs = parse(tool, args)?;
    match call.undo_for(Capability::DeleteFiles) {
        Some(undo) => undo.delete(call, &a.path, a.recursive)?,
        None => sb.remove(&a.path, a.recursive)?,
    }
    Ok(text_result(format!("Successfully deleted {}", a.path)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_sizes_match_the_reference() {
        assert_eq!(human_size(0), "0 B");
        assert_eq!(human_size(1000), "1000 B");
        assert_eq!(human_size(4096), "4.00 KB");
        assert_eq!(human_size(1536 * 1024), "1.50 MB");
    }

    #[test]
    fn media_types() {
        assert_eq!(mime_of("a/b.PNG"), "image/png");
        assert_eq!(mime_of("x.flac"), "audio/flac");
        assert_eq!(mime_of("x"), "application/octet-stream");
    }
}
