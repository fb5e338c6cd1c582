"""Interop: the official MCP Python SDK (pinned in requirements.txt) against `mcpsec serve` over stdio and HTTP.

Usage: python_sdk.py /path/to/mcpsec

Runs the same scripted session on both protocol generations: the SDK's default
`mode="auto"` (probes `server/discover`, so 2026-07-28 against mcpsec) and
`mode="legacy"` (the `initialize` handshake, 2025-11-25). Each session lists the
tools with their annotations, reads a file, has an escape refused, a delete
refused for want of a token, the same delete granted with a token minted by
`mcpsec grant`, and a write confirmed and one declined through the client's
elicitation callback. Then, over streamable HTTP (`serve --http`, a user's
key): a request without a key refused, the tools, a read, an escape, a token
refusal, a delete with a token granted to that user, and a write confirmed and
one declined through the elicitation callback. Prints one line per check and a closing
`N passed, M failed`; exits 1 when anything failed.
"""

import asyncio
import importlib.metadata
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import httpx2
import mcp
from mcp import Client, StdioServerParameters
from mcp.client.streamable_http import streamable_http_client

SECRET = "TOP-SECRET-OUTSIDE-CONTENT"
RESULTS: list[tuple[bool, str]] = []


def ambient() -> dict[str, str]:
    """This process's environment without MCPSEC_CONFIG: a config file set where the
    interop sessions run must not change what they test."""
    return {k: v for k, v in os.environ.items() if k != "MCPSEC_CONFIG"}


def check(ok: bool, what: str, detail: str = "") -> None:
    RESULTS.append((ok, what))
    print(f"{'ok  ' if ok else 'FAIL'} {what}{'' if ok else ': ' + detail}", flush=True)


def text_of(result) -> str:
    return "\n".join(getattr(c, "text", "") for c in result.content)


class Workspace:
    """A root with a file in it, a sentinel outside it, a private state directory."""

    def __init__(self, mcpsec: str):
        self.tmp = tempfile.TemporaryDirectory(prefix="mcpsec-interop-")
        self.dir = Path(self.tmp.name)
        self.mcpsec = mcpsec
        (self.dir / "ws").mkdir()
        (self.dir / "outside").mkdir()
        (self.dir / "state").mkdir(mode=0o700)
        (self.dir / "ws" / "hello.txt").write_text("hello from the workspace\n")
        (self.dir / "outside" / "secret.txt").write_text(SECRET)
        self.env = {
            "MCPSEC_STATE_DIR": str(self.dir / "state"),
            "XDG_CONFIG_HOME": str(self.dir / "no-config"),
            "RUST_LOG": "warn",
        }

    def params(self) -> StdioServerParameters:
        return StdioServerParameters(
            command=self.mcpsec, args=["serve", "--root", str(self.dir / "ws")], env=self.env, cwd=str(self.dir)
        )

    def grant(self, *args: str) -> str:
        out = subprocess.run(
            [self.mcpsec, "grant", *args],
            env={**ambient(), **self.env},
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            check=True,
        )
        return out.stdout.strip()


def human(action: str):
    async def answer(context, params):
        return mcp.types.ElicitResult(action=action, content={} if action == "accept" else None)

    return answer


async def read_and_escape(client, tag):
    """A read inside the root works; an escape is refused without leaking."""
    r = await client.call_tool("read_text_file", {"path": "hello.txt"})
    check(not r.is_error and "hello from the workspace" in text_of(r), f"{tag} read_text_file reads", text_of(r))
    r = await client.call_tool("read_text_file", {"path": "../outside/secret.txt"})
    body = text_of(r)
    check(r.is_error and SECRET not in body and "outside" in body, f"{tag} an escape is refused", body)


async def session(ws: Workspace, mode: str) -> None:
    tag = f"[{mode}]"
    async with Client(ws.params(), mode=mode, elicitation_callback=human("accept")) as client:
        version = client.protocol_version
        expected = "2025-11-25" if mode == "legacy" else "2026-07-28"
        check(version == expected, f"{tag} negotiated protocol {version}", f"expected {expected}")

        tools = (await client.list_tools()).tools
        by_name = {t.name: t for t in tools}
        check(len(tools) == 15, f"{tag} tools/list: {len(tools)} tools", ", ".join(sorted(by_name)))
        read, delete = by_name.get("read_text_file"), by_name.get("delete_file")
        check(
            read is not None and read.annotations is not None and read.annotations.read_only_hint is True,
            f"{tag} read_text_file is annotated readOnlyHint",
            repr(read and read.annotations),
        )
        check(
            delete is not None and delete.annotations is not None and delete.annotations.destructive_hint is True,
            f"{tag} delete_file is annotated destructiveHint",
            repr(delete and delete.annotations),
        )

        await read_and_escape(client, tag)

        victim = ws.dir / "ws" / f"victim-{mode}.txt"
        victim.write_text("delete me")
        r = await client.call_tool("delete_file", {"path": victim.name})
        body = text_of(r)
        check(
            r.is_error and "mcpsec grant delete_files" in body and victim.exists(),
            f"{tag} delete without a token is refused with the grant command",
            body,
        )
        token = ws.grant("delete_files", "--ttl", "60", "--path", victim.name, "--uses", "1")
        r = await client.call_tool("delete_file", {"path": victim.name, "capability_token": token})
        check(not r.is_error and not victim.exists(), f"{tag} delete with a granted token", text_of(r))

        confirmed = ws.dir / "ws" / f"confirmed-{mode}.txt"
        r = await client.call_tool("write_file", {"path": confirmed.name, "content": "yes"})
        check(
            not r.is_error and confirmed.exists() and confirmed.read_text() == "yes",
            f"{tag} write confirmed by the human (elicitation accept)",
            text_of(r),
        )

    async with Client(ws.params(), mode=mode, elicitation_callback=human("decline")) as client:
        declined = ws.dir / "ws" / f"declined-{mode}.txt"
        r = await client.call_tool("write_file", {"path": declined.name, "content": "no"})
        check(
            r.is_error and not declined.exists(),
            f"{tag} write declined by the human (elicitation decline)",
            text_of(r),
        )


