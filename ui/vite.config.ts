// Vite builds the UI into ui/dist, which the Tauri binary embeds. There is deliberately no dev
// server configuration: DocTune never serves its UI over HTTP, not even while developing.
import { defineConfig } from "vitest/config";
import { svelte } from "@sveltejs/vite-plugin-svelte";

export default defineConfig({
  plugins: [svelte()],
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
    environment: "node",
  },
});
