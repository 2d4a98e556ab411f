// Drives the gateway's approvals console (/ui) in headless Chromium, as an operator would:
// enters the admin token, approves one pending call, denies another with a reason, waits for
// both decisions to appear in the live "latest decisions" list, reloads (the token is kept in
// sessionStorage), and saves a screenshot. Called by tests/approvals.rs; prints one JSON line.
//
// Environment: BASE (the gateway's http://host:port), TOKEN (an admin token), APPROVE and DENY
// (approval ids), REASON (the denial's reason), SCREENSHOT (a .png path), USER_DATA_DIR (a
// fresh directory), CHROMIUM (the browser), PLAYWRIGHT_CORE (the playwright-core package).
"use strict";

const { chromium } = require(process.env.PLAYWRIGHT_CORE || "playwright-core");

const env = (name) => {
  const v = process.env[name];
  if (!v) throw new Error(`${name} is not set`);
  return v;
};

// Chromium's launch is the one step that depends on the machine rather than on Tollgate: on a
// fresh, loaded CI machine a first launch has been seen to stall past its timeout. Each attempt
// gets its own profile directory and a minute; the third failure is reported as it is.
async function launch() {
  const attempts = 3;
  for (let attempt = 1; ; attempt++) {
    try {
      return await chromium.launchPersistentContext(`${env("USER_DATA_DIR")}/${attempt}`, {
        executablePath: env("CHROMIUM"),
        headless: true,
        args: [
          "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
          "--disable-background-networking", "--disable-component-update", "--disable-sync",
        ],
        viewport: { width: 1280, height: 760 },
        timeout: 60000,
      });
    } catch (e) {
      if (attempt === attempts) throw e;
      process.stderr.write(`chromium launch attempt ${attempt} failed, retrying: ${e.message.split("\n")[0]}\n`);
    }
  }
}

async function main() {
  const base = env("BASE");
  const context = await launch();
  context.setDefaultTimeout(30000);
  const page = context.pages()[0] || (await context.newPage());
  const problems = [];
  page.on("pageerror", (e) => problems.push(String(e)));
  await page.goto(`${base}/ui`);
  await page.fill("#token", env("TOKEN"));
  await page.click("#connect");
  const approve = env("APPROVE"), deny = env("DENY");
  await page.waitForSelector(`#pending tr[data-id="${approve}"]`);
  await page.waitForSelector(`#pending tr[data-id="${deny}"]`);
  const pendingBefore = await page.$$eval("#pending tbody tr", (rows) => rows.map((r) => ({
    id: r.dataset.id, tool: r.dataset.tool, cells: [...r.children].map((c) => c.textContent),
  })));
  await page.click(`#pending tr[data-id="${approve}"] button.approve`);
  await page.fill(`#pending tr[data-id="${deny}"] input.reason`, env("REASON"));
  await page.click(`#pending tr[data-id="${deny}"] button.deny`);
  await page.waitForSelector(`#decisions tr[data-id="${approve}"][data-verdict="approved"]`);
  await page.waitForSelector(`#decisions tr[data-id="${deny}"][data-verdict="denied"]`);
  await page.waitForSelector(`#pending tr[data-id="${approve}"]`, { state: "detached" });
  await page.waitForSelector(`#pending tr[data-id="${deny}"]`, { state: "detached" });
  // The token survives a reload (sessionStorage) and the list comes back from the server.
  await page.reload();
  await page.waitForSelector(`#decisions tr[data-id="${deny}"][data-verdict="denied"]`);
  await page.waitForSelector("#live.on");
  const decisions = await page.$$eval("#decisions tbody tr", (rows) => rows.map((r) => ({
    id: r.dataset.id, verdict: r.dataset.verdict,
    by: r.querySelector(".by").textContent, reason: r.querySelector(".reason").textContent,
  })));
  const pendingAfter = await page.$$eval("#pending tbody tr", (rows) => rows.map((r) => r.dataset.id));
  const who = await page.textContent("#who");
  await page.screenshot({ path: env("SCREENSHOT"), fullPage: true });
  await context.close();
  process.stdout.write(JSON.stringify({ pendingBefore, decisions, pendingAfter, who, problems }) + "\n");
}

main().catch((e) => {
  process.stderr.write(`console test failed: ${e && e.stack ? e.stack : e}\n`);
  process.exit(1);
});
