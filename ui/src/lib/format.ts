// Small pure helpers for showing values; unit-tested in format.test.ts.
import type { AddReport } from "./api";

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
