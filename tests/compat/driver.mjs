// Drives the examples (examples.all:application) through Restate's own TypeScript ingress client,
// @restatedev/restate-sdk-clients, against a running proxy; also checks Restate's plain HTTP paths
// the client does not use (v1.7 forms, idempotent attach by target, CORS) with fetch.
//
//   node driver.mjs <dir with node_modules> <ingress url> <admin url> [case ...]
//
// Every case runs concurrently (each uses its own keys). Prints one JSON object to stdout:
// {"client": version, "cases": {name: {"ok": bool, "error": text, "ms": n}}}.

import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { createRequire } from "node:module";
import { join } from "node:path";

const [clientsDir, ingressUrl, adminUrl, ...only] = process.argv.slice(2);
const requireFrom = createRequire(join(clientsDir, "package.json"));
const clients = requireFrom("@restatedev/restate-sdk-clients");
const { connect, rpc, HttpCallError } = clients;
const version = JSON.parse(
  readFileSync(join(clientsDir, "node_modules/@restatedev/restate-sdk-clients/package.json"), "utf8"),
).version;

const ingress = connect({ url: ingressUrl });
const run = Date.now().toString(36);
const uid = (() => {
  let n = 0;
  return (prefix) => `${prefix}-${run}-${++n}`;
})();
const UNKNOWN_ID = "inv_" + "0".repeat(26);

const Greeter = { name: "Greeter" };
const Counter = { name: "Counter" };
const Signup = { name: "Signup" };
const Review = { name: "Review" };
const Orders = { name: "OrderFulfillment" };

// -- helpers --------------------------------------------------------------------------------------

async function rejectsWith(promise, status, text) {
  try {
    await promise;
  } catch (e) {
    assert.ok(e instanceof HttpCallError, `expected an HttpCallError, got ${e}`);
    assert.equal(e.status, status, `status of ${e.message}`);
    if (text !== undefined) assert.match(e.responseText, new RegExp(text));
    return e;
  }
  assert.fail(`expected a ${status}, got success`);
}

