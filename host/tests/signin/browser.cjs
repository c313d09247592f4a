// The browser leg of a sign-in, in a real browser (Debian's chromium through playwright-core):
// opens the verification link a client printed, checks the code is pre-filled but not submitted,
// approves (or denies), signs in at the IdP as the given user, and prints the page it ends on.
// Usage: node browser.cjs <verification_uri_complete> <user> <approve|deny>
// Prints "PAGE <h1> | <first paragraph>" and "CSP-VIOLATIONS <n>".
"use strict";
const { chromium } = require(process.env.PLAYWRIGHT_CORE || "playwright-core");

const [url, user, action] = process.argv.slice(2);
const fail = (msg) => { console.error("FAIL: " + msg); process.exit(1); };

(async () => {
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"],
  });
  const page = await browser.newPage();
  let violations = 0;
  page.on("console", (m) => { if (/Content Security Policy/i.test(m.text())) { violations++; console.error("CSP: " + m.text()); } });
  await page.goto(url);
  const code = await page.inputValue("input[name=user_code]");
  const expected = new URL(url).searchParams.get("user_code");
  if (code !== expected) fail(`the code field holds ${JSON.stringify(code)}, not ${expected}`);
  if (!page.url().startsWith(url.split("?")[0])) fail("the confirmation page moved on by itself");
  await Promise.all([page.waitForLoadState("load"), page.click(`button[value=${action}]`)]);
  if (action === "approve") {
    await page.waitForSelector("#login", { timeout: 15000 });
    await page.fill("#login", user);
    await Promise.all([page.waitForURL(/\/oauth\/callback/, { timeout: 15000 }), page.click("#submit")]);
  }
  await page.waitForSelector("h1", { timeout: 15000 });
  const h1 = (await page.textContent("h1")).trim();
  const p = ((await page.textContent("p").catch(() => "")) || "").trim();
  console.log(`PAGE ${h1} | ${p}`);
  console.log(`CSP-VIOLATIONS ${violations}`);
  await browser.close();
})().catch((e) => fail(String(e && e.stack || e)));
