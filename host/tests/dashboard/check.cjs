// Drives the dashboard in a real browser (Debian's chromium, playwright-core) against a seeded
// `conduit demo`: the charts show the API's numbers, "Promote to block" changes the mode through
// the API, "Revoke" revokes the key; nothing is fetched from anywhere but the admin listener.
// Usage: node check.cjs <admin-url> <admin-token> <screenshot.png>   (PLAYWRIGHT_CORE = module path)
"use strict";
const { chromium } = require(process.env.PLAYWRIGHT_CORE || "playwright-core");

const [admin, token, shot] = process.argv.slice(2);
const fail = (msg) => { console.error("FAIL: " + msg); process.exit(1); };
const api = async (method, path, body) => {
  const r = await fetch(admin + path, { method, headers: { authorization: "Bearer " + token, "content-type": "application/json" }, body: body && JSON.stringify(body) });
  if (!r.ok) fail(`${method} ${path}: ${r.status}`);
  return r.json();
};

(async () => {
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"],
  });
  const page = await browser.newPage({ viewport: { width: 1400, height: 1800 } });
  const foreign = [];
  page.on("request", (r) => { if (!r.url().startsWith(admin)) foreign.push(r.url()); });
  const consoleErrors = [];
  page.on("console", (m) => { if (m.type() === "error") consoleErrors.push(m.text()); });
  page.on("dialog", (d) => d.accept());

  // Without a token: the login form, and no data.
  await page.goto(admin + "/dashboard");
  if (!(await page.isVisible("#login"))) fail("no login form without a token");
  // With the token in the fragment: it is taken out of the URL and the data loads.
  await page.goto(admin + "/dashboard#token=" + encodeURIComponent(token));
  await page.waitForSelector("body[data-loaded=true]", { timeout: 20000 });
  if (page.url().includes(token)) fail("the token stayed in the URL");
  const shown = await page.textContent("#error");
  if (shown && shown.trim()) fail("the page shows an error: " + shown);

  // Spend by team: one bar per team, each carrying the API's cost, labelled in dollars.
  const spend = await api("GET", "/v1/spend?by=team");
  if (spend.lines.length < 2) fail("the demo should have spend for several teams");
  for (const line of spend.lines) {
    const bar = await page.$(`#spend-chart rect.bar[data-group="${line.group}"]`);
    if (!bar) fail("no bar for team " + line.group);
    const value = Number(await bar.getAttribute("data-value"));
    if (value !== line.cost_micros) fail(`bar ${line.group}: ${value} != ${line.cost_micros}`);
  }
  const labels = await page.$$eval("#spend-chart .bar-label", (ns) => ns.map((n) => n.textContent));
  const dollars = "$" + (spend.lines[0].cost_micros / 1e6).toFixed(2);
  if (!labels.some((l) => l.startsWith(dollars))) fail(`no label ${dollars} in ${labels}`);
  const total = spend.lines.reduce((a, l) => a + l.cost_micros, 0);
  const kpi = await page.textContent("#kpi-total");
  if (kpi !== "$" + (total / 1e6).toFixed(2)) fail(`total ${kpi} != ${total}`);
  // Models with no price (the demo's Codex uses gpt-6.2-sol) are flagged, with the fix.
  if (!spend.unpriced_models || !spend.unpriced_models.some((m) => m.model === "gpt-6.2-sol")) fail("the API does not list gpt-6.2-sol as unpriced: " + JSON.stringify(spend.unpriced_models));
  const badge = await page.textContent("#unpriced-badge");
  if (badge !== spend.unpriced_models.length + " unpriced model" + (spend.unpriced_models.length > 1 ? "s" : "")) fail("unpriced badge: " + badge);
  const unpricedText = await page.textContent("#unpriced");
  if (!unpricedText.includes("gpt-6.2-sol") || !unpricedText.includes("conduit prices import")) fail("unpriced box: " + unpricedText);
  // The model tab redraws from /v1/spend?by=model.
  await page.click('#spend-tabs button[data-by="model"]');
  const models = await api("GET", "/v1/spend?by=model");
  await page.waitForSelector(`#spend-chart rect.bar[data-group="${models.lines[0].group}"]`);

  // Context rot: one point per non-empty bucket on each curve, at the API's growth figures.
  const rot = await api("GET", "/v1/rot?by=all");
  const buckets = rot.groups[0].buckets;
  if (buckets.length < 4) fail("the demo should fill several context buckets");
  const points = await page.$$eval("#rot-chart circle.point.cost", (ns) => ns.map((n) => [n.dataset.bucket, Number(n.dataset.value)]));
  const expected = buckets.filter((b) => b.cost_growth != null).map((b) => [b.bucket, b.cost_growth]);
  if (JSON.stringify(points) !== JSON.stringify(expected)) fail(`rot points ${JSON.stringify(points)} != ${JSON.stringify(expected)}`);
  const rows = await page.$$eval("#rot-table tbody tr", (ns) => ns.map((n) => n.dataset.bucket));
  if (JSON.stringify(rows) !== JSON.stringify(buckets.map((b) => b.bucket))) fail("rot table rows " + rows);

  // Findings: promote an alert category to block; the API now says block.
  const stats = await api("GET", "/v1/findings/stats");
  const cat = Object.keys(stats.categories).find((c) => stats.modes[c] === "alert");
  if (!cat) fail("the demo should have an alert-mode finding category: " + JSON.stringify(stats));
  await page.click(`#findings-table button.promote[data-category="${cat}"]`);
  await page.waitForSelector(`#findings-table tr[data-category="${cat}"] .mode-block`, { timeout: 10000 });
  const after = await api("GET", "/v1/findings/stats");
  if (after.modes[cat] !== "block") fail(`mode of ${cat} is ${after.modes[cat]} after promoting`);
  const policies = await api("GET", "/v1/policies");
  if (policies.modes[cat] !== "block") fail("the policy listing does not show the new mode: " + JSON.stringify(policies.modes));

  // Keys: revoke one.
  const keys = (await api("GET", "/v1/keys")).keys;
  const victim = keys.find((k) => !k.revoked_at);
  await page.click(`#keys-table button[data-key="${victim.id}"]`);
  await page.waitForFunction((id) => [...document.querySelectorAll("#keys-table tr")].some((tr) => tr.dataset.key === id && tr.textContent.includes("revoked")), victim.id, { timeout: 10000 });
  const revoked = await api("GET", "/v1/keys/" + victim.id);
  if (!revoked.revoked_at) fail("the key was not revoked");

  await page.screenshot({ path: shot, fullPage: true });
  await browser.close();
  if (foreign.length) fail("requests left the admin origin: " + foreign.join(", "));
  if (consoleErrors.length) fail("console errors: " + consoleErrors.join(" | "));
  console.log(JSON.stringify({ ok: true, teams: spend.lines.length, buckets: buckets.length, promoted: cat, revoked: victim.id, screenshot: shot }));
})().catch((e) => fail(e.stack || String(e)));
