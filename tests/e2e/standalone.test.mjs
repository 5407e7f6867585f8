// The app started the way a user starts it (no WebDriver, no inspector): its window, titled
// "DocTune", comes up, and once its webview runs no process of it listens on any TCP, UDP or
// Unix socket. DOCTUNE_APP names the binary: the build's, or the one a .deb installed
// (tests/package/deb.sh).
import { test } from "node:test";
import assert from "node:assert/strict";
import { execFileSync, spawn } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { appProcessTree, listeningSockets } from "./procnet.mjs";

const APP = path.resolve(process.env.DOCTUNE_APP ?? "");
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

test("the app, started normally, has no listening socket", async () => {
  assert.ok(fs.existsSync(APP), `DOCTUNE_APP must point at the built app (got ${APP})`);
  assert.ok(process.env.DISPLAY, "needs a display (run under xvfb-run)");
  const home = fs.mkdtempSync(path.join(os.tmpdir(), "doctune-standalone-"));
  const env = { ...process.env, DOCTUNE_HOME: home };
  delete env.WEBKIT_INSPECTOR_SERVER;
  const app = spawn(APP, [], { env, stdio: ["ignore", "ignore", "inherit"] });
  const exited = new Promise((r) => app.on("exit", r));
  try {
    // Wait until the webview's processes run (WebKit starts them when the page loads).
    let pids = [];
    for (let i = 0; i < 200 && pids.length < 2; i++) {
      await sleep(100);
      pids = appProcessTree(APP).filter((p) => p === app.pid || isDescendant(p, app.pid));
    }
    assert.ok(pids.length >= 2, `the app's webview did not start (processes: ${pids})`);
    // The window is on the display under its title.
    let titled = false;
    for (let i = 0; i < 100 && !titled; i++) {
      titled = /"DocTune"/.test(windowTree());
      if (!titled) await sleep(100);
    }
    assert.ok(titled, "no window titled DocTune on the display");
    await sleep(1500);
    pids = appProcessTree(APP).filter((p) => p === app.pid || isDescendant(p, app.pid));
    const listening = listeningSockets(pids);
    assert.deepEqual(listening, [], `listening sockets: ${JSON.stringify(listening)}`);
  } finally {
    app.kill("SIGTERM");
    await Promise.race([exited, sleep(5000)]);
    fs.rmSync(home, { recursive: true, force: true });
  }
});

/** The display's window tree; empty when a window vanished while xwininfo walked it (a window
 * the webview creates and destroys while starting makes xwininfo fail with BadWindow). */
function windowTree() {
  try {
    return execFileSync("xwininfo", ["-root", "-tree"], { encoding: "utf8", stdio: ["ignore", "pipe", "ignore"] });
  } catch (e) {
    return String(e.stdout ?? "");
  }
}

function isDescendant(pid, ancestor) {
  let p = pid;
  for (let i = 0; i < 64 && p > 1; i++) {
    try {
      const stat = fs.readFileSync(`/proc/${p}/stat`, "utf8");
      p = Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[1]);
    } catch {
      return false;
    }
    if (p === ancestor) return true;
  }
  return false;
}
