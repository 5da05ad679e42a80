// What open dashboards cost the web process: opens COUNT (200) feed connections to BASE_URL
// (each reads every event, as an open /dashboard does), and reads the CPU time and resident
// memory of WEB_PID from /proc over SECONDS (30) without them, then with them.
// Prints one JSON line. Run by `make bench-live` against `make up`.
import { readFileSync } from "node:fs";

const BASE = (process.env.BASE_URL || "http://127.0.0.1:8080").replace(/\/$/, "");
const PID = process.env.WEB_PID;
const COUNT = Number(process.env.COUNT || 200);
const SECONDS = Number(process.env.SECONDS || 30);
if (!PID) { console.error("WEB_PID is not set"); process.exit(2); }

const TICKS = 100; // USER_HZ on Linux
function sample() {
  const stat = readFileSync(`/proc/${PID}/stat`, "utf8");
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  const cpu = (Number(fields[11]) + Number(fields[12])) / TICKS;
  const rss = Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${PID}/status`, "utf8"))[1]) / 1024;
  return { cpu, rss, at: Date.now() };
}
async function measure() {
  const start = sample();
  await new Promise((r) => setTimeout(r, SECONDS * 1000));
  const end = sample();
  return { cpu_percent: +(100 * (end.cpu - start.cpu) / ((end.at - start.at) / 1000)).toFixed(2), rss_mib: +end.rss.toFixed(1) };
}

const idle = await measure();
const controller = new AbortController();
let events = 0;
let open = 0;
for (let i = 0; i < COUNT; i++) {
  fetch(`${BASE}/api/feed`, { signal: controller.signal })
    .then(async (response) => {
      open++;
      for await (const chunk of response.body) { events += (new TextDecoder().decode(chunk).match(/^event:/gm) || []).length; }
    })
    .catch(() => {});
}
await new Promise((r) => setTimeout(r, 3000));
const withDashboards = await measure();
controller.abort();
console.log(JSON.stringify({ dashboards: open, seconds: SECONDS, without: idle, with: withDashboards, events_received: events }));
process.exit(0);
