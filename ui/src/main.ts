// DocTune's UI entry: mounts the app. All data comes from Rust over Tauri IPC (src/lib/api.ts).
import { mount } from "svelte";
import App from "./App.svelte";
import "./app.css";
import { applyTheme, savedTheme } from "./lib/theme";

applyTheme(savedTheme(), false);

const target = document.getElementById("app");
if (!target) throw new Error("no #app element");
export default mount(App, { target });
