// Open a shardcast player page in Debian's headless Chromium and report what the video
// element does, as one JSON line every half second on stdout:
//   {"t": seconds since the page was opened, "currentTime", "frames" (decoded video frames),
//    "state" (the page's stream state), "engine", "paused", "readyState", "formats" (those
//    the page offers), "mediaErrors", "networkErrors", "latency" (hls.js's or dash.js's own
//    estimate) and with hls.js "behindWallClock" (the playhead's PROGRAM-DATE-TIME against
//    the clock), seconds}
// Screenshots are taken at the times asked for.
//
// Usage: node play.mjs URL SECONDS [SCREENSHOT_PATH@SECONDS ...]
// Driven by engine/tests/player.rs; playwright-core is installed by tests/run.sh (npm ci).
import { freshPage, launch } from "./chromium.mjs";

const [url, secondsArg, ...shots] = process.argv.slice(2);
const seconds = Number(secondsArg);
if (!url || !(seconds > 0)) {
  console.error("usage: node play.mjs URL SECONDS [SCREENSHOT_PATH@SECONDS ...]");
  process.exit(2);
}
const screenshots = shots.map((s) => {
  const at = s.lastIndexOf("@");
  return { path: s.slice(0, at), at: Number(s.slice(at + 1)), done: false };
});

const browser = await launch();
try {
  const page = await freshPage(browser);
  const opened = Date.now();
  await page.goto(url, { waitUntil: "load" });
  while ((Date.now() - opened) / 1000 < seconds) {
    const t = (Date.now() - opened) / 1000;
    const sample = await page.evaluate(() => {
      const v = document.querySelector("video");
      const s = window.shardcast || {};
      const q = v.getVideoPlaybackQuality ? v.getVideoPlaybackQuality() : null;
      return {
        currentTime: v.currentTime,
        frames: q ? q.totalVideoFrames : (v.webkitDecodedFrameCount || 0),
        state: s.state, engine: s.engine, starts: s.starts, formats: s.formats || "",
        paused: v.paused, readyState: v.readyState,
        mediaErrors: s.mediaErrors || [], networkErrors: s.networkErrors || [],
        latency: s.latency == null ? null : s.latency,
        behindWallClock: s.behindWallClock == null ? null : s.behindWallClock,
      };
    });
    console.log(JSON.stringify({ t, ...sample }));
    for (const shot of screenshots) {
      if (!shot.done && t >= shot.at) {
        await page.screenshot({ path: shot.path });
        shot.done = true;
      }
    }
    await new Promise((r) => setTimeout(r, 500));
  }
} finally {
  await browser.close();
}
