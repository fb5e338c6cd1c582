// Preloaded into `conformance server` (node --import) by `cargo xtask
// conformance`: the suite has no option to send an `Authorization` header,
// and mcpsec refuses every request without one. This adds
// `Authorization: Bearer $MCPSEC_CONFORMANCE_KEY` to every HTTP request the
// suite makes to the server under test ($MCPSEC_CONFORMANCE_URL's origin),
// whether through `fetch` (the MCP SDK's client transport) or undici's
// `request` (the DNS-rebinding scenario): both go through undici's global
// dispatcher, which this replaces with one that adds the header. A request
// that already carries an `Authorization` header keeps it.
import { createRequire } from "node:module";
import path from "node:path";

const key = process.env.MCPSEC_CONFORMANCE_KEY;
const target = process.env.MCPSEC_CONFORMANCE_URL;
if (!key || !target) {
  throw new Error("bearer.mjs needs MCPSEC_CONFORMANCE_KEY and MCPSEC_CONFORMANCE_URL");
}
const origin = new URL(target).origin;
// The suite's own undici, so that `request` and `fetch` share the dispatcher.
const require = createRequire(path.join(process.cwd(), "package.json"));
const { Agent, setGlobalDispatcher } = require("undici");

function hasAuthorization(headers) {
  if (!headers) return false;
  if (Array.isArray(headers)) {
    for (let i = 0; i < headers.length; i += 2) {
      if (String(headers[i]).toLowerCase() === "authorization") return true;
    }
    return false;
  }
  return Object.keys(headers).some((k) => k.toLowerCase() === "authorization");
}

function withAuthorization(headers) {
  const value = `Bearer ${key}`;
  if (hasAuthorization(headers)) return headers;
  if (!headers) return { authorization: value };
  if (Array.isArray(headers)) return [...headers, "authorization", value];
  return { ...headers, authorization: value };
}

class BearerAgent extends Agent {
  dispatch(options, handler) {
    const o = new URL(options.path ?? "/", options.origin).origin;
    if (o === origin) {
      options = { ...options, headers: withAuthorization(options.headers) };
    }
    return super.dispatch(options, handler);
  }
}

setGlobalDispatcher(new BearerAgent());
