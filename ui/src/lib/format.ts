// Small pure helpers for showing values; unit-tested in format.test.ts.
import type { AddReport, DatasetSummary, DocumentEntry, ExportInfo, ModelEntry, RunInfo } from "./api";

/** `1.5 MB`-style sizes (powers of 1024, as file managers show them). */
export function humanBytes(n: number): string {
  const units = ["B", "KB", "MB", "GB", "TB"];
  let v = n;
  let i = 0;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return i === 0 ? `${n} B` : `${v.toFixed(1)} ${units[i]}`;
}

/** The first 12 hex digits of a hash, enough to tell documents apart at a glance. */
export function shortHash(sha256: string): string {
  return sha256.slice(0, 12);
}

/** A date in the user's locale; the raw string when it does not parse. */
export function formatDate(rfc3339: string, locale?: string): string {
  const d = new Date(rfc3339);
  if (Number.isNaN(d.getTime())) return rfc3339;
  return d.toLocaleString(locale, { dateStyle: "medium", timeStyle: "short" });
}

/** The last part of a path, whichever separator it uses. */
export function baseName(path: string): string {
  const parts = path.split(/[\\/]/).filter((p) => p.length > 0);
  return parts.length ? parts[parts.length - 1] : path;
}

/** One sentence that says what an add did, for the status line. */
export function summarizeAdd(r: AddReport): string {
  const parts: string[] = [];
  const n = (k: number, one: string, many: string) => `${k} ${k === 1 ? one : many}`;
  if (r.added.length) parts.push(`added ${n(r.added.length, "document", "documents")}`);
  if (r.duplicates.length)
    parts.push(`${n(r.duplicates.length, "duplicate", "duplicates")} not copied again`);
  if (r.failed.length) parts.push(`${n(r.failed.length, "file", "files")} could not be added`);
  if (r.skippedHidden) parts.push(`${n(r.skippedHidden, "hidden file", "hidden files")} skipped`);
  if (r.cancelled) parts.push("cancelled");
  if (!parts.length) return "Nothing to add.";
  const s = parts.join(", ");
  return s[0].toUpperCase() + s.slice(1) + ".";
}

/** Parameter counts the way model cards write them: 494M, 1.5B, 12.3K. */
export function humanCount(n: number): string {
  if (n >= 1e9) return `${(n / 1e9).toFixed(n >= 1e10 ? 0 : 1)}B`;
  if (n >= 1e6) return `${(n / 1e6).toFixed(n >= 1e7 ? 0 : 1)}M`;
  if (n >= 1e3) return `${(n / 1e3).toFixed(1)}K`;
  return String(n);
}

/**
 * Splits `text` into runs marked trained or not, from spans in Unicode code points (as the
 * dataset stores them; JavaScript strings index UTF-16 units, so the text is split by code point).
 */
export function splitBySpans(text: string, spans: [number, number][]): { text: string; trained: boolean }[] {
  const chars = Array.from(text);
  const out: { text: string; trained: boolean }[] = [];
  let at = 0;
  for (const [a, b] of [...spans].sort((x, y) => x[0] - y[0])) {
    if (a > at) out.push({ text: chars.slice(at, a).join(""), trained: false });
    if (b > Math.max(a, at)) out.push({ text: chars.slice(Math.max(a, at), b).join(""), trained: true });
    at = Math.max(at, b);
  }
  if (at < chars.length) out.push({ text: chars.slice(at).join(""), trained: false });
  return out;
}

/** Seconds left as people read them: "45 s", "3 min 20 s", "2 h 05 min" (as Rust's human_duration). */
export function humanDuration(secs: number): string {
  const s = Number.isFinite(secs) && secs > 0 ? Math.round(secs) : 0;
  if (s < 60) return `${s} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min ${String(s % 60).padStart(2, "0")} s`;
  return `${Math.floor(s / 3600)} h ${String(Math.floor((s % 3600) / 60)).padStart(2, "0")} min`;
}

/**
 * About `count` evenly spaced round values (1, 2 or 5 × 10ⁿ apart) that cover [lo, hi], for a
 * chart's axis; `step` is their spacing (its decimals say how many digits a label needs).
 */
