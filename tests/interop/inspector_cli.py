"""Interop: the MCP Inspector in CLI mode (pinned in xtask/src/interop.rs) against `mcpsec serve` over stdio.

Usage: inspector_cli.py /path/to/mcpsec /path/to/mcp-inspector

Each check is one `mcp-inspector --cli … --method …` run (a fresh server per
call, as the Inspector CLI works): list tools with annotations, read a file,
an escape refused, a delete refused for want of a token, the delete granted
with a token from `mcpsec grant`, and a write that, as the Inspector cannot
confirm (no elicitation), gets the token instructions. Prints one line per
check and a closing `N passed, M failed`; exits 1 when anything failed.
"""

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

SECRET = "TOP-SECRET-OUTSIDE-CONTENT"
RESULTS: list[bool] = []


def check(ok: bool, what: str, detail: str = "") -> None:
    RESULTS.append(ok)
    print(f"{'ok  ' if ok else 'FAIL'} [inspector] {what}{'' if ok else ': ' + detail[:2000]}", flush=True)


def main() -> int:
    if len(sys.argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    mcpsec, inspector = (str(Path(p).resolve()) for p in sys.argv[1:])
    tmp = tempfile.TemporaryDirectory(prefix="mcpsec-inspector-")
    d = Path(tmp.name)
    (d / "ws").mkdir()
    (d / "outside").mkdir()
    (d / "state").mkdir(mode=0o700)
    (d / "ws" / "hello.txt").write_text("hello from the workspace\n")
    (d / "outside" / "secret.txt").write_text(SECRET)
    # Without MCPSEC_CONFIG: a config file set where this runs must not change what it tests.
    ambient = {k: v for k, v in os.environ.items() if k != "MCPSEC_CONFIG"}
    env = {**ambient, "MCPSEC_STATE_DIR": str(d / "state"), "XDG_CONFIG_HOME": str(d / "no-config"), "RUST_LOG": "warn"}

    def inspect(*method_args: str):
        cmd = [inspector, "--cli", mcpsec, "serve", "--root", str(d / "ws"), *method_args]
        out = subprocess.run(cmd, env=env, cwd=d, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=120)
        try:
            return json.loads(out.stdout), out.stdout + out.stderr
        except json.JSONDecodeError:
            return None, out.stdout + out.stderr

    def call(tool: str, **args: str):
        flags = [f"{k}={v}" for k, v in args.items()]
        return inspect("--method", "tools/call", "--tool-name", tool, *(["--tool-arg", *flags] if flags else []))

    def text(result) -> str:
        return "\n".join(c.get("text", "") for c in (result or {}).get("content", []))

    listed, raw = inspect("--method", "tools/list")
    tools = {t["name"]: t for t in (listed or {}).get("tools", [])}
    check(len(tools) == 15, f"tools/list: {len(tools)} tools", raw)
    ann = lambda name, key: tools.get(name, {}).get("annotations", {}).get(key)  # noqa: E731
    check(ann("read_text_file", "readOnlyHint") is True, "read_text_file is annotated readOnlyHint", raw)
    check(ann("delete_file", "destructiveHint") is True, "delete_file is annotated destructiveHint", raw)

    r, raw = call("read_text_file", path="hello.txt")
    check(r is not None and not r.get("isError") and "hello from the workspace" in text(r), "read_text_file reads", raw)

    r, raw = call("read_text_file", path="../outside/secret.txt")
    check(r is not None and r.get("isError") is True and SECRET not in raw, "an escape is refused", raw)

    (d / "ws" / "victim.txt").write_text("delete me")
    r, raw = call("delete_file", path="victim.txt")
    check(
        r is not None and r.get("isError") is True and "mcpsec grant delete_files" in text(r),
        "delete without a token is refused with the grant command",
        raw,
    )
    grant = subprocess.run(
        [mcpsec, "grant", "delete_files", "--ttl", "60", "--path", "victim.txt", "--uses", "1"],
        env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True, check=True,
    )
    r, raw = call("delete_file", path="victim.txt", capability_token=grant.stdout.strip())
    check(r is not None and not r.get("isError") and not (d / "ws" / "victim.txt").exists(), "delete with a granted token", raw)

    r, raw = call("write_file", path="new.txt", content="x")
    check(
        r is not None and r.get("isError") is True and "mcpsec grant write_files" in text(r) and not (d / "ws" / "new.txt").exists(),
        "a write the client cannot confirm gets the token instructions",
        raw,
    )

    passed = sum(RESULTS)
    print(f"inspector-cli: {passed} passed, {len(RESULTS) - passed} failed", flush=True)
    return 0 if all(RESULTS) else 1


if __name__ == "__main__":
    sys.exit(main())
