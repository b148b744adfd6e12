// Debian's headless Chromium as the browser tests drive it, and a fresh page in it (a fresh
// context is a fresh, empty profile: playwright's own user data directory) whose console
// errors go to stderr. Used by play.mjs.
import { chromium } from "playwright-core";

export async function launch() {
  return chromium.launch({
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    headless: true,
    args: [
      "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
      "--disable-background-networking", "--disable-component-update", "--disable-sync",
      "--autoplay-policy=no-user-gesture-required",
    ],
  });
}

export async function freshPage(browser) {
  const context = await browser.newContext({ viewport: { width: 960, height: 540 } });
  const page = await context.newPage();
  page.on("console", (m) => { if (m.type() === "error") console.error("console: " + m.text()); });
  return page;
}