export function niceTicks(lo: number, hi: number, count = 5): { ticks: number[]; step: number } {
  if (!Number.isFinite(lo) || !Number.isFinite(hi)) return { ticks: [], step: 1 };
  if (hi < lo) [lo, hi] = [hi, lo];
  if (hi === lo) {
    const pad = Math.abs(lo) * 0.05 || 0.5;
    lo -= pad;
    hi += pad;
  }
  const raw = (hi - lo) / Math.max(count, 1);
  const mag = 10 ** Math.floor(Math.log10(raw));
  const norm = raw / mag;
  const step = (norm <= 1 ? 1 : norm <= 2 ? 2 : norm <= 5 ? 5 : 10) * mag;
  const first = Math.floor(lo / step + 1e-9) * step;
  const ticks: number[] = [];
  for (let v = first; v <= hi + step * (1 - 1e-9); v += step) {
    // Rounded to the step's precision so 0.30000000000000004 reads 0.3.
    ticks.push(Number(v.toFixed(Math.max(0, -Math.floor(Math.log10(step))) + 1)));
  }
  return { ticks, step };
}

/** A tick's label with the digits its spacing needs: 0.25 → "0.25", 1000 → "1,000", 2e-4 → "2e-4". */
export function tickLabel(v: number, step: number): string {
  if (v === 0) return "0";
  if (Math.abs(v) < 1e-3 || Math.abs(v) >= 1e6) {
    const digits = Math.max(0, Math.floor(Math.log10(Math.abs(v))) - Math.floor(Math.log10(step)));
    return v.toExponential(Math.min(digits, 3)).replace("e+", "e");
  }
  const decimals = Math.max(0, -Math.floor(Math.log10(step) + 1e-9));
  return v.toLocaleString("en-US", { minimumFractionDigits: decimals, maximumFractionDigits: decimals });
}

/** What the open project has at each step, as the sidebar reads it. */
export interface PipelineState {
  documents: DocumentEntry[];
  datasets: DatasetSummary[];
  models: ModelEntry[];
  runs: RunInfo[];
  exports: ExportInfo[];
}

/** A sidebar entry: the view, its name, its state in a few words, and whether it waits for the person. */
export interface PipelineStep {
  view: string;
  label: string;
  state: string;
  todo: boolean;
}

/** "1 example", "1,204 examples". */
export const plural = (n: number, one: string, many = `${one}s`) => `${n.toLocaleString("en-US")} ${n === 1 ? one : many}`;

/**
 * The pipeline's steps in order — Documents, Dataset, Models, Train, Playground (compare), Export —
 * then System and Settings, each with what the open project has there ("3 documents, 2
 * extracted", "1,204 examples", "step 150/200"); the first step still to do is marked `todo`.
 */
export function pipelineSteps(p: PipelineState | null, projectOpen: boolean): PipelineStep[] {
  const docs = p?.documents ?? [];
  const extracted = docs.filter((d) => d.extraction).length;
  const ds = p?.datasets ?? [];
  const runs = p?.runs ?? [];
  const newest = runs[0];
  const tuned = runs.filter((r) => r.adapter).length;
  const exports = p?.exports ?? [];
  const models = p?.models ?? [];
  const steps: PipelineStep[] = [
    {
      view: "documents",
      label: "Documents",
      state: !projectOpen ? "open a project" : docs.length ? `${plural(docs.length, "document")}, ${extracted} extracted` : "add files",
      // Without a project, making or opening one comes first.
      todo: !projectOpen || docs.length === 0,
    },
    {
      view: "dataset",
      label: "Dataset",
      state: !projectOpen ? "" : ds.length ? `${plural(ds[0].meta.stats.trainExamples, "example")}${ds.length > 1 ? ` · ${ds.length} sets` : ""}` : "not built",
      todo: projectOpen && ds.length === 0,
    },
    {
      view: "models",
      label: "Models",
      state: models.length ? `${plural(models.length, "model")} in the library` : "choose a base model",
      todo: models.length === 0,
    },
    {
      view: "train",
      label: "Train",
      state: !projectOpen ? "" : newest ? runState(newest) : "no run yet",
      todo: projectOpen && runs.length === 0,
    },
    {
      view: "playground",
      label: "Playground",
      state: tuned ? `compare ${plural(tuned, "tuned run")}` : "try a model",
      todo: false,
    },
    {
      view: "export",
      label: "Export",
      state: !projectOpen ? "" : exports.length ? plural(exports.length, "export") : tuned ? "ready to export" : "",
      todo: projectOpen && tuned > 0 && exports.length === 0,
    },
    { view: "system", label: "System", state: "", todo: false },
    { view: "settings", label: "Settings", state: "", todo: false },
  ];
  // Only the first unfinished step asks for attention.
  const first = steps.findIndex((s) => s.todo);
  return steps.map((s, i) => ({ ...s, todo: i === first }));
}

function runState(r: RunInfo): string {
  if (r.adapter && r.steps > 0) return `run done: ${plural(r.steps, "step")}`;
  return r.totalSteps ? `run: step ${r.steps}/${r.totalSteps}` : `run: step ${r.steps}`;
}
