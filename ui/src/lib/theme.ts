// The window's colour theme: the OS setting ("system") or one chosen in Settings. Kept in the
// webview's local storage: it is a look, not data, and nothing on the Rust side reads it.
export type Theme = "system" | "light" | "dark";

const KEY = "doctune.theme";

/** The chosen theme (system when none was chosen, or storage is unavailable). */
export function savedTheme(): Theme {
  try {
    const t = localStorage.getItem(KEY);
    return t === "light" || t === "dark" ? t : "system";
  } catch {
    return "system";
  }
}

/** Applies `theme` to the document (html[data-theme]) and remembers it. */
export function applyTheme(theme: Theme, remember = true): void {
  const root = document.documentElement;
  if (theme === "system") delete root.dataset.theme;
  else root.dataset.theme = theme;
  if (!remember) return;
  try {
    if (theme === "system") localStorage.removeItem(KEY);
    else localStorage.setItem(KEY, theme);
  } catch {
    // No storage: the theme holds for this window only.
  }
}
