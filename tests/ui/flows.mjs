// The admin UI's flows in real headless Chromium (Debian's /usr/bin/chromium, driven by the
// pinned playwright-core; no browser download). Started by tests/it/ui.rs, which runs the
// registry, wharf and the receivers and answers the `@@ <command>` lines this script prints
// (push an image, count a receiver's requests, check a signature, change a receiver's answer).
//
// Elements are found by role and label only (never by CSS class). Every page of the flows is
// kept as a screenshot at 1280×800 and at 390×844 in $ARTIFACTS; a failure adds one of the page
// as it was.

import { chromium } from "playwright-core";
import assert from "node:assert/strict";
import { createInterface } from "node:readline";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

const env = (k) => {
  const v = process.env[k];
  if (!v) throw new Error(`${k} is not set (tests/it/ui.rs sets it)`);
  return v;
};
const WHARF = env("WHARF_URL");
const ADMIN = { username: "admin", password: env("ADMIN_PASSWORD") };
const ALICE = { username: "alice", password: "alice-pw-1" };
const RX = { ok: env("RX_OK"), fail: env("RX_FAIL"), gone: env("RX_GONE") };
const ARTIFACTS = env("ARTIFACTS");
const SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const AUTH = "Bearer tok-ui-1";

// --- the harness: questions to tests/it/ui.rs --------------------------------------------
const input = createInterface({ input: process.stdin });
const pending = [];
const waiting = [];
input.on("line", (l) => (waiting.length ? waiting.shift()(l) : pending.push(l)));
function ask(cmd) {
  process.stdout.write(`@@ ${cmd}\n`);
  return new Promise((res) => (pending.length ? res(pending.shift()) : waiting.push(res)));
}
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
async function until(what, f, ms = 40000) {
  const end = Date.now() + ms;
  for (;;) {
    const v = await f();
    if (v) return v;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await sleep(250);
  }
}

// --- the browser ---------------------------------------------------------------------------
// A fresh profile: playwright-core gives every launch its own new --user-data-dir (it refuses
// one passed in args; launchPersistentContext would allow only one context, and the flows need
// one per user).
const profile = mkdtempSync(join(tmpdir(), "wharf-ui-chromium-"));
const browser = await chromium.launch({
  executablePath: env("CHROMIUM"),
  headless: true,
  args: [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
  ],
  env: { ...process.env, HOME: profile, XDG_CONFIG_HOME: profile, XDG_CACHE_HOME: profile },
});
const WIDE = { width: 1280, height: 800 };
const PHONE = { width: 390, height: 844 };
let shotNo = 0;
async function shot(page, name) {
  shotNo += 1;
  const n = String(shotNo).padStart(2, "0");
  for (const [tag, vp] of [["1280x800", WIDE], ["390x844", PHONE]]) {
    await page.setViewportSize(vp);
    await page.screenshot({ path: join(ARTIFACTS, `${n}-${name}-${tag}.png`), fullPage: true });
  }
  await page.setViewportSize(WIDE);
}
async function as(user, opts = {}) {
  const ctx = await browser.newContext({ httpCredentials: user, viewport: WIDE, ...opts });
  const page = await ctx.newPage();
  page.setDefaultTimeout(15000);
  return page;
}
const text = (page) => page.locator("main").innerText();
// the text of an element, or "" when it is not there (yet)
const textOf = (loc) => loc.innerText({ timeout: 2000 }).catch(() => "");
const rowOf = (page, name) =>
  page.getByRole("row").filter({ has: page.getByRole("rowheader", { name, exact: true }) });
const endpoint = (page, n = 1) => page.getByRole("group", { name: `Endpoint ${n}` });

let current = null; // the page to screenshot on failure
const results = [];
async function flow(name, f) {
  const t0 = Date.now();
  try {
    await f();
    results.push(`ok   ${name} (${((Date.now() - t0) / 1000).toFixed(1)} s)`);
    console.log(`flow ok: ${name}`);
  } catch (e) {
    console.log(`flow FAILED: ${name}: ${e.stack || e}`);
    if (current) {
      await current.screenshot({ path: join(ARTIFACTS, `FAILED-${name.replace(/\W+/g, "-")}.png`), fullPage: true }).catch(() => {});
      console.log(`--- page at failure (${current.url()}) ---\n${await text(current).catch(() => "?")}`);
    }
    throw e;
  }
}

