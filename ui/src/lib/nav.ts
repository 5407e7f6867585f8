/**
 * What an empty state may offer: moving to another view, starting the built-in demo, or
 * creating a project; and how a view says that what the sidebar shows of the pipeline has
 * changed (a dataset built, a run's step, an export written). App provides it (Svelte context)
 * so every view's empty state can offer the action it names instead of only naming it.
 */
import { getContext, setContext } from "svelte";

export type View = "documents" | "dataset" | "models" | "train" | "playground" | "export" | "system" | "settings";

export interface Nav {
  go(view: View): void;
  tryDemo(): void;
  newProject(): void;
  /** Something the sidebar's pipeline summary shows has changed: read it again (throttled). */
  changed(): void;
}

const KEY = Symbol("doctune.nav");

export function provideNav(nav: Nav): void {
  setContext(KEY, nav);
}

/** A component context holding `nav`, for rendering a view alone (unit tests). */
export function navContext(nav: Nav): Map<symbol, Nav> {
  return new Map([[KEY, nav]]);
}

/** The app's navigation; a no-op outside App (a view rendered alone in a unit test). */
export function useNav(): Nav {
  return getContext<Nav | undefined>(KEY) ?? { go() {}, tryDemo() {}, newProject() {}, changed() {} };
}