class HttpServer:
    """`mcpsec serve --http 127.0.0.1:0` on the workspace, with a user `alice`."""

    def __init__(self, ws: Workspace):
        self.ws = ws
        out = subprocess.run(
            [ws.mcpsec, "users", "add", "alice"],
            env={**ambient(), **ws.env},
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            check=True,
        )
        self.key = out.stdout.strip()
        self.proc = subprocess.Popen(
            [ws.mcpsec, "serve", "--root", str(ws.dir / "ws"), "--http", "127.0.0.1:0"],
            env={**ambient(), **ws.env, "RUST_LOG": "warn,mcpsec_server::http=info"},
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            cwd=str(ws.dir),
        )
        self.url = ""
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            if "listening on " in line:
                self.url = line.split("listening on ", 1)[1].strip()
                break
        if not self.url:
            raise RuntimeError("mcpsec serve --http exited before listening")

    def transport(self, key: str | None, statuses: list[int] | None = None):
        """The SDK's transport with `key`; the HTTP status of every response goes into `statuses`."""
        headers = {"Authorization": f"Bearer {key}"} if key else {}

        async def record(response) -> None:
            if statuses is not None:
                statuses.append(response.status_code)

        client = httpx2.AsyncClient(headers=headers, timeout=30, event_hooks={"response": [record]})
        return streamable_http_client(self.url, http_client=client)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=30)


async def http_session(ws: Workspace, server: HttpServer, mode: str) -> None:
    """The same checks over streamable HTTP with a user's key, and a confirmation accepted and one declined."""
    tag = f"[http {mode}]"
    # The SDK raises when the server refuses it, but so it would for any
    # other failure: what the server answered is what is checked.
    statuses: list[int] = []
    error = None
    try:
        async with Client(server.transport(None, statuses), mode=mode) as client:
            await client.list_tools()
    except Exception as e:
        error = e
    check(
        error is not None and 401 in statuses and all(s == 401 for s in statuses),
        f"{tag} the SDK without a key gets 401 and no session",
        f"HTTP statuses {statuses}, error {type(error).__name__}: {error}",
    )
    initialize = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "initialize",
        "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "raw", "version": "1"}},
    }
    async with httpx2.AsyncClient(timeout=30) as raw:
        resp = await raw.post(server.url, json=initialize, headers={"accept": "application/json, text/event-stream"})
    check(
        resp.status_code == 401 and "Bearer" in resp.headers.get("www-authenticate", ""),
        f"{tag} a request without a key is 401 with WWW-Authenticate",
        f"{resp.status_code} {dict(resp.headers)}",
    )
    async with Client(server.transport(server.key), mode=mode) as client:
        expected = "2025-11-25" if mode == "legacy" else "2026-07-28"
        check(client.protocol_version == expected, f"{tag} negotiated protocol {client.protocol_version}", expected)
        tools = (await client.list_tools()).tools
        read = next((t for t in tools if t.name == "read_text_file"), None)
        check(
            read is not None and read.annotations is not None and read.annotations.read_only_hint is True,
            f"{tag} tools/list with annotations ({len(tools)} tools)",
            repr(read),
        )
        await read_and_escape(client, tag)
        victim = ws.dir / "ws" / f"http-victim-{mode}.txt"
        victim.write_text("delete me")
        r = await client.call_tool("delete_file", {"path": victim.name})
        check(r.is_error and victim.exists(), f"{tag} delete without a token is refused", text_of(r))
        token = ws.grant("delete_files", "--ttl", "60", "--path", victim.name, "--uses", "1", "--user", "alice")
        r = await client.call_tool("delete_file", {"path": victim.name, "capability_token": token})
        check(not r.is_error and not victim.exists(), f"{tag} delete with a token granted to the user", text_of(r))
    for action in ("accept", "decline"):
        async with Client(server.transport(server.key), mode=mode, elicitation_callback=human(action)) as client:
            target = ws.dir / "ws" / f"http-{action}-{mode}.txt"
            r = await client.call_tool("write_file", {"path": target.name, "content": "yes"})
            done = not r.is_error and target.exists()
            verb = "accepted" if action == "accept" else "declined"
            check(done == (action == "accept"), f"{tag} write {verb} by the human (elicitation)", text_of(r))


async def main() -> int:
    if len(sys.argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    mcpsec = str(Path(sys.argv[1]).resolve())
    ws = Workspace(mcpsec)
    print(f"MCP Python SDK {importlib.metadata.version('mcp')}", flush=True)
    for mode in ("auto", "legacy"):
        try:
            await session(ws, mode)
        except Exception as e:  # a crashed session is a failed check, not a traceback
            check(False, f"[{mode}] session", f"{type(e).__name__}: {e}")
    server = None
    try:
        server = HttpServer(ws)
        for mode in ("auto", "legacy"):
            try:
                await http_session(ws, server, mode)
            except Exception as e:
                check(False, f"[http {mode}] session", f"{type(e).__name__}: {e}")
    except Exception as e:
        check(False, "[http] server", f"{type(e).__name__}: {e}")
    finally:
        if server is not None:
            server.stop()
    passed = sum(1 for ok, _ in RESULTS if ok)
    failed = len(RESULTS) - passed
    print(f"python-sdk: {passed} passed, {failed} failed", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
