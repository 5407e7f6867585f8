// Vite builds the UI into ui/dist, which the Tauri binary embeds. There is deliberately no dev
// server configuration: DocTune never serves its UI over HTTP, not even while developing.
import { defineConfig } from "vitest/config";
import { svelte } from "@sveltejs/vite-plugin-svelte";
import { svelteTesting } from "@testing-library/svelte/vite";

export default defineConfig({
  // svelteTesting: Svelte's browser build and cleanup between tests, under Vitest only.
  plugins: process.env.VITEST ? [svelte(), svelteTesting()] : [svelte()],
  clearScreen: false,
  build: {
    target: "safari15",
    outDir: "dist",
    emptyOutDir: true,
    // No inline assets: the CSP allows only 'self' scripts and styles.
    assetsInlineLimit: 0,
  },
  test: {
    include: ["src/**/*.test.ts"],
    // Pure functions run in Node; the views' tests (*.view.test.ts) in jsdom, with Tauri's IPC
    // mocked (src/test/ipc.ts).
    environment: "node",
  },
});
