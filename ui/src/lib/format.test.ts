import { describe, expect, it } from "vitest";
import { baseName, formatDate, humanBytes, humanDuration, shortHash, splitBySpans, summarizeAdd } from "./format";

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