async function goto(page, path) {
  const r = await page.goto(WHARF + path);
  return r;
}

async function newWebhook(page, { name, url, auth, secret, types, more = [] }) {
  await goto(page, "/ui/projects/prj/webhooks");
  await page.getByRole("button", { name: "New Webhook" }).click();
  await page.getByLabel("Name", { exact: true }).fill(name);
  if (types) {
    for (const box of await page.getByRole("group", { name: "Event Type" }).getByRole("checkbox").all()) {
      await box.setChecked(false);
    }
    for (const t of types) await page.getByLabel(t, { exact: true }).check();
  }
  await endpoint(page).getByLabel("Endpoint URL", { exact: true }).fill(url);
  if (auth) await endpoint(page).getByLabel("Auth Header", { exact: true }).fill(auth);
  if (secret) await endpoint(page).getByLabel("Signing Secret", { exact: true }).fill(secret);
  for (const [i, u] of more.entries()) {
    await page.getByRole("button", { name: "Add Endpoint" }).click();
    await endpoint(page, i + 2).getByLabel("Endpoint URL", { exact: true }).fill(u);
  }
  await page.getByRole("button", { name: "Add", exact: true }).click();
  await page.getByRole("heading", { name: "Webhooks" }).waitFor();
  await rowOf(page, name).waitFor();
}

async function executionsOf(page, name) {
  await goto(page, "/ui/projects/prj/webhooks");
  await rowOf(page, name).getByRole("button", { name: "Executions" }).click();
  await page.getByRole("heading", { name: "Executions" }).waitFor();
}