async function poll(check, what, timeoutMs = 15000) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await check();
    if (value) return value;
    if (Date.now() > deadline) assert.fail(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

async function view(invocationId) {
  const response = await fetch(`${adminUrl}/invocations/${invocationId}`);
  assert.equal(response.status, 200, `admin view of ${invocationId}`);
  return response.json();
}

/** The awakeable id an invocation journaled (Review.review hands it to its reviewer). */
function awakeableOf(invocationId) {
  return poll(async () => {
    const found = JSON.stringify((await view(invocationId)).journal ?? []).match(/awk_[0-9a-zA-Z]+_\d+/);
    return found?.[0];
  }, `an awakeable in ${invocationId}`);
}

/** A raw request: a string `body` is sent as it is (JSON text), anything else JSON-encoded. */
async function http(method, path, { body, headers } = {}) {
  const init = { method, headers: { ...(headers ?? {}) } };
  if (body !== undefined) {
    init.body = typeof body === "string" ? body : JSON.stringify(body);
    init.headers["content-type"] ??= "application/json";
  }
  const response = await fetch(ingressUrl + path, init);
  const text = await response.text();
  return { status: response.status, headers: response.headers, text, json: () => JSON.parse(text) };
}

// -- cases ----------------------------------------------------------------------------------------

const cases = {};
const test = (name, fn) => (cases[name] = fn);

test("service call", async () => {
  assert.equal(await ingress.serviceClient(Greeter).greet("Ada"), "Hello, Ada!");
  assert.equal(await ingress.call({ service: "Greeter", handler: "greet", parameter: "Bo" }), "Hello, Bo!");
});

test("object calls and a shared read", async () => {
  const counter = ingress.objectClient(Counter, uid("count/er ?"));
  assert.equal(await counter.add(2), 2);
  assert.equal(await counter.add(3), 5);
  assert.equal(await counter.get(), 5);
});

test("idempotent call", async () => {
  const key = uid("idem");
  const greeter = ingress.serviceClient(Greeter);
  assert.equal(await greeter.greet("Cy", rpc.opts({ idempotencyKey: key })), "Hello, Cy!");
  assert.equal(await greeter.greet("ignored", rpc.opts({ idempotencyKey: key })), "Hello, Cy!");
  // Restate's idempotent attach by target, on the path and in a body.
  const attached = await http("GET", `/restate/invocation/Greeter/greet/${key}/attach`);
  assert.equal(attached.status, 200, attached.text);
  assert.equal(attached.json(), "Hello, Cy!");
  const id = attached.headers.get("x-restate-id");
  assert.match(id, /^inv_/);
  assert.ok(!Number.isNaN(Date.parse(attached.headers.get("idempotency-expires"))), "idempotency-expires");
  const output = await http("GET", `/restate/invocation/Greeter/greet/${key}/output`);
  assert.equal(output.status, 200, output.text);
  const target = { target: "idempotentInvocation", service: "Greeter", handler: "greet", idempotencyKey: key };
  const lookup = await http("POST", "/restate/lookup", { body: target });
  assert.equal(lookup.status, 200, lookup.text);
  assert.deepEqual(lookup.json(), { invocationId: id });
  const byBody = await http("POST", "/restate/output", { body: target });
  assert.equal(byBody.json(), "Hello, Cy!");
  const unknown = await http("GET", `/restate/invocation/Greeter/greet/${uid("never")}/output`);
  assert.equal(unknown.status, 404, unknown.text);
});

test("idempotent attach by target of an object with a key holding a slash", async () => {
  const key = uid("a/b c?");
  const idem = uid("idem");
  const counter = ingress.objectClient(Counter, key);
  assert.equal(await counter.add(7, rpc.opts({ idempotencyKey: idem })), 7);
  const attached = await http("GET", `/restate/invocation/Counter/${encodeURIComponent(key)}/add/${idem}/attach`);
  assert.equal(attached.status, 200, attached.text);
  assert.equal(attached.json(), 7);
  const body = { target: "idempotentInvocation", service: "Counter", key, handler: "add", idempotencyKey: idem };
  assert.equal((await http("POST", "/restate/attach", { body })).json(), 7);
});

test("send with an idempotency key and result()", async () => {
  const key = uid("send");
  const greeter = ingress.serviceSendClient(Greeter);
  const send = await greeter.greet("Di", rpc.sendOpts({ idempotencyKey: key }));
  assert.equal(send.status, "Accepted");
  assert.match(send.invocationId, /^inv_/);
  assert.equal(await ingress.result(send), "Hello, Di!");
  const again = await greeter.greet("Di", rpc.sendOpts({ idempotencyKey: key }));
  assert.equal(again.status, "PreviouslyAccepted");
  assert.equal(again.invocationId, send.invocationId);
  const generic = await ingress.send({
    service: "Counter", key: uid("gen"), handler: "add", parameter: 4, opts: rpc.sendOpts({ idempotencyKey: key }),
  });
  assert.equal(generic.status, "Accepted");
  assert.equal(await ingress.result(generic), 4);
});

test("delayed send", async () => {
  const started = Date.now();
  const counter = ingress.objectSendClient(Counter, uid("delayed"));
  const send = await counter.add(1, rpc.sendOpts({ delay: 1000, idempotencyKey: uid("idem") }));
  assert.equal(send.status, "Accepted");
  const due = Date.parse(send.executionTime);
  assert.ok(due - started >= 800 && due - started <= 5000, `executionTime ${send.executionTime}`);
  assert.equal((await view(send.invocationId)).status, "scheduled");
  assert.equal(await ingress.result(send), 1);
  assert.ok(Date.now() - started >= 900, "the result came before the delay");
  // Restate's plain HTTP form: the 202 body carries executionTime.
  const raw = await http("POST", `/Counter/${uid("raw")}/add/send?delay=PT1S`, { body: 1 });
  assert.equal(raw.status, 202, raw.text);
  assert.ok(raw.json().executionTime.endsWith("Z"), raw.text);
  const call = await http("POST", `/Greeter/greet?delay=1s`, { body: '"x"' });
  assert.equal(call.status, 400, "a delay on a call");
});

const WORKFLOW_KEYS = ["a/b", "with space", "what?", "ünï©ødé ☃", "50%", "x+y&z=1#h"];

for (const base of WORKFLOW_KEYS) {
  test(`workflow submit, attach and output with key ${JSON.stringify(base)}`, async () => {
    const key = `${base}-${run}`;
    const signup = ingress.workflowClient(Signup, key);
    const submitted = await signup.workflowSubmit("ada@example.com");
    assert.equal(submitted.status, "Accepted");
    const early = await signup.workflowOutput();
    assert.equal(early.ready, false);
    await poll(async () => (await signup.status()) === "waiting for confirmation", "the signup to wait");
    // The run is called again while it runs: 409 at once, not after it completes.
    const t0 = Date.now();
    await rejectsWith(signup.run("other@example.com"), 409, "already invoked");
    assert.ok(Date.now() - t0 < 3000, "the second run call waited");
    await signup.click("s3cret");
    assert.equal(await signup.workflowAttach(), "ada@example.com confirmed with s3cret");
    const output = await signup.workflowOutput();
    assert.equal(output.ready, true);
    assert.equal(output.result, "ada@example.com confirmed with s3cret");
    const again = await signup.workflowSubmit("ada@example.com");
    assert.equal(again.status, "PreviouslyAccepted");
    assert.equal(again.invocationId, submitted.invocationId);
    await rejectsWith(signup.run("late@example.com"), 409, "already invoked");
    // Restate's v1.7 forms name the same run.
    const body = { target: "workflow", workflowName: "Signup", workflowKey: key };
    assert.deepEqual((await http("POST", "/restate/lookup", { body })).json(), {
      invocationId: submitted.invocationId,
    });
    assert.equal((await http("POST", "/restate/attach", { body })).json(), "ada@example.com confirmed with s3cret");
    assert.equal((await http("GET", `/restate/output/${submitted.invocationId}`)).status, 200);
  });
}

test("workflow submit with a delay", async () => {
  const signup = ingress.workflowClient(Signup, uid("delayed/wf"));
  const started = Date.now();
  const submitted = await signup.workflowSubmit("bo@example.com", rpc.sendOpts({ delay: 800 }));
  assert.equal(submitted.status, "Accepted");
  assert.equal((await view(submitted.invocationId)).status, "scheduled");
  assert.equal((await signup.workflowOutput()).ready, false);
  await poll(async () => (await signup.status()) === "waiting for confirmation", "the delayed run to start");
  assert.ok(Date.now() - started >= 700, "the run started before its delay");
  await signup.click("later");
  assert.equal(await signup.workflowAttach(), "bo@example.com confirmed with later");
});

async function review(title) {
  const reviews = ingress.serviceSendClient(Review);
  const request = { title, text: "First sentence. Second one.", timeout_seconds: 3600 };
  const send = await reviews.review(request, rpc.sendOpts({ idempotencyKey: uid("review") }));
  return { send, awakeable: await awakeableOf(send.invocationId) };
}

test("awakeable resolve, then resolve and reject again", async () => {
  const { send, awakeable } = await review("Resolved");
  await ingress.resolveAwakeable(awakeable, { decision: "approved" });
  const expected = { title: "Resolved", summary: "First sentence.", outcome: "approved" };
  assert.deepEqual(await ingress.result(send), expected);
  // Already completed: Restate answers 202 and the first completion stays.
  await ingress.resolveAwakeable(awakeable, { decision: "rejected" });
  await ingress.rejectAwakeable(awakeable, "too late");
  assert.deepEqual(await ingress.result(send), expected);
});

test("awakeable reject", async () => {
  const { send, awakeable } = await review("Rejected");
  await ingress.rejectAwakeable(awakeable, "not good enough");
  await rejectsWith(ingress.result(send), 500, "not good enough");
});

test("awakeable unknown but well formed, and malformed", async () => {
  await ingress.resolveAwakeable(`awk_${"0".repeat(26)}_1`, { decision: "approved" });
  await ingress.rejectAwakeable(`awk_${"0".repeat(26)}_1`, "nobody");
  await rejectsWith(ingress.resolveAwakeable("awk_nope", 1), 400);
});

test("terminal errors keep their codes", async () => {
  const orders = ingress.serviceClient(Orders);
  const order = { order_id: uid("o"), sku: "sku-1", quantity: 1, amount: 20000 };
  const declined = await rejectsWith(orders.process(order), 402, "card declined");
  assert.equal(JSON.parse(declined.responseText).code, 402);
  await rejectsWith(orders.process({ ...order, order_id: uid("o"), quantity: 0, amount: 1 }), 400, "quantity");
  const send = await ingress.serviceSendClient(Orders).process(
    { ...order, order_id: uid("o") },
    rpc.sendOpts({ idempotencyKey: uid("idem") }),
  );
  await rejectsWith(ingress.result(send), 402, "card declined");
  const fine = await orders.process({ order_id: uid("o"), sku: "sku-2", quantity: 2, amount: 10 });
  assert.match(fine, /fulfilled/);
});

test("v1.7 call, send, attach and output paths", async () => {
  const call = await http("POST", "/restate/call/Greeter/greet", { body: '"Eve"' });
  assert.equal(call.status, 200, call.text);
  assert.equal(call.json(), "Hello, Eve!");
  const key = uid("v17/key");
  const send = await http("POST", `/restate/send/Counter/${encodeURIComponent(key)}/add`, { body: 5 });
  assert.equal(send.status, 202, send.text);
  const { invocationId, status } = send.json();
  assert.equal(status, "Accepted");
  const attached = await http("GET", `/restate/attach/${invocationId}`);
  assert.equal(attached.status, 200, attached.text);
  assert.equal(attached.json(), 5);
  assert.equal((await http("GET", `/restate/output/${invocationId}`)).json(), 5);
  const body = { target: "invocation", invocationId };
  assert.equal((await http("POST", "/restate/output", { body })).json(), 5);
  assert.deepEqual((await http("POST", "/restate/lookup", { body })).json(), { invocationId });
  assert.equal((await http("GET", `/restate/attach/inv_bad`)).status, 400);
});

test("GET invokes a handler without input, and health", async () => {
  const key = uid("get");
  await ingress.objectClient(Counter, key).add(3);
  const got = await http("GET", `/Counter/${encodeURIComponent(key)}/get`);
  assert.equal(got.status, 200, got.text);
  assert.equal(got.json(), 3);
  const health = await http("GET", "/restate/health");
  assert.equal(health.status, 200);
  assert.ok(health.json().services.includes("Greeter"), health.text);
});

test("ingress errors as Restate answers them", async () => {
  const unknown = await http("GET", `/restate/invocation/${UNKNOWN_ID}/attach`);
  assert.equal(unknown.status, 404);
  assert.equal(unknown.headers.get("x-restate-id"), UNKNOWN_ID);
  const put = await http("PUT", "/Greeter/greet", { body: '"x"' });
  assert.equal(put.status, 405);
  assert.equal(put.headers.get("x-restate-error-source"), "ingress");
  const text = await http("POST", "/Greeter/greet", { body: '"x"', headers: { "content-type": "text/plain" } });
  assert.equal(text.status, 400, text.text);
  const empty = await http("POST", "/Greeter/greet", { body: '"Fay"', headers: { "idempotency-key": "" } });
  assert.equal(empty.status, 200, empty.text);
  assert.equal((await http("POST", "/Counter/add", { body: 1 })).status, 400, "an object without its key");
  assert.equal((await http("POST", "/Nope/greet", { body: 1 })).status, 404);
  const idem = await http("POST", `/Signup/${uid("k")}/run`, { body: '"x"', headers: { "idempotency-key": "k" } });
  assert.equal(idem.status, 400, "an idempotency key on a workflow run");
});

test("CORS: preflight, and the client from another origin", async () => {
  const origin = "http://page.example:3000";
  const asked = "content-type,idempotency-key,x-restateclient-retry-attempt";
  const preflight = await fetch(`${ingressUrl}/Greeter/greet`, {
    method: "OPTIONS",
    headers: { origin, "access-control-request-method": "POST", "access-control-request-headers": asked },
  });
  assert.equal(preflight.status, 200);
  assert.equal(preflight.headers.get("access-control-allow-origin"), origin);
  assert.equal(preflight.headers.get("access-control-allow-methods"), "POST");
  assert.equal(preflight.headers.get("access-control-allow-headers"), asked);
  assert.equal(preflight.headers.get("access-control-allow-credentials"), "true");
  // The client as a page on `origin` would use it: every answer must allow that origin.
  const seen = [];
  const browserish = connect({
    url: ingressUrl,
    fetch: async (url, init) => {
      const response = await fetch(url, { ...init, headers: { ...(init.headers ?? {}), origin } });
      seen.push(response.headers.get("access-control-allow-origin"));
      return response;
    },
  });
  assert.equal(await browserish.serviceClient(Greeter).greet("Gus"), "Hello, Gus!");
  const signup = browserish.workflowClient(Signup, uid("cors"));
  await signup.workflowSubmit("gus@example.com");
  await rejectsWith(signup.run("again"), 409);
  assert.deepEqual(seen, [origin, origin, origin]);
});

// -- run ------------------------------------------------------------------------------------------

const selected = only.length ? only : Object.keys(cases);
const results = {};
await Promise.all(
  selected.map(async (name) => {
    const started = Date.now();
    try {
      if (!(name in cases)) throw new Error(`no case ${name}`);
      await cases[name]();
      results[name] = { ok: true, ms: Date.now() - started };
    } catch (e) {
      results[name] = { ok: false, error: String(e?.stack ?? e), ms: Date.now() - started };
    }
  }),
);
process.stdout.write(JSON.stringify({ client: version, cases: results }) + "\n");
