// Play a live DASH manifest with dash.js (from npm) in Debian's headless Chromium and report
// what the video element does, as one JSON line every half second on stdout:
//   {"t": seconds since the player was made, "currentTime", "frames" (decoded video frames),
//    "latency" (dash.js's live latency, seconds), "errors" (dash.js's error events)}
//
// Usage: node dash.mjs MANIFEST_URL SECONDS
// Driven by tests/e2e/tests/player.rs; the page is a blank one on the manifest's origin.
import { freshPage, launch } from "./chromium.mjs";
import { fileURLToPath } from "node:url";

const [url, secondsArg] = process.argv.slice(2);
const seconds = Number(secondsArg);
if (!url || !(seconds > 0)) {
  console.error("usage: node dash.mjs MANIFEST_URL SECONDS");
  process.exit(2);
}
const dashjs = fileURLToPath(new URL("node_modules/dashjs/dist/modern/umd/dash.all.min.js", import.meta.url));

const browser = await launch();
try {
  const page = await freshPage(browser);
  // The server's own origin, so that nothing is cross-origin.
  await page.goto(new URL("/", url).href, { waitUntil: "load" });
  await page.setContent("<video id=v muted autoplay playsinline style='width:100%'></video>");
  await page.addScriptTag({ path: dashjs });
  await page.evaluate((manifest) => {
    const errors = (window.dashErrors = []);
    const player = (window.dashPlayer = dashjs.MediaPlayer().create());
    player.on(dashjs.MediaPlayer.events.ERROR, (e) => {
      errors.push(JSON.stringify(e.error || e).slice(0, 200));
    });
    player.initialize(document.getElementById("v"), manifest, true);
  }, url);
  const started = Date.now();
  while ((Date.now() - started) / 1000 < seconds) {
    const t = (Date.now() - started) / 1000;
    const sample = await page.evaluate(() => {
      const v = document.getElementById("v");
      const q = v.getVideoPlaybackQuality ? v.getVideoPlaybackQuality() : null;
      let latency = null;
      try { latency = window.dashPlayer.getCurrentLiveLatency(); } catch (e) {}
      return {
        currentTime: v.currentTime,
        frames: q ? q.totalVideoFrames : 0,
        paused: v.paused,
        latency: Number.isFinite(latency) ? latency : null,
        errors: window.dashErrors,
      };
    });
    console.log(JSON.stringify({ t, ...sample }));
    await new Promise((r) => setTimeout(r, 500));
  }
} finally {
  await browser.close();
}
