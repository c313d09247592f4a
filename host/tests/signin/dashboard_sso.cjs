// Dashboard SSO in a real browser: sign in through the IdP, land on the dashboard with the roles
// the IdP groups give, and try what the role may and may not do — through the page's own session
// (cookie + CSRF header), without the header, and from another origin on the same site.
// Usage: node dashboard_sso.cjs <admin-url> <idp-url> <user> <key-id>
// Prints one JSON line of what happened.
"use strict";
const { chromium } = require(process.env.PLAYWRIGHT_CORE || "playwright-core");

const [admin, idp, user, keyId] = process.argv.slice(2);
const fail = (msg) => { console.error("FAIL: " + msg); process.exit(1); };

(async () => {
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"],
  });
  const context = await browser.newContext();
  const page = await context.newPage();
  const out = { user };
  await page.goto(admin + "/dashboard");
  await page.waitForSelector("#sso:not([hidden])", { timeout: 15000 });
  await Promise.all([page.waitForURL(/\/interaction\//, { timeout: 15000 }), page.click("#sso a")]);
  await page.fill("#login", user);
  await page.click("#submit");
  await page.waitForLoadState("load");
  if (!page.url().startsWith(admin + "/dashboard")) {
    out.refused = (await page.textContent("h1")).trim();
    console.log(JSON.stringify(out));
    await browser.close();
    return;
  }
  await page.waitForSelector("body[data-loaded=true]", { timeout: 20000 });
  out.who = (await page.textContent("#who")).trim();
  out.roles = await page.evaluate(() => document.body.dataset.roles);
  const cookies = await context.cookies(admin);
  const session = cookies.find((c) => c.name === "conduit_admin");
  out.cookie = session && { httpOnly: session.httpOnly, sameSite: session.sameSite };
  out.promoteDisabled = await page.evaluate(() => [...document.querySelectorAll("button.promote")].every((b) => b.disabled));
  // Through the page's session, with its CSRF token.
  out.put = await page.evaluate(async () => {
    const send = async (path, body, withCsrf) => (await fetch(path, {
      method: "PUT",
      headers: Object.assign({ "content-type": "application/json" }, withCsrf ? { "x-conduit-csrf": csrf } : {}),
      body: JSON.stringify(body),
    })).status;
    return {
      budget: await send("/v1/budgets/team:payments", { daily_micros: 7000000 }, true),
      mode: await send("/v1/policies/modes/secrets", { mode: "alert" }, true),
      budgetWithoutCsrf: await send("/v1/budgets/team:payments", { daily_micros: 1 }, false),
    };
  });
  // Another origin of the same site (the IdP's, another port of 127.0.0.1) posting with the cookie.
  const other = await context.newPage();
  await other.goto(idp + "/.well-known/openid-configuration");
  await other.evaluate(async ([url]) => {
    try { await fetch(url, { method: "POST", credentials: "include", mode: "no-cors" }); } catch (_) {}
  }, [admin + "/v1/keys/" + keyId + "/revoke"]);
  console.log(JSON.stringify(out));
  await browser.close();
})().catch((e) => fail(String(e && e.stack || e)));
