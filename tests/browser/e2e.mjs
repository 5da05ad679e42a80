// The site in a real browser: Debian's headless Chromium driven by playwright-core.
// Run by tests/browser.rs (make test) against a web process and its consumers on the real stack:
//   BASE_URL     the site under test (its pages are opened)
//   OTHER_URL    a second web replica on the same topic (bids placed there must show on BASE_URL)
//   AUCTION_ID   an open auction
//   SCREENSHOT_DIR  where the pages' screenshots go
//   MODE=check (default): the end-to-end checks; exits 1 naming the first that fails.
//   MODE=latency COUNT=50: bids through OTHER_URL's API, time from each 202 to the bid on
//                BASE_URL's dashboard; prints median, p99 and max (a benchmark, not a test).
// Prints one JSON line of results on success.
import { readFileSync, mkdirSync } from "node:fs";
import { createRequire } from "node:module";
import { chromium } from "playwright-core";

const require = createRequire(import.meta.url);
const BASE = process.env.BASE_URL.replace(/\/$/, "");
const OTHER = (process.env.OTHER_URL || BASE).replace(/\/$/, "");
const AUCTION = process.env.AUCTION_ID || "1";
const SHOTS = process.env.SCREENSHOT_DIR || "target/browser";
const MODE = process.env.MODE || "check";
const CHROMIUM = process.env.CHROMIUM || "/usr/bin/chromium";
const SCRIPT_NAME = "<script>alert(1)</script>";

mkdirSync(SHOTS, { recursive: true });

function fail(message) {
  throw new Error(message);
}

async function apiBid(base, name, price) {
  const response = await fetch(`${base}/api/auctions/${AUCTION}/bids`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ name, price }),
  });
  const body = await response.json().catch(() => ({}));
  if (response.status !== 202) fail(`POST ${base}/api/auctions/${AUCTION}/bids (${name}, ${price}) answered ${response.status} ${JSON.stringify(body)}`);
  return { bid: body, acked: Date.now() };
}

async function minimumNext(base) {
  const response = await fetch(`${base}/api/auctions/${AUCTION}`);
  if (!response.ok) fail(`GET /api/auctions/${AUCTION} answered ${response.status}`);
  const body = await response.json();
  return Number(body.minimum_next_bid);
}

const browser = await chromium.launch({ executablePath: CHROMIUM, args: ["--no-sandbox", "--disable-gpu"] });
const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
const outside = [];
const dialogs = [];
const consoleErrors = [];
context.on("request", (request) => {
  const url = request.url();
  if (!url.startsWith(BASE + "/") && !url.startsWith("data:")) outside.push(url);
});
context.on("page", (page) => {
  page.on("dialog", (dialog) => {
    dialogs.push(dialog.message());
    dialog.dismiss().catch(() => {});
  });
  page.on("console", (message) => {
    if (message.type() === "error") consoleErrors.push(message.text());
  });
  page.on("pageerror", (error) => consoleErrors.push(String(error)));
});

const axeSource = readFileSync(require.resolve("axe-core/axe.min.js"), "utf8");
async function accessibility(page, what) {
  // Evaluated through the DevTools protocol, which the page's Content-Security-Policy does not govern.
  await page.evaluate(axeSource);
  const result = await page.evaluate(() => window.axe.run(document, { runOnly: ["wcag2a", "wcag2aa", "best-practice"] }));
  const serious = result.violations.filter((v) => v.impact === "serious" || v.impact === "critical" || v.impact === "moderate");
  if (serious.length) {
    fail(`${what}: accessibility violations: ` + serious.map((v) => `${v.id} (${v.impact}): ${v.help} at ${v.nodes.slice(0, 3).map((n) => n.target.join(" ")).join(", ")}`).join("; "));
  }
  return result.violations.length;
}

async function waitUntil(page, predicate, arg, timeout, what) {
  try {
    await page.waitForFunction(predicate, arg, { timeout, polling: 20 });
  } catch (e) {
    fail(`${what} (waited ${timeout} ms)`);
  }
}

