// End-to-end tests of the real DocTune window: the built app under Xvfb, driven over WebDriver
// (tauri-driver → WebKitWebDriver). Run through `scripts/test`, which sets:
//   DOCTUNE_APP   absolute path of the built doctune-app binary
//   TAURI_DRIVER  path of the tauri-driver binary
//   E2E_ARTIFACTS folder for screenshots
// Each test saves a screenshot there.
import { after, afterEach, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { spawn, execFileSync } from "node:child_process";
import fs from "node:fs";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { remote } from "webdriverio";
import { appProcessTree, inspectorServerPort, listeningSockets, portOf } from "./procnet.mjs";

const APP = path.resolve(process.env.DOCTUNE_APP ?? "");
const DRIVER = process.env.TAURI_DRIVER ?? "tauri-driver";
const ARTIFACTS = path.resolve(process.env.E2E_ARTIFACTS ?? "artifacts");
const PORT = 4444;
const FAKE_HUB = process.env.FAKE_HUB ?? "";

let driver;
let browser;
let work;
let INBOX;
let fakeHub;

async function waitForPort(port, ms) {
  const until = Date.now() + ms;
  while (Date.now() < until) {
    const ok = await new Promise((resolve) => {
      const s = net.connect(port, "127.0.0.1", () => {
        s.end();
        resolve(true);
      });
      s.on("error", () => resolve(false));
    });
    if (ok) return;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`tauri-driver did not listen on ${port} within ${ms} ms`);
}

/** Screenshots of the window as it is, in the light and the dark theme (`NAME-light.png`, `NAME-dark.png`). */
async function shot(name) {
  fs.mkdirSync(ARTIFACTS, { recursive: true });
  const chosen = await browser.execute(() => document.documentElement.dataset.theme ?? null);
  for (const theme of ["light", "dark"]) {
    await browser.execute((t) => (document.documentElement.dataset.theme = t), theme);
    await browser.saveScreenshot(path.join(ARTIFACTS, `${name}-${theme}.png`));
  }
  await browser.execute((t) => {
    if (t) document.documentElement.dataset.theme = t;
    else delete document.documentElement.dataset.theme;
  }, chosen);
}

let inboxSeq = 0;
/**
 * Hands the app a user action WebDriver cannot perform (src-tauri/src/e2e.rs, built with the
 * `e2e` feature): a drop on the window, or the answer of the next native dialog.
 */
async function userAction(action) {
  const name = path.join(INBOX, `${String(++inboxSeq).padStart(6, "0")}.json`);
  fs.writeFileSync(`${name}.tmp`, JSON.stringify(action));
  fs.renameSync(`${name}.tmp`, name);
  // Taken in by the app (a dialog's answer must be queued before the button opens the dialog).
  await browser.waitUntil(async () => !fs.existsSync(name), {
    timeout: 10_000,
    timeoutMsg: `the app did not take ${name}`,
  });
}

/** How many times the window's counter `name` has moved (adds or imports finished). */
const counter = (name) => browser.execute((n) => {
  const v = window[n];
  return Array.isArray(v) ? v.length : (v ?? 0);
}, name);

/** Drops `paths` on the window (received in Rust as a real drop is) and waits for the report. */
async function dropPaths(paths) {
  const before = await counter("__doctuneAddReports");
  await userAction({ drop: paths });
  await browser.waitUntil(async () => (await counter("__doctuneAddReports")) > before, {
    timeout: 20_000,
    timeoutMsg: `no add report after dropping ${paths.join(", ")}`,
  });
  return browser.execute(() => window.__doctuneAddReports.at(-1));
}

/** Chooses `dir` in the model-folder dialog the Import button opens, and waits for the import. */
async function importFolder(dir) {
  const before = await counter("__doctuneImports");
  await userAction({ choose: [dir] });
  await browser.$('[data-testid="import"]').click();
  await browser.waitUntil(async () => (await counter("__doctuneImports")) > before, {
    timeout: 20_000,
    timeoutMsg: `no import finished for ${dir}`,
  });
}

before(async () => {
  assert.ok(fs.existsSync(APP), `DOCTUNE_APP must point at the built app (got ${APP})`);
  work = fs.mkdtempSync(path.join(os.tmpdir(), "doctune-e2e-"));
  const home = path.join(work, "doctune-home");
  INBOX = path.join(work, "inbox");
  fs.mkdirSync(INBOX);
  // The loopback test Hub (crates/doctune-hub/tests/support): its endpoint is its first line.
  assert.ok(fs.existsSync(FAKE_HUB), `FAKE_HUB must point at the fake-hub example (got ${FAKE_HUB})`);
  fakeHub = spawn(FAKE_HUB, [], { stdio: ["pipe", "pipe", "inherit"] });
  const endpoint = await new Promise((resolve, reject) => {
    fakeHub.stdout.once("data", (d) => resolve(String(d).trim().split("\n")[0]));
    fakeHub.once("error", reject);
  });
  driver = spawn(DRIVER, ["--port", String(PORT)], {
    // XDG_DATA_HOME: the freedesktop trash a deleted project goes to, inside the test's folder.
    env: {
      ...process.env,
      DOCTUNE_HOME: home,
      HF_ENDPOINT: endpoint,
      DOCTUNE_E2E_INBOX: INBOX,
      XDG_DATA_HOME: path.join(work, "xdg-data"),
    },
    stdio: ["ignore", "inherit", "inherit"],
  });
  const exited = new Promise((_, reject) => {
    driver.on("error", (e) => reject(new Error(`cannot start tauri-driver (${DRIVER}): ${e.message}`)));
    driver.on("exit", (code) => reject(new Error(`tauri-driver exited with ${code}`)));
  });
  await Promise.race([waitForPort(PORT, 20_000), exited]);
  exited.catch(() => {});
  browser = await remote({
    hostname: "127.0.0.1",
    port: PORT,
    logLevel: "warn",
    // tauri-driver can answer before WebKitWebDriver is ready; retry the session request.
    connectionRetryCount: 6,
    connectionRetryTimeout: 60_000,
    capabilities: {
      browserName: "wry",
      "wdio:enforceWebDriverClassic": true,
      "tauri:options": { application: APP },
    },
  });
  // Taller than the default window, so screenshots show a view whole (the charts below the
  // Train form); a driver that cannot resize keeps the window as it is.
  await browser.setWindowSize(1200, 1040).catch(() => {});
});

after(async () => {
  try {
    await browser?.deleteSession();
  } finally {
    driver?.kill();
    fakeHub?.stdin.end();
    if (work) fs.rmSync(work, { recursive: true, force: true });
  }
});

/** The app's listening sockets other than the automation socket WebDriver asked for. */
function unexpectedListeners() {
  const pids = appProcessTree(APP);
  assert.ok(pids.length >= 1, "the app process was not found");
  const allowed = new Set(pids.map(inspectorServerPort).filter((p) => p !== null));
  return listeningSockets(pids).filter((s) => !(s.proto.startsWith("tcp") && allowed.has(portOf(s.local))));
}

describe("DocTune window", () => {
  // The no-listener promise holds through the whole flow: checked after every step, while the
  // step's jobs (extraction, a pull, training, an export, the demo) may still be running.
  afterEach(() => {
    if (browser) assert.deepEqual(unexpectedListeners(), [], "a listening socket appeared during this step");
  });

  test("opens with its title and the Documents view", async () => {
    const view = await browser.$('[data-testid="documents-view"]');
    await view.waitForDisplayed({ timeout: 20_000 });
    assert.equal(await browser.getTitle(), "DocTune");
    // The empty state says what to do and offers it: "New project" puts the cursor in the name.
    const empty = await browser.$('[data-testid="no-project"]');
    assert.match(await empty.getText(), /Create a project for your documents/);
    await browser.$('[data-testid="no-project-new-project"]').click();
    assert.equal(await browser.execute(() => document.activeElement?.id), "new-project-name");
    await shot("01-start");
  });

  test("creates a project from the sidebar", async () => {
    await browser.$('[data-testid="new-project-name"]').setValue("Lab handbook");
    await browser.$('[data-testid="create-project"]').click();
    const item = await browser.$('[data-testid="project-item"]');
    await item.waitForDisplayed({ timeout: 10_000 });
    assert.match(await item.getText(), /Lab handbook/);
    await browser.$('[data-testid="dropzone"]').waitForDisplayed({ timeout: 10_000 });
    await shot("02-project");
  });

  test("adding files lists them with type and size", async () => {
    const src = path.join(work, "src");
    fs.mkdirSync(src);
    fs.writeFileSync(path.join(src, "notes.md"), "# Safety\n\nWear goggles.\n");
    fs.writeFileSync(path.join(src, "manual.pdf"), "%PDF-1.7\n" + "x".repeat(2038));
    fs.writeFileSync(path.join(src, "copy-of-notes.md"), "# Safety\n\nWear goggles.\n");
    const report = await dropPaths([
      path.join(src, "notes.md"),
      path.join(src, "manual.pdf"),
      path.join(src, "copy-of-notes.md"),
    ]);
    assert.equal(report.added.length, 2, JSON.stringify(report));
    assert.equal(report.duplicates.length, 1);

    const rows = await documentRows();
    assert.deepEqual(rows, [
      { name: "notes.md", type: "Markdown", size: "24 B" },
      { name: "manual.pdf", type: "PDF", size: "2.0 KB" },
    ]);
    assert.match(
      await browser.$('[data-testid="status"]').getText(),
      /Added 2 documents, 1 duplicate not copied again/,
    );
    assert.match(
      await browser.$('[data-testid="add-duplicate"]').getText(),
      /copy-of-notes\.md: same content as notes\.md/,
    );
    // The copy is in the project; the original is untouched.
    const home = path.join(work, "doctune-home", "projects", "lab-handbook", "documents");
    assert.deepEqual(fs.readdirSync(home).sort(), ["manual.pdf", "notes.md"]);
    await shot("03-documents");
  });

  test("extracting text shows each document's status and a preview", async () => {
    await browser.$('[data-testid="extract"]').click();
    const status = await browser.$('[data-testid="extract-status"]');
    await browser.waitUntil(async () => /Text extracted/.test(await status.getText().catch(() => "")), { timeout: 20_000 });
    const cells = await browser.$$('[data-testid="document-status"]').map((c) => c.getText());
    assert.match(cells[0], /^ok · 21 chars/, cells.join(" | "));
    // manual.pdf is 2 KB of "x" after a PDF header: damaged, and said so with its name.
    assert.match(cells[1], /^error/, cells.join(" | "));
    assert.match(cells[1], /manual\.pdf: damaged or truncated: not a readable PDF/, cells[1]);
    await browser.$('[data-testid="document-name"]').click();
    const text = await browser.$('[data-testid="preview-text"]');
    await text.waitForDisplayed({ timeout: 10_000 });
    assert.equal(await text.getText(), "Safety\n\nWear goggles.");
    await shot("03b-extracted");
  });

  test("a document is removed with its copy, after a confirmation", async () => {
    const src = path.join(work, "src");
    fs.writeFileSync(path.join(src, "old.md"), "# Old\n\nOut of date.\n");
    const report = await dropPaths([path.join(src, "old.md")]);
    assert.equal(report.added.length, 1, JSON.stringify(report));
    const docs = path.join(work, "doctune-home", "projects", "lab-handbook", "documents");
    assert.ok(fs.existsSync(path.join(docs, "old.md")));
    const rows = await browser.$$('[data-testid="document-row"]');
    assert.equal(rows.length, 3);
    await rows[2].$('[data-testid="document-remove"]').click();
    await rows[2].$('[data-testid="document-remove-yes"]').click();
    await browser.waitUntil(async () => (await browser.$$('[data-testid="document-row"]').length) === 2, {
      timeout: 10_000,
    });
    assert.match(await browser.$('[data-testid="remove-status"]').getText(), /Removed old\.md/);
    assert.ok(!fs.existsSync(path.join(docs, "old.md")), "the copy is gone");
    assert.ok(fs.existsSync(path.join(src, "old.md")), "the original is untouched");
    assert.deepEqual((await documentRows()).map((r) => r.name), ["notes.md", "manual.pdf"]);
  });

  test("bad paths show a clear error naming the file", async () => {
    const missing = path.join(work, "nowhere", "missing.pdf");
    const chosen = path.join(work, "chosen");
    fs.mkdirSync(chosen);
    fs.writeFileSync(path.join(work, "secret.txt"), "not for the project");
    fs.symlinkSync(path.join(work, "secret.txt"), path.join(chosen, "escape.txt"));
    const fifo = path.join(work, "pipe");
    execFileSync("mkfifo", [fifo]);

    const report = await dropPaths([missing, chosen, fifo]);
    assert.equal(report.failed.length, 3, JSON.stringify(report));
    const messages = await browser.$$('[data-testid="add-failure"]').map((f) => f.getText());
    assert.ok(messages.includes(`${missing}: no such file or folder`), messages.join("\n"));
    assert.ok(
      messages.some((m) => m.startsWith(path.join(chosen, "escape.txt")) && m.includes("outside the folder you chose")),
      messages.join("\n"),
    );
    assert.ok(messages.some((m) => m.startsWith(fifo) && m.includes("FIFO")), messages.join("\n"));
    assert.match(await browser.$('[data-testid="status"]').getText(), /3 files could not be added/);
    // Still two documents: nothing of the bad paths was copied.
    assert.equal((await documentRows()).length, 2);
    // The page itself cannot name a file: a path instead of a grant is refused.
    const refused = await browser.executeAsync((p, done) => {
      window.__TAURI_INTERNALS__.invoke("import_model", { grant: p, copy: true }).then(
        () => done({ code: "accepted" }),
        (e) => done(e),
      );
    }, path.join(work, "secret.txt"));
    assert.equal(refused.code, "outsideScope", JSON.stringify(refused));
    await shot("04-bad-paths");
  });

  test("the System view shows the machine", async () => {
    await browser.$('[data-testid="nav-system"]').click();
    const view = await browser.$('[data-testid="system-view"]');
    await view.waitForDisplayed({ timeout: 10_000 });
    await browser.waitUntil(async () => /Keychain/.test(await view.getText()), { timeout: 15_000 });
    assert.match(await browser.$('[data-testid="gpu"]').getText(), /NVIDIA|no NVIDIA GPU found/);
    // scripts/test unlocks a throwaway gnome-keyring for the run.
    assert.match(await browser.$('[data-testid="keychain"]').getText(), /reachable and unlocked/);
    await shot("05-system");
    await browser.$('[data-testid="nav-documents"]').click();
  });

  test("Settings stores the token in the keychain and never shows it", async () => {
    await browser.$('[data-testid="nav-settings"]').click();
    const state = await browser.$('[data-testid="token-state"]');
    await browser.waitUntil(async () => /No token stored/.test(await state.getText()), { timeout: 10_000 });
    await browser.$('[data-testid="token-input"]').setValue("hf_e2eSECRETtoken");
    await browser.$('[data-testid="token-save"]').click();
    await browser.waitUntil(async () => /A token is stored/.test(await state.getText()), { timeout: 10_000 });
    assert.equal(await browser.$('[data-testid="token-input"]').getValue(), "", "the field is cleared");
    assert.ok(!(await browser.$("body").getText()).includes("SECRET"));
    await shot("06-settings");
    // The theme: chosen in Settings, on the document at once, kept for the next start.
    await browser.$('[data-testid="theme-dark"]').click();
    assert.equal(await browser.execute(() => document.documentElement.dataset.theme), "dark");
    assert.equal(await browser.execute(() => localStorage.getItem("doctune.theme")), "dark");
    const bg = await browser.execute(() => getComputedStyle(document.documentElement).backgroundColor);
    await browser.$('[data-testid="theme-light"]').click();
    assert.notEqual(await browser.execute(() => getComputedStyle(document.documentElement).backgroundColor), bg);
    await browser.$('[data-testid="theme-system"]').click();
    assert.equal(await browser.execute(() => document.documentElement.dataset.theme ?? null), null);
    await browser.$('[data-testid="token-delete"]').click();
    await browser.waitUntil(async () => /No token stored/.test(await state.getText()), { timeout: 10_000 });
    // Nothing DocTune wrote holds the token.
    for (const f of walk(path.join(work, "doctune-home"))) {
      assert.ok(!fs.readFileSync(f).includes("hf_e2eSECRETtoken"), `token found in ${f}`);
    }
  });

  test("Models imports a model folder and lists it", async () => {
    await browser.$('[data-testid="nav-models"]').click();
    await browser.$('[data-testid="models-view"]').waitForDisplayed({ timeout: 10_000 });
    const dir = path.join(work, "tiny-model");
    writeTinyModel(dir);
    await importFolder(dir);
    const row = await browser.$('[data-testid="model-row"]');
    await row.waitForDisplayed({ timeout: 10_000 });
    const cells = await row.$$("td").map((c) => c.getText());
    assert.deepEqual(cells.slice(0, 4), ["tiny-model", "Llama", "792", "F32"]);
    // Whether fine-tuning it fits this machine, from Rust's memory estimate.
    const fit = row.$('[data-testid="model-fit"]');
    await browser.waitUntil(async () => /✓ LoRA · ✓ full/.test(await fit.getText()), { timeout: 10_000 });
    // A folder with only a pickle is refused with the reason.
    const pickle = path.join(work, "pickle-model");
    fs.mkdirSync(pickle);
    fs.writeFileSync(path.join(pickle, "config.json"), JSON.stringify({ architectures: ["LlamaForCausalLM"] }));
    fs.writeFileSync(path.join(pickle, "pytorch_model.bin"), "\x80\x02");
    await importFolder(pickle);
    const err = await browser.$('[data-testid="models-error"]');
    await err.waitForDisplayed({ timeout: 10_000 });
    assert.match(await err.getText(), /has only PyTorch pickle weights \(pytorch_model\.bin\)/);
    await shot("07-models");

    // Pull from the (loopback) Hub through the window: job, progress events, then the library.
    await browser.$('[data-testid="pull-repo"]').setValue("org/tiny");
    await browser.$('[data-testid="pull"]').click();
    const status = await browser.$('[data-testid="models-status"]');
    await browser.waitUntil(async () => /Pulled org\/tiny/.test(await status.getText().catch(() => "")), {
      timeout: 20_000,
    });
    const names = await browser.$$('[data-testid="model-row"]').map((r) => r.$("td").getText());
    assert.deepEqual(names, ["org/tiny", "tiny-model"]);
    // A pickle-only repository fails with the reason, through the job's failed event.
    await browser.$('[data-testid="pull-repo"]').setValue("org/pickle");
    await browser.$('[data-testid="pull"]').click();
    const modelsError = async () => browser.$('[data-testid="models-error"]').getText().catch(() => "");
    await browser.waitUntil(async () => /org\/pickle: has only PyTorch pickle weights/.test(await modelsError()), {
      timeout: 20_000,
    });
    await shot("08-pull");
    await browser.$('[data-testid="nav-documents"]').click();
  });

  test("the Playground streams a reply from a library model", async () => {
    // A tiny random Qwen3 (crates/doctune-models/tests/fixtures): real tokenizer and template.
    const fixture = path.resolve(import.meta.dirname, "../../crates/doctune-models/tests/fixtures/qwen3");
    await browser.$('[data-testid="nav-models"]').click();
    await importFolder(fixture);
    await browser.$('[data-testid="nav-playground"]').click();
    await browser.$('[data-testid="playground-view"]').waitForDisplayed({ timeout: 10_000 });
    await browser.$('[data-testid="playground-model"]').selectByVisibleText("qwen3 · Qwen3");
    await browser.$('[data-testid="playground-chat"]').click();
    await browser.$('[data-testid="playground-prompt"]').setValue("The quick brown fox");
    await browser.$('[data-testid="playground-run"]').click();
    const stats = browser.$('[data-testid="playground-stats"]');
    await browser.waitUntil(async () => /\d+ tokens · /.test(await stats.getText().catch(() => "")), {
      timeout: 30_000,
    });
    assert.match(await stats.getText(), /^\d+ tokens · [\d.]+ tokens\/s · /);
    assert.ok((await browser.$('[data-testid="playground-output"]').getText()).length > 0);
    await shot("09-playground");
    await browser.$('[data-testid="nav-documents"]').click();
  });

  test("the Dataset view builds an instruction set and previews the trained tokens", async () => {
    // An instruction file in the project (the qwen3 model of the Playground test is in the library).
    const file = path.join(work, "qa.jsonl");
    fs.writeFileSync(
      file,
      '{"messages":[{"role":"user","content":"What is DocTune?"},{"role":"assistant","content":"A local fine-tuning app."}]}\n' +
        '{"messages":[{"role":"wizard","content":"?"}]}\n',
    );
    await browser.$('[data-testid="nav-documents"]').click();
    const report = await dropPaths([file]);
    assert.equal(report.added.length, 1, JSON.stringify(report));
    await browser.$('[data-testid="nav-dataset"]').click();
    await browser.$('[data-testid="dataset-view"]').waitForDisplayed({ timeout: 10_000 });
    await browser.$('[data-testid="dataset-model"]').selectByVisibleText("qwen3");
    await browser.$('[data-testid="dataset-input"]').click();
    await browser.$('[data-testid="dataset-seq-len"]').setValue("256");
    await browser.$('[data-testid="dataset-build"]').click();
    const stats = browser.$('[data-testid="dataset-stats"]');
    await stats.waitForDisplayed({ timeout: 30_000 });
    assert.match(await stats.getText(), /1 bad row\b/);
    const example = browser.$('[data-testid="dataset-example"]');
    await example.waitForDisplayed({ timeout: 10_000 });
    assert.match(await example.$("mark").getText(), /A local fine-tuning app\./);
    assert.match(await example.getText(), /What is DocTune\?/);
    await shot("10-dataset");
    // Questions from the project's documents, by the templates: each pair keeps its passage.
    await browser.$('[data-testid="mode-qa"]').click();
    await browser.$('[data-testid="qa-generator"]').selectByVisibleText("templates (no model)");
    await browser.$('[data-testid="dataset-build"]').click();
    const qaReport = browser.$('[data-testid="qa-report"]');
    await qaReport.waitForDisplayed({ timeout: 30_000 });
    assert.match(await qaReport.getText(), /notes\.md/);
    const source = browser.$('[data-testid="dataset-source"]');
    await source.waitForDisplayed({ timeout: 10_000 });
    assert.match(await source.getText(), /From notes\.md, “Safety”/);
    await source.$("summary").click();
    assert.match(await source.$("blockquote").getText(), /Wear goggles\./);
    await shot("10b-dataset-qa");
    await browser.$('[data-testid="nav-documents"]').click();
  });

  test("the Train view trains a few steps and draws the loss", async () => {
    await browser.$('[data-testid="nav-train"]').click();
    await browser.$('[data-testid="train-view"]').waitForDisplayed({ timeout: 10_000 });
    await browser.$('[data-testid="train-model"]').selectByVisibleText("qwen3");
    await browser.$('[data-testid="train-steps"]').setValue("6");
    const estimate = browser.$('[data-testid="train-estimate"]');
    await estimate.waitForDisplayed({ timeout: 10_000 });
    assert.match(await estimate.getText(), /Estimated peak memory .* available/);
    // The devices this build and machine offer (the CPU here), and the CPU's precisions: f32,
    // and bf16 where the CPU has AVX-512 BF16 (the flags the kernel needs, as Linux lists them).
    const device = browser.$('[data-testid="train-device"]');
    await browser.waitUntil(async () => (await device.$$("option").length) > 0, { timeout: 10_000 });
    assert.equal(await device.getValue(), "cpu");
    const precisions = await browser.$('[data-testid="train-precision"]').$$("option").map((o) => o.getValue());
    const flags = (fs.readFileSync("/proc/cpuinfo", "utf8").match(/^flags\s*:(.*)$/m)?.[1] ?? "").trim().split(/\s+/);
    const bf16 = ["avx512f", "avx512bw", "avx512_bf16"].every((f) => flags.includes(f));
    assert.deepEqual(precisions, bf16 ? ["f32", "bf16"] : ["f32"]);
    await browser.$('[data-testid="train-start"]').click();
    const run = browser.$('[data-testid="train-run"]');
    await browser.waitUntil(async () => /step 6\/6 · done/.test(await run.getText().catch(() => "")), {
      timeout: 60_000,
    });
    const points = await browser.$('[data-testid="train-line"]').getAttribute("points");
    assert.equal(points.trim().split(/\s+/).length, 6, points);
    // The learning rate and throughput charts, and readable ticks on the loss chart.
    assert.equal((await browser.$('[data-testid="train-lr"]').getAttribute("points")).trim().split(/\s+/).length, 6);
    assert.ok((await browser.$('[data-testid="train-chart"]').$$("text.tick").length) >= 6);
    // The cursor reads values at a step (keyboard: focus the chart, then an arrow key).
    await browser.execute((el) => el.focus(), await browser.$('[data-testid="train-chart"] svg'));
    await browser.keys(["End"]);
    assert.match(await browser.$('[data-testid="train-chart-readout"]').getText(), /step 6 · .* training loss \d/);
    assert.match(await browser.$('[data-testid="train-hardware"]').getText(), /CPU|GPU|NVIDIA/);
    await shot("11-train");
    await browser.$('[data-testid="nav-documents"]').click();
  });

  test("the Playground compares the tuned run with its base model, side by side", async () => {
    await browser.$('[data-testid="nav-playground"]').click();
    await browser.$('[data-testid="playground-view"]').waitForDisplayed({ timeout: 10_000 });
    const compare = browser.$('[data-testid="playground-compare"]');
    await browser.waitUntil(async () => (await compare.$$("option").length) > 1, { timeout: 10_000 });
    await compare.selectByIndex(1);
    // The model follows the run: its base model, not a choice.
    assert.equal(await browser.$('[data-testid="playground-model"]').isEnabled(), false);
    await browser.$('[data-testid="playground-prompt"]').setValue("What is DocTune?");
    await browser.$('[data-testid="playground-run"]').click();
    const panes = () => browser.$$('[data-testid="playground-pane"]');
    await browser.waitUntil(
      async () => {
        const stats = await panes().map((p) => p.$('[data-testid="playground-stats"]').getText().catch(() => ""));
        return stats.length === 2 && stats.every((t) => /\d+ tokens · /.test(t));
      },
      { timeout: 60_000, timeoutMsg: "base and tuned replies did not both finish" },
    );
    const titles = await panes().map((p) => p.$("h2").getText());
    assert.match(titles[0], /^Base model/);
    assert.match(titles[1], /^Tuned · run /);
    // Each side's perplexity on the run's held-out examples (the base one measured before step 1).
    const ppl = await panes().map((p) => p.$('[data-testid="playground-perplexity"]').getText());
    const ok = ppl.every((t) => /^Held-out perplexity [\d.]+$/.test(t)) || ppl.every((t) => /^No held-out perplexity/.test(t));
    assert.ok(ok, ppl.join(" | "));
    for (const p of await panes()) assert.ok((await p.$('[data-testid="playground-output"]').getText()).length > 0);
    await shot("11a-compare");
    await browser.$('[data-testid="nav-documents"]').click();
  });

  test("the Export view writes a GGUF of the run and lists its files", async () => {
    await browser.$('[data-testid="nav-export"]').click();
    await browser.$('[data-testid="export-view"]').waitForDisplayed({ timeout: 10_000 });
    await browser.$('[data-testid="export-format"]').selectByAttribute("value", "gguf");
    await browser.$('[data-testid="export-quant"]').selectByAttribute("value", "q8_0");
    // The expected size and the free space, before anything is written.
    const estimate = browser.$('[data-testid="export-estimate"]');
    await browser.waitUntil(async () => /About \d.* free/.test(await estimate.getText()), { timeout: 10_000 });
    await browser.$('[data-testid="export-start"]').click();
    const done = browser.$('[data-testid="export-done"]');
    await done.waitForDisplayed({ timeout: 60_000 });
    const files = await browser.$$('[data-testid="export-file"]').map((f) => f.getText());
    assert.ok(files.some((f) => /^\S+\.gguf/.test(f)), files.join(" | "));
    assert.ok(files.some((f) => /manifest\.json|README\.md/.test(f)), files.join(" | "));
    assert.ok(await browser.$('[data-testid="export-show"]').isExisting(), "each export has Show in folder");
    await shot("11b-export");
    await browser.$('[data-testid="nav-documents"]').click();
  });

  test("a finished run is deleted to the trash after a confirmation; its export stays", async () => {
    await browser.$('[data-testid="nav-train"]').click();
    await browser.$('[data-testid="train-view"]').waitForDisplayed({ timeout: 10_000 });
    const runs = path.join(work, "doctune-home", "projects", "lab-handbook", "runs");
    const before = fs.readdirSync(runs).filter((n) => !n.startsWith("."));
    assert.equal(before.length, 1, before.join(", "));
    await browser.$('[data-testid="train-delete"]').click();
    await browser.$('[data-testid="train-discard-yes"]').click();
    await browser.waitUntil(async () => /moved to the trash/.test(await browser.$('[data-testid="train-warning"]').getText().catch(() => "")), {
      timeout: 10_000,
    });
    assert.deepEqual(fs.readdirSync(runs).filter((n) => !n.startsWith(".")), []);
    assert.ok(fs.existsSync(path.join(work, "xdg-data", "Trash", "files", before[0])), "the run is in the trash");
    const exports = path.join(work, "doctune-home", "projects", "lab-handbook", "exports");
    assert.equal(fs.readdirSync(exports).filter((n) => !n.startsWith(".")).length, 1);
    await browser.$('[data-testid="nav-documents"]').click();
  });

  test("Try the demo trains a model from scratch and the Train view shows its run live", async () => {
    await browser.$('[data-testid="try-demo"]').click();
    // The demo creates its project, extracts its guide, trains a tokenizer and a tiny model,
    // then the window switches to the Train view with the run live.
    const live = browser.$('[data-testid="train-live"]');
    // Twenty steps in, so the screenshot (the README's first picture) shows a curve.
    await browser.waitUntil(async () => /step ([2-9]\d|\d{3})/.test(await live.getText().catch(() => "")), {
      timeout: 180_000,
      timeoutMsg: "the demo's run did not show live in the Train view",
    });
    assert.match(await browser.$('[data-testid="demo-stage"]').getText(), /training/);
    const item = await browser.$$('[data-testid="project-item"]').map((i) => i.getText());
    assert.ok(item.some((t) => /DocTune demo/.test(t)), JSON.stringify(item));
    await shot("12-demo-train");
    // Pause stops the demo; its run keeps its checkpoint for the next demo to resume.
    await browser.$('[data-testid="train-pause"]').click();
    await browser.waitUntil(async () => !(await live.isExisting()), { timeout: 30_000 });
    await browser.$('[data-testid="nav-documents"]').click();
  });

  test("a project is renamed, then deleted to the trash after a confirmation", async () => {
    await browser.$('[data-testid="new-project-name"]').setValue("Scratch pad");
    await browser.$('[data-testid="create-project"]').click();
    const actions = browser.$('[data-testid="project-actions"]');
    await actions.waitForDisplayed({ timeout: 10_000 });
    await browser.$('[data-testid="rename-project"]').click();
    const input = browser.$('[data-testid="rename-input"]');
    await input.clearValue();
    await input.setValue("Scratch pad, old");
    await browser.$('[data-testid="rename-save"]').click();
    const names = async () => browser.$$('[data-testid="project-item"]').map((i) => i.getText());
    await browser.waitUntil(async () => (await names()).some((n) => /Scratch pad, old/.test(n)), { timeout: 10_000 });
    await browser.$('[data-testid="delete-project"]').click();
    const confirm = browser.$('[data-testid="delete-confirm"]');
    assert.match(await confirm.getText(), /Move “Scratch pad, old” .* to the trash\?/);
    await shot("13-delete-confirm");
    await browser.$('[data-testid="delete-trash"]').click();
    const notice = browser.$('[data-testid="notice"]');
    await notice.waitForDisplayed({ timeout: 10_000 });
    assert.match(await notice.getText(), /“Scratch pad, old” was moved to the trash/);
    assert.ok(!(await names()).some((n) => /Scratch pad/.test(n)));
    // In the freedesktop trash, whole, where the file manager can restore it.
    const trashed = path.join(work, "xdg-data", "Trash", "files", "scratch-pad");
    assert.ok(fs.existsSync(path.join(trashed, "project.json")), `${trashed} is not in the trash`);
  });

  test("under WebDriver, the app listens only on the automation socket WebDriver asked for", async () => {
    // WebKitWebDriver drives the browser through WebKit's inspector server, which it asks for
    // with WEBKIT_INSPECTOR_SERVER; that socket is the harness's. standalone.test.mjs proves the
    // app started normally listens on nothing at all.
    const listening = unexpectedListeners();
    assert.deepEqual(listening, [], `listening sockets: ${JSON.stringify(listening)}`);
  });
});

/** Every regular file below `dir`. */
function walk(dir) {
  const out = [];
  for (const e of fs.readdirSync(dir, { withFileTypes: true })) {
    const p = path.join(dir, e.name);
    if (e.isDirectory()) out.push(...walk(p));
    else if (e.isFile()) out.push(p);
  }
  return out;
}

/** A one-layer Llama-style model folder: config.json and an all-zero F32 model.safetensors. */
function writeTinyModel(dir) {
  const [vocab, hidden, inter] = [16, 8, 16];
  fs.mkdirSync(dir, { recursive: true });
  fs.writeFileSync(
    path.join(dir, "config.json"),
    JSON.stringify({
      architectures: ["LlamaForCausalLM"],
      vocab_size: vocab,
      hidden_size: hidden,
      intermediate_size: inter,
      num_hidden_layers: 1,
      num_attention_heads: 2,
      num_key_value_heads: 2,
      tie_word_embeddings: true,
    }),
  );
  const shapes = {
    "model.embed_tokens.weight": [vocab, hidden],
    "model.layers.0.self_attn.q_proj.weight": [hidden, hidden],
    "model.layers.0.self_attn.k_proj.weight": [hidden, hidden],
    "model.layers.0.self_attn.v_proj.weight": [hidden, hidden],
    "model.layers.0.self_attn.o_proj.weight": [hidden, hidden],
    "model.layers.0.mlp.gate_proj.weight": [inter, hidden],
    "model.layers.0.mlp.up_proj.weight": [inter, hidden],
    "model.layers.0.mlp.down_proj.weight": [hidden, inter],
    "model.layers.0.input_layernorm.weight": [hidden],
    "model.layers.0.post_attention_layernorm.weight": [hidden],
    "model.norm.weight": [hidden],
  };
  const header = {};
  let offset = 0;
  for (const [name, shape] of Object.entries(shapes)) {
    const bytes = shape.reduce((a, b) => a * b, 1) * 4;
    header[name] = { dtype: "F32", shape, data_offsets: [offset, offset + bytes] };
    offset += bytes;
  }
  const json = Buffer.from(JSON.stringify(header));
  const n = Buffer.alloc(8);
  n.writeBigUInt64LE(BigInt(json.length));
  fs.writeFileSync(path.join(dir, "model.safetensors"), Buffer.concat([n, json, Buffer.alloc(offset)]));
}

/** The Documents table as [{ name, type, size }]. */
async function documentRows() {
  return browser.$$('[data-testid="document-row"]').map(async (row) => ({
    name: (await row.$('[data-testid="document-name"]').getText()).trim(),
    type: await row.$('[data-testid="document-type"]').getText(),
    size: await row.$('[data-testid="document-size"]').getText(),
  }));
}
