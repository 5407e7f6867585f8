import { describe, expect, it } from "vitest";
import type { DatasetSummary, DocumentEntry, ModelEntry, RunInfo } from "./api";
import { baseName, formatDate, humanBytes, humanDuration, niceTicks, pipelineSteps, shortHash, splitBySpans, summarizeAdd, tickLabel } from "./format";

describe("humanBytes", () => {
  it("uses bytes below a KiB and one decimal above", () => {
    expect(humanBytes(0)).toBe("0 B");
    expect(humanBytes(1023)).toBe("1023 B");
    expect(humanBytes(1536)).toBe("1.5 KB");
    expect(humanBytes(2 * 1024 ** 3)).toBe("2.0 GB");
  });
});

describe("shortHash / baseName / formatDate", () => {
  it("shortens hashes", () => {
    expect(shortHash("8308cc372b77cd665969724964a425be")).toBe("8308cc372b77");
  });
  it("takes the last path part on any OS", () => {
    expect(baseName("/home/a/report.pdf")).toBe("report.pdf");
    expect(baseName("C:\\Users\\a\\notes.md")).toBe("notes.md");
    expect(baseName("dir/")).toBe("dir");
  });
  it("keeps unparseable dates as they are", () => {
    expect(formatDate("not a date")).toBe("not a date");
    expect(formatDate("2026-01-02T03:04:05Z", "en-GB")).toMatch(/2026/);
  });
});

describe("summarizeAdd", () => {
  const base = { added: [], duplicates: [], failed: [], skippedHidden: 0, cancelled: false };
  it("says nothing happened when nothing did", () => {
    expect(summarizeAdd(base)).toBe("Nothing to add.");
  });
  it("counts each outcome with the right plural", () => {
    const doc = {
      name: "a",
      file: "a",
      sizeBytes: 1,
      sha256: "x",
      format: "text",
      addedAt: "",
      source: "a",
    };
    expect(
      summarizeAdd({
        ...base,
        added: [doc, doc],
        duplicates: [{ path: "b", existing: "a", sha256: "x" }],
        failed: [{ path: "c", code: "notFound", message: "c: no such file" }],
        skippedHidden: 3,
      }),
    ).toBe(
      "Added 2 documents, 1 duplicate not copied again, 1 file could not be added, 3 hidden files skipped.",
    );
  });
});

import { humanCount } from "./format";

describe("humanCount", () => {
  it("writes parameter counts like model cards", () => {
    expect(humanCount(999)).toBe("999");
    expect(humanCount(12_300)).toBe("12.3K");
    expect(humanCount(4_200)).toBe("4.2K");
    expect(humanCount(494_032_768)).toBe("494M");
    expect(humanCount(1_543_714_304)).toBe("1.5B");
    expect(humanCount(70_553_706_496)).toBe("71B");
  });
  it("labels families", () => {
  });
});


describe("humanDuration", () => {
  it("reads like the command line's ETA", () => {
    expect(humanDuration(44.6)).toBe("45 s");
    expect(humanDuration(200)).toBe("3 min 20 s");
    expect(humanDuration(7500)).toBe("2 h 05 min");
    expect(humanDuration(Number.NaN)).toBe("0 s");
  });
});

describe("splitBySpans", () => {
  it("marks trained runs by code point, not UTF-16 unit", () => {
    expect(splitBySpans("🙂ab<e>", [[1, 3]])).toEqual([
      { text: "🙂", trained: false },
      { text: "ab", trained: true },
      { text: "<e>", trained: false },
    ]);
    expect(splitBySpans("abc", [])).toEqual([{ text: "abc", trained: false }]);
    expect(splitBySpans("abc", [[0, 3]])).toEqual([{ text: "abc", trained: true }]);
  });
});

describe("niceTicks / tickLabel", () => {
  it("covers the range with round steps", () => {
    const { ticks, step } = niceTicks(2.31, 5.87, 5);
    expect(step).toBe(1);
    expect(ticks).toEqual([2, 3, 4, 5, 6]);
    expect(niceTicks(0, 200, 4).ticks).toEqual([0, 50, 100, 150, 200]);
  });
  it("reads small spacings without float noise", () => {
    const { ticks, step } = niceTicks(0.1, 0.42, 4);
    expect(step).toBe(0.1);
    expect(ticks).toEqual([0.1, 0.2, 0.3, 0.4, 0.5]);
    expect(ticks.map((t) => tickLabel(t, step))).toEqual(["0.1", "0.2", "0.3", "0.4", "0.5"]);
  });
  it("widens a flat range and handles learning rates", () => {
    expect(niceTicks(3, 3).ticks.length).toBeGreaterThan(1);
    const lr = niceTicks(0, 2e-4, 4);
    expect(lr.ticks.at(-1)).toBeCloseTo(2e-4);
    expect(tickLabel(2e-4, lr.step)).toBe("2e-4");
    expect(tickLabel(1500, 500)).toBe("1,500");
    expect(niceTicks(NaN, 1).ticks).toEqual([]);
  });
});

describe("pipelineSteps", () => {
  const doc = (extracted: boolean) => ({ name: "a.md", extraction: extracted ? {} : undefined }) as unknown as DocumentEntry;
  const run = (steps: number, totalSteps: number | null, adapter: string | null) =>
    ({ id: "r", steps, totalSteps, adapter }) as unknown as RunInfo;
  const dataset = { meta: { stats: { trainExamples: 1204 } } } as unknown as DatasetSummary;
  const model = {} as ModelEntry;

  it("asks a new project for documents first", () => {
    const s = pipelineSteps({ documents: [], datasets: [], models: [], runs: [], exports: [] }, true);
    expect(s.map((x) => x.view)).toEqual(["documents", "dataset", "models", "train", "playground", "export", "system", "settings"]);
    expect(s[0]).toMatchObject({ state: "add files", todo: true });
    expect(s.filter((x) => x.todo)).toHaveLength(1);
    expect(s[2].state).toBe("choose a base model");
  });
  it("says what each step has and points at the next one", () => {
    const s = pipelineSteps({ documents: [doc(true), doc(false), doc(true)], datasets: [dataset], models: [model], runs: [run(150, 200, null)], exports: [] }, true);
    expect(s[0].state).toBe("3 documents, 2 extracted");
    expect(s[1].state).toBe("1,204 examples");
    expect(s[2].state).toBe("1 model in the library");
    expect(s[3].state).toBe("run: step 150/200");
    expect(s.some((x) => x.todo)).toBe(false);
    const done = pipelineSteps({ documents: [doc(true)], datasets: [dataset], models: [model], runs: [run(200, 200, "/a")], exports: [] }, true);
    expect(done[3].state).toBe("run done: 200 steps");
    expect(done[4].state).toBe("compare 1 tuned run");
    expect(done[5]).toMatchObject({ state: "ready to export", todo: true });
  });
  it("without a project, says to open one", () => {
    expect(pipelineSteps(null, false)[0]).toMatchObject({ state: "open a project", todo: true });
    expect(pipelineSteps(null, false).filter((x) => x.todo)).toHaveLength(1);
  });
});