const results = {};
try {
  if (MODE === "latency") {
    const count = Number(process.env.COUNT || 50);
    const dashboard = await context.newPage();
    await dashboard.goto(`${BASE}/dashboard`);
    await waitUntil(dashboard, () => document.querySelector("#feed-state.live"), null, 10000, "the dashboard's feed never went live");
    await dashboard.evaluate(() => {
      window.__seen = {};
      new MutationObserver(() => {
        for (const li of document.querySelectorAll("#bid-feed li[data-bid-id]")) {
          const id = li.getAttribute("data-bid-id");
          if (!(id in window.__seen)) window.__seen[id] = Date.now();
        }
      }).observe(document.getElementById("bid-feed"), { childList: true });
    });
    let price = Math.ceil(await minimumNext(OTHER)) + 1000;
    const latencies = [];
    for (let i = 0; i < count; i++) {
      price += 10;
      const { bid, acked } = await apiBid(OTHER, `Latency ${i}`, price.toFixed(2));
      await waitUntil(dashboard, (id) => window.__seen[id] !== undefined, bid.bid_id, 10000, `bid ${bid.bid_id} never showed on the dashboard`);
      const seen = await dashboard.evaluate((id) => window.__seen[id], bid.bid_id);
      latencies.push(Math.max(0, seen - acked));
    }
    latencies.sort((a, b) => a - b);
    const at = (q) => latencies[Math.min(latencies.length - 1, Math.ceil(q * latencies.length) - 1)];
    results.bids = count;
    results.median_ms = at(0.5);
    results.p99_ms = at(0.99);
    results.max_ms = latencies[latencies.length - 1];
  } else {
    // 1. The homepage lists the auction; it is kept open to see it move by itself.
    const home = await context.newPage();
    await home.goto(`${BASE}/`);
    await home.waitForSelector(`#auction-${AUCTION}`);
    await home.screenshot({ path: `${SHOTS}/home.png`, fullPage: true });
    results.home_violations = await accessibility(home, "/");

    // 2. A bid through the form: "Bid added!" with the bid id.
    const bidder = await context.newPage();
    await bidder.goto(`${BASE}/auctions/${AUCTION}`);
    const minimum = (await bidder.textContent("#minimum-next")).replace(/,/g, "");
    const myPrice = (Number(minimum) + 5).toFixed(2);
    await bidder.fill("#name", "Ann Browser");
    await bidder.fill("#price", myPrice);
    await Promise.all([bidder.waitForNavigation(), bidder.click("form button[type=submit]")]);
    const placed = await bidder.textContent("#placed").catch(() => null);
    if (!placed || !placed.includes("Bid added!")) fail(`after the form: no "Bid added!" on ${bidder.url()}: ${placed}`);
    const bidId = await bidder.textContent("#placed code");
    if (!/^[0-9a-f-]{36}$/.test(bidId)) fail(`"Bid added!" shows no bid id: ${placed}`);
    results.form_bid_id = bidId;
    await bidder.screenshot({ path: `${SHOTS}/auction-bid-added.png`, fullPage: true });
    results.auction_violations = await accessibility(bidder, `/auctions/${AUCTION}`);

    // 3. The dashboard goes live and shows the auction.
    const dashboard = await context.newPage();
    await dashboard.goto(`${BASE}/dashboard`);
    await waitUntil(dashboard, () => document.querySelector("#feed-state.live"), null, 10000, "the dashboard's feed never went live");
    await waitUntil(dashboard, (id) => document.querySelector(`#open-auctions tr[data-auction="${id}"]`), AUCTION, 5000, "the dashboard never listed the open auction");

    // 4. A bid placed through the API of the other replica, by a bidder whose name is markup,
    //    appears on the open dashboard without a reload, as text.
    const higher = (Number(myPrice) + 1000).toFixed(2);
    const { bid, acked } = await apiBid(OTHER, SCRIPT_NAME, higher);
    await waitUntil(dashboard, (id) => document.querySelector(`#bid-feed li[data-bid-id="${id}"]`), bid.bid_id, 5000, `the API bid ${bid.bid_id} never appeared on the dashboard`);
    results.dashboard_latency_ms = Date.now() - acked;
    const shownName = await dashboard.textContent(`#bid-feed li[data-bid-id="${bid.bid_id}"] .name`);
    if (shownName !== SCRIPT_NAME) fail(`the bidder's name shows as ${JSON.stringify(shownName)}, not as the text ${JSON.stringify(SCRIPT_NAME)}`);
    const injected = await dashboard.evaluate(() => document.querySelectorAll("#bid-feed script, #open-auctions script").length);
    if (injected) fail("a bidder's name became a <script> element on the dashboard");
    // The board's figures arrive within a second of its tick; wait for the panels to fill.
    await waitUntil(dashboard, () => document.getElementById("h-rate").textContent !== "…", null, 6000, "the pipeline health never showed");
    await waitUntil(dashboard, () => document.querySelectorAll("#top-bidders li").length > 0, null, 15000, "the top bidders never showed");
    await dashboard.screenshot({ path: `${SHOTS}/dashboard.png`, fullPage: true });
    results.dashboard_violations = await accessibility(dashboard, "/dashboard");

    // Readable on a phone: nothing wider than the screen.
    const phone = await context.newPage();
    await phone.setViewportSize({ width: 390, height: 844 });
    await phone.goto(`${BASE}/dashboard`);
    await waitUntil(phone, () => document.querySelectorAll("#bid-feed li").length > 0 && document.querySelector("#open-auctions tbody tr"), null, 6000, "the dashboard on a phone never filled");
    const overflow = await phone.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
    if (overflow > 0) fail(`on a 390 px wide screen the dashboard is ${overflow} px too wide`);
    await phone.screenshot({ path: `${SHOTS}/dashboard-phone.png`, fullPage: true });
    await phone.close();

    // 5. The bidder's page moved by itself and says they were outbid; so did the homepage.
    const money = Number(higher).toLocaleString("en-US", { minimumFractionDigits: 2, maximumFractionDigits: 2 });
    await waitUntil(bidder, (m) => document.getElementById("highest").textContent === m, money, 5000, `the auction page's highest bid never became ${money}`);
    await waitUntil(bidder, () => !document.getElementById("outbid").hidden, null, 5000, "the auction page never said the bidder was outbid");
    const outbid = await bidder.textContent("#outbid");
    if (!outbid.includes("You were outbid") || !outbid.includes(SCRIPT_NAME)) fail(`the outbid notice reads ${JSON.stringify(outbid)}`);
    await bidder.screenshot({ path: `${SHOTS}/auction-outbid.png`, fullPage: true });
    await waitUntil(home, ([id, m]) => document.querySelector(`#auction-${id} [data-field=price]`).textContent === m, [AUCTION, money], 5000, `the homepage's card never showed ${money}`);

    if (dialogs.length) fail(`a page opened a dialog: ${dialogs.join(", ")}`);
    if (outside.length) fail(`pages requested something outside the site: ${[...new Set(outside)].join(", ")}`);
    if (consoleErrors.length) fail(`the browser console shows errors: ${consoleErrors.join(" | ")}`);
  }
  console.log(JSON.stringify(results));
  await browser.close();
} catch (e) {
  console.error(e.message || e);
  await browser.close().catch(() => {});
  process.exit(1);
}