// --- the flows -----------------------------------------------------------------------------
try {
  const alice = await as(ALICE);
  const admin = await as(ADMIN);

  await flow("anonymous 401 and project-admin scope", async () => {
    const anon = await browser.newContext();
    const r = await anon.request.get(WHARF + "/ui/");
    assert.equal(r.status(), 401);
    assert.equal(r.headers()["www-authenticate"], 'Basic realm="wharf"');
    await anon.close();
    current = alice;
    await goto(alice, "/ui/");
    await alice.getByRole("heading", { name: "Projects" }).waitFor();
    await alice.getByRole("link", { name: "prj", exact: true }).waitFor();
    assert.equal(await alice.getByRole("link", { name: "other", exact: true }).count(), 0, "alice sees only her project");
    assert.equal(await alice.getByRole("link", { name: "Settings" }).count(), 0, "no Settings for a project admin");
    await shot(alice, "projects");
    const denied = await goto(alice, "/ui/projects/other/webhooks");
    assert.equal(denied.status(), 403);
    await alice.getByRole("heading", { name: "Not allowed" }).waitFor();
    await shot(alice, "forbidden");
    assert.equal((await goto(alice, "/ui/settings")).status(), 403);
  });

  await flow("empty state, create with field errors, Test Endpoint green and red, duplicate name", async () => {
    current = alice;
    await goto(alice, "/ui/");
    await alice.getByRole("link", { name: "prj", exact: true }).click();
    await alice.getByRole("heading", { name: "Webhooks" }).waitFor();
    await alice.getByText("No Webhook").waitFor();
    await shot(alice, "webhooks-empty");
    await alice.getByRole("button", { name: "New Webhook" }).click();
    // every event type is checked on create
    for (const t of ["PUSH_ARTIFACT", "PULL_ARTIFACT", "DELETE_ARTIFACT", "SCANNING_COMPLETED"]) {
      assert.ok(await alice.getByLabel(t, { exact: true }).isChecked(), t);
    }
    assert.ok(await endpoint(alice).getByLabel("Verify Remote Certificate").isChecked());
    // Generate: a Standard Webhooks secret made in the browser, shown to be copied
    await endpoint(alice).getByRole("button", { name: "Generate" }).click();
    assert.match(await endpoint(alice).getByLabel("Signing Secret", { exact: true }).inputValue(), /^whsec_[A-Za-z0-9+/]{43}=$/);
    await endpoint(alice).getByLabel("Signing Secret", { exact: true }).fill("");
    // a Slack endpoint has no payload format and no auth header
    await endpoint(alice).getByLabel("Notify Type").selectOption("slack");
    assert.ok(!(await endpoint(alice).getByLabel("Payload Format").isVisible()));
    assert.ok(!(await endpoint(alice).getByLabel("Auth Header", { exact: true }).isVisible()));
    await endpoint(alice).getByLabel("Notify Type").selectOption("http");
    assert.ok(await endpoint(alice).getByLabel("Payload Format").isVisible());
    await shot(alice, "new-webhook");
    // empty name
    await endpoint(alice).getByLabel("Endpoint URL", { exact: true }).fill(RX.ok);
    await alice.getByRole("button", { name: "Add", exact: true }).click();
    await alice.getByText("name: required").waitFor();
    assert.equal(await alice.getByLabel("Name", { exact: true }).getAttribute("aria-invalid"), "true");
    await shot(alice, "new-webhook-errors");
    // no event type
    await alice.getByLabel("Name", { exact: true }).fill("ci");
    await endpoint(alice).getByLabel("Endpoint URL", { exact: true }).fill(RX.ok);
    for (const box of await alice.getByRole("group", { name: "Event Type" }).getByRole("checkbox").all()) {
      await box.setChecked(false);
    }
    await alice.getByRole("button", { name: "Add", exact: true }).click();
    await alice.getByText("event_types: at least one event type is required").waitFor();
    // a metadata endpoint: refused by the SSRF guard, next to the field
    await alice.getByLabel("PUSH_ARTIFACT", { exact: true }).check();
    await alice.getByLabel("PULL_ARTIFACT", { exact: true }).check();
    await endpoint(alice).getByLabel("Endpoint URL", { exact: true }).fill("http://169.254.169.254/latest/meta-data");
    await alice.getByRole("button", { name: "Add", exact: true }).click();
    const err = endpoint(alice).getByText(/targets\[0\]\.address/);
    await err.waitFor();
    assert.equal(await endpoint(alice).getByLabel("Endpoint URL", { exact: true }).getAttribute("aria-invalid"), "true");
    await shot(alice, "new-webhook-ssrf");
    // Test Endpoint: green, then red (in place, the form keeps what was typed)
    await endpoint(alice).getByLabel("Endpoint URL", { exact: true }).fill(RX.ok);
    await endpoint(alice).getByLabel("Auth Header", { exact: true }).fill(AUTH);
    const before = Number(await ask("count ok"));
    await alice.getByRole("button", { name: "Test Endpoint" }).click();
    await alice.getByRole("status").filter({ hasText: "Test Endpoint: every endpoint answered." }).waitFor();
    assert.match(await alice.getByRole("status").filter({ hasText: "Test Endpoint" }).innerText(), /HTTP 200 in \d+ ms/);
    assert.equal(Number(await ask("count ok")), before + 1);
    assert.equal(await ask("auth ok"), AUTH);
    assert.equal(await endpoint(alice).getByLabel("Auth Header", { exact: true }).inputValue(), AUTH, "the typed header stays");
    await shot(alice, "test-endpoint-green");
    await endpoint(alice).getByLabel("Endpoint URL", { exact: true }).fill(RX.fail);
    await alice.getByRole("button", { name: "Test Endpoint" }).click();
    await alice.getByRole("alert").filter({ hasText: "Test Endpoint failed." }).waitFor();
    assert.match(await alice.getByRole("alert").filter({ hasText: "Test Endpoint failed." }).innerText(), /status 500/);
    await shot(alice, "test-endpoint-red");
    // save it, with auth header and a signing secret
    await endpoint(alice).getByLabel("Endpoint URL", { exact: true }).fill(RX.ok);
    await endpoint(alice).getByLabel("Signing Secret", { exact: true }).fill(SECRET);
    await alice.getByRole("button", { name: "Add", exact: true }).click();
    await rowOf(alice, "ci").waitFor();
    const row = await rowOf(alice, "ci").innerText();
    assert.match(row, /Enabled/);
    assert.ok(row.includes(RX.ok), row);
    const html = await alice.content();
    assert.ok(!html.includes("tok-ui-1") && !html.includes(SECRET), "no secret in the page");
    // duplicate name
    await alice.getByRole("button", { name: "New Webhook" }).click();
    await alice.getByLabel("Name", { exact: true }).fill("ci");
    await endpoint(alice).getByLabel("Endpoint URL", { exact: true }).fill(RX.ok);
    await alice.getByRole("button", { name: "Add", exact: true }).click();
    await alice.getByText("Name already exists").waitFor();
    await shot(alice, "duplicate-name");
  });

  await flow("push: last trigger, execution Success, attempt 200, request and response, log", async () => {
    current = alice;
    await ask("push prj/app:v1");
    await until("the push delivered", async () => Number(await ask("count ok")) >= 2);
    assert.equal(await ask(`verify ok ${SECRET}`), "ok");
    assert.equal(await ask("auth ok"), AUTH);
    await goto(alice, "/ui/projects/prj/webhooks");
    await alice.getByText("Last trigger of ci").click();
    const trig = alice.getByRole("table", { name: "Last trigger" });
    const push = trig.getByRole("row").filter({ hasText: "PUSH_ARTIFACT" });
    assert.doesNotMatch(await push.innerText(), /Never/);
    assert.match(await trig.getByRole("row").filter({ hasText: "PULL_ARTIFACT" }).innerText(), /Never/);
    await shot(alice, "webhooks");
    await rowOf(alice, "ci").getByRole("button", { name: "Executions" }).click();
    const exec = alice.getByRole("table", { name: "Executions" }).getByRole("row").filter({ hasText: "PUSH_ARTIFACT" });
    await until("Success", async () => /Success/.test(await textOf(exec.first())) || (await alice.reload(), false));
    await shot(alice, "executions");
    await exec.first().getByRole("link").first().click();
    await alice.getByRole("heading", { name: /Execution \d+/ }).waitFor();
    const attempt = alice.getByRole("table", { name: "Attempts" }).getByRole("row").nth(1);
    assert.match(await attempt.innerText(), /200/);
    assert.match(await alice.getByLabel("Payload").innerText(), /"type": "PUSH_ARTIFACT"/);
    await shot(alice, "execution");
    await attempt.getByRole("link", { name: "Request and response" }).click();
    await alice.getByRole("heading", { name: "Request sent" }).waitFor();
    const headers = await alice.getByRole("table", { name: "Request headers" }).innerText();
    assert.match(headers, /Authorization\s+set/);
    assert.match(headers, /webhook-signature\s+set/);
    const page = await alice.content();
    assert.ok(!page.includes("tok-ui-1") && !page.includes(SECRET), "no secret on the attempt page");
    await shot(alice, "attempt");
    await alice.goBack();
    const log = await alice.getByRole("link", { name: "Log", exact: true }).first().getAttribute("href");
    const r = await alice.request.get(WHARF + log);
    assert.equal(r.status(), 200);
    assert.match(await r.text(), /status 200/);
  });

  await flow("edit keeps the secret; a changed address without its auth header is refused", async () => {
    current = alice;
    await goto(alice, "/ui/projects/prj/webhooks");
    await rowOf(alice, "ci").getByRole("button", { name: "Edit" }).click();
    await alice.getByRole("heading", { name: "Edit webhook ci" }).waitFor();
    assert.equal(await endpoint(alice).getByLabel("Auth Header", { exact: true }).inputValue(), "");
    assert.match(await endpoint(alice).innerText(), /auth header is set/);
    assert.match(await endpoint(alice).innerText(), /signing secret is set/);
    await shot(alice, "edit-webhook");
    // Test Endpoint of the stored policy (its masked secrets)
    await alice.getByRole("button", { name: "Test Endpoint" }).click();
    await alice.getByRole("status").filter({ hasText: "saved endpoints" }).waitFor();
    assert.equal(await ask(`verify ok ${SECRET}`), "ok");
    await alice.getByLabel("Description").fill("builds on every push");
    await alice.getByRole("button", { name: "Save" }).click();
    await rowOf(alice, "ci").filter({ hasText: "builds on every push" }).waitFor();
    const n = Number(await ask("count ok"));
    await ask("push prj/app:v1b");
    await until("the push after the edit", async () => Number(await ask("count ok")) > n);
    assert.equal(await ask(`verify ok ${SECRET}`), "ok", "the receiver verifies the kept secret");
    assert.equal(await ask("auth ok"), AUTH);
    await rowOf(alice, "ci").getByRole("button", { name: "Edit" }).click();
    await endpoint(alice).getByLabel("Endpoint URL", { exact: true }).fill(RX.ok + "/moved");
    await alice.getByRole("button", { name: "Save" }).click();
    await endpoint(alice).getByText(/send the header again for the new address/).waitFor();
    assert.equal(await endpoint(alice).getByLabel("Auth Header", { exact: true }).getAttribute("aria-invalid"), "true");
    await shot(alice, "edit-address-without-auth");
    await alice.getByRole("link", { name: "Cancel" }).click();
    await rowOf(alice, "ci").waitFor();
    assert.ok((await rowOf(alice, "ci").innerText()).includes(RX.ok));
    assert.ok(!(await rowOf(alice, "ci").innerText()).includes("/moved"));
  });

  await flow("failing target: pending with next attempt, dead, fixed, Redeliver and redeliver since", async () => {
    current = alice;
    await newWebhook(alice, { name: "failing", url: RX.fail, types: ["PUSH_ARTIFACT"] });
    await ask("push prj/app:v2");
    await executionsOf(alice, "failing");
    const row = alice.getByRole("table", { name: "Executions" }).getByRole("row").nth(1);
    await until("a pending execution", async () => /Pending/.test(await textOf(row)) || (await alice.reload(), false));
    assert.match(await row.innerText(), /retry 1 of 2 due at/, "the next attempt");
    assert.match(await row.innerText(), /500/);
    await shot(alice, "execution-pending");
    // no reload from here: the page refreshes itself while something is pending
    await until("the execution dead (htmx refresh)", async () => /Error/.test(await textOf(row)), 60000);
    await shot(alice, "execution-dead");
    await ask("answer fail 200");
    await row.getByRole("button", { name: "Redeliver" }).click();
    await alice.getByRole("heading", { name: /Execution \d+/ }).waitFor();
    await until("the redelivery succeeded", async () => {
      await alice.reload();
      return /Success/.test(await textOf(alice.getByRole("heading", { name: /Execution \d+/ })));
    });
    // redeliver what failed since a time
    await ask("answer fail 500");
    const since = new Date(Date.now() - 60000).toISOString().slice(0, 16);
    await ask("push prj/app:v3");
    await executionsOf(alice, "failing");
    await alice.getByLabel("Status").selectOption("Error");
    await alice.getByRole("button", { name: "Filter" }).click();
    // the filter is a GET form: reloading before its navigation ended raced with it
    // ("Page.reload: Not attached to an active page")
    await alice.waitForURL(/[?&]status=Error/);
    await until("a dead execution", async () => {
      await alice.reload();
      return (await alice.getByRole("table", { name: "Executions" }).count()) > 0;
    }, 60000);
    await ask("answer fail 200");
    await alice.getByLabel("Failed since (UTC)").fill(since);
    await alice.getByRole("button", { name: "Redeliver failed since" }).click();
    await alice.getByText(/Sent again: 1 failed delivery since/).waitFor();
    await shot(alice, "redelivered-since");
    await alice.getByRole("button", { name: "Redeliver all dead" }).click();
    await alice.getByText("Sent again: 0 dead deliveries.").waitFor();
  });

  await flow("410 target: badge, re-enable", async () => {
    current = alice;
    // two endpoints: every one is listed, the badge only on the retired one
    await newWebhook(alice, { name: "retired", url: RX.gone, types: ["PUSH_ARTIFACT"], more: [RX.ok + "/second"] });
    assert.ok((await rowOf(alice, "retired").innerText()).includes(RX.ok + "/second"));
    await ask("push prj/app:v4");
    await until("the disabled (410) badge", async () => {
      await goto(alice, "/ui/projects/prj/webhooks");
      return /disabled \(410\)/.test(await textOf(rowOf(alice, "retired")));
    });
    await shot(alice, "webhooks-410");
    await ask("answer gone 200");
    await rowOf(alice, "retired").getByRole("button", { name: "Edit" }).click();
    await endpoint(alice).getByLabel("Re-enable this endpoint").check();
    await alice.getByRole("button", { name: "Save" }).click();
    await rowOf(alice, "retired").waitFor();
    assert.doesNotMatch(await rowOf(alice, "retired").innerText(), /disabled \(410\)/);
    assert.ok((await rowOf(alice, "retired").innerText()).includes(RX.ok + "/second"), "the second endpoint is kept");
  });

  await flow("settings off: banner, no delivery for a push; on again", async () => {
    current = admin;
    await goto(admin, "/ui/settings");
    const box = admin.getByLabel("Webhooks Enabled");
    assert.ok(await box.isChecked());
    assert.ok(!(await admin.getByRole("button", { name: "Save" }).isVisible()), "Save appears only after a change");
    await box.uncheck();
    await admin.getByRole("button", { name: "Save" }).waitFor();
    await shot(admin, "settings-changed");
    await admin.getByRole("button", { name: "Cancel" }).click();
    assert.ok(await box.isChecked(), "Cancel puts it back");
    await box.uncheck();
    await admin.getByRole("button", { name: "Save" }).click();
    await admin.getByRole("status").filter({ hasText: "Webhooks are off." }).waitFor();
    await shot(admin, "settings-off");
    await goto(alice, "/ui/projects/prj/webhooks");
    await alice.getByText("Webhooks are off.").waitFor();
    const n = Number(await ask("count ok"));
    await ask("push prj/app:v5");
    await sleep(1500);
    assert.equal(Number(await ask("count ok")), n, "nothing sent while webhooks are off");
    await goto(admin, "/ui/settings");
    await admin.getByLabel("Webhooks Enabled").check();
    await admin.getByRole("button", { name: "Save" }).click();
    await admin.getByRole("heading", { name: "System Settings" }).waitFor();
    assert.equal(await admin.getByText("Webhooks are off.").count(), 0);
  });

  await flow("event log filters; event catalog; test sending a chosen type", async () => {
    current = admin;
    await goto(admin, "/ui/events");
    await admin.getByLabel("Project").selectOption("prj");
    await admin.getByLabel("Event type").selectOption("PUSH_ARTIFACT");
    await admin.getByRole("button", { name: "Apply" }).click();
    const rows = admin.getByRole("table", { name: "Events" }).getByRole("row");
    await rows.nth(1).waitFor();
    for (const r of (await rows.all()).slice(1)) {
      const t = await r.innerText();
      assert.match(t, /PUSH_ARTIFACT/);
      assert.match(t, /prj\/app/);
    }
    await shot(admin, "event-log");
    await admin.getByLabel("Event type").selectOption("DELETE_ARTIFACT");
    await admin.getByRole("button", { name: "Apply" }).click();
    await admin.getByText("No event matches.").waitFor();
    await goto(admin, "/ui/catalog");
    await admin.getByLabel("Event type").selectOption("SCANNING_COMPLETED");
    await admin.getByLabel("Payload Format").selectOption("CloudEvents");
    await admin.getByRole("button", { name: "Show" }).click();
    assert.match(await admin.getByLabel("Example payload").innerText(), /harbor\.scan\.completed/);
    await shot(admin, "catalog");
    current = alice;
    await executionsOf(alice, "ci");
    const n = Number(await ask("count ok"));
    await alice.getByLabel("Event type to send").selectOption("SCANNING_COMPLETED");
    await alice.getByRole("button", { name: "Test Endpoint" }).click();
    await alice.getByRole("status").filter({ hasText: "every endpoint answered" }).waitFor();
    assert.equal(Number(await ask("count ok")), n + 1);
  });

  await flow("Custom template: Preview, an error with its line, save, delivered as written", async () => {
    current = alice;
    await goto(alice, "/ui/projects/prj/webhooks");
    await alice.getByRole("button", { name: "New Webhook" }).click();
    await alice.getByLabel("Name", { exact: true }).fill("custom");
    for (const box of await alice.getByRole("group", { name: "Event Type" }).getByRole("checkbox").all()) {
      await box.setChecked(false);
    }
    await alice.getByLabel("PUSH_ARTIFACT", { exact: true }).check();
    await endpoint(alice).getByLabel("Endpoint URL", { exact: true }).fill(RX.ok);
    // the template belongs to the Custom format only
    const tpl = endpoint(alice).getByLabel("Payload Template");
    assert.ok(!(await tpl.isVisible()));
    await endpoint(alice).getByLabel("Payload Format").selectOption("Custom");
    assert.ok(await tpl.isVisible());
    // a template that does not compile: Preview names its line, nothing is saved
    await tpl.fill("PUSHED:{{ event_data.repository.repo_full_name }}\n{{ nope( }}");
    await endpoint(alice).getByRole("button", { name: "Preview" }).click();
    const failed = endpoint(alice).getByRole("alert").filter({ hasText: "Preview failed." });
    await failed.waitFor();
    assert.match(await failed.innerText(), /line 2/);
    await shot(alice, "custom-template-error");
    // a good one: the sample rendered in place, the form as typed
    await tpl.fill("PUSHED:{{ event_data.repository.repo_full_name }}:{{ event_data.resources[0].tag }} by {{ operator }}");
    await endpoint(alice).getByLabel("Content Type").fill("text/plain; charset=utf-8");
    await endpoint(alice).getByRole("button", { name: "Preview" }).click();
    await endpoint(alice).getByRole("status").filter({ hasText: "Preview of a sample PUSH_ARTIFACT event" }).waitFor();
    assert.match(await endpoint(alice).getByRole("status").filter({ hasText: "Preview of" }).innerText(), /text\/plain; charset=utf-8/);
    assert.match(await endpoint(alice).getByLabel("Preview payload").innerText(), /^PUSHED:prj\/[^:]+:\S+ by /);
    assert.equal(await alice.getByLabel("Name", { exact: true }).inputValue(), "custom", "the form stays as typed");
    // a chosen event type
    await endpoint(alice).getByLabel("Preview event type").selectOption("DELETE_ARTIFACT");
    await endpoint(alice).getByRole("button", { name: "Preview" }).click();
    await endpoint(alice).getByRole("status").filter({ hasText: "Preview of a sample DELETE_ARTIFACT event" }).waitFor();
    await shot(alice, "custom-template-preview");
    await alice.getByRole("button", { name: "Add", exact: true }).click();
    await rowOf(alice, "custom").waitFor();
    await ask("push prj/app:v3");
    let got = "";
    await until("the custom body delivered", async () => (got = await ask("body-with ok PUSHED:prj/app:v3")) !== "");
    const [ct, body] = got.split("|");
    assert.equal(ct, "text/plain; charset=utf-8");
    assert.match(body, /^PUSHED:prj\/app:v3 by \S+$/);
    // the edit form shows the stored template back
    await rowOf(alice, "custom").getByRole("button", { name: "Edit" }).click();
    await alice.getByRole("heading", { name: "Edit webhook custom" }).waitFor();
    assert.match(await endpoint(alice).getByLabel("Payload Template").inputValue(), /^PUSHED:/);
    assert.equal(await endpoint(alice).getByLabel("Payload Format").inputValue(), "Custom");
    await alice.getByRole("link", { name: "Cancel" }).click();
    await rowOf(alice, "custom").waitFor();
  });

  await flow("read-only pages without JavaScript", async () => {
    const nojs = await as(ALICE, { javaScriptEnabled: false });
    current = nojs;
    await goto(nojs, "/ui/projects/prj/webhooks");
    await rowOf(nojs, "ci").waitFor();
    await nojs.getByText("Last trigger of ci").click();
    await nojs.getByRole("table", { name: "Last trigger" }).first().waitFor();
    await executionsOf(nojs, "ci");
    await nojs.getByRole("table", { name: "Executions" }).waitFor();
    await nojs.context().close();
  });

  await flow("deactivate and delete with confirms, empty state", async () => {
    current = alice;
    await goto(alice, "/ui/projects/prj/webhooks");
    await rowOf(alice, "ci").getByRole("button", { name: "Deactivate" }).click();
    const dialog = alice.getByRole("dialog", { name: "Deactivate webhook “ci”?" });
    await dialog.waitFor();
    assert.match(await dialog.innerText(), /pending retries stop/);
    await shot(alice, "confirm-deactivate");
    await dialog.getByRole("button", { name: "Deactivate" }).click();
    await rowOf(alice, "ci").filter({ hasText: "Deactivated" }).waitFor();
    await rowOf(alice, "ci").getByRole("button", { name: "Enable" }).click();
    await alice.getByRole("dialog", { name: "Enable webhook “ci”?" }).getByRole("button", { name: "Enable" }).click();
    await rowOf(alice, "ci").filter({ hasText: "Enabled" }).waitFor();
    for (const name of ["ci", "failing", "retired", "custom"]) {
      await rowOf(alice, name).getByRole("button", { name: "Delete" }).click();
      const d = alice.getByRole("dialog", { name: `Delete webhook “${name}”?` });
      await d.waitFor();
      if (name === "ci") {
        await shot(alice, "confirm-delete");
        await d.getByRole("link", { name: "Cancel" }).click();
        await rowOf(alice, name).waitFor();
        await rowOf(alice, name).getByRole("button", { name: "Delete" }).click();
      }
      await alice.getByRole("dialog").getByRole("button", { name: "Delete" }).click();
      await alice.getByRole("heading", { name: "Webhooks" }).waitFor();
      assert.equal(await rowOf(alice, name).count(), 0);
    }
    await alice.getByText("No Webhook").waitFor();
  });

  for (const r of results) console.log(r);
  console.log("all flows passed");
} finally {
  await browser.close().catch(() => {});
  rmSync(profile, { recursive: true, force: true });
  input.close();
}
