// DocTune's UI entry: mounts the app. All data comes from Rust over Tauri IPC (src/lib/api.ts).
import { mount } from "svelte";
import App from "./App.svelte";
import "./app.css";

const target = document.getElementById("app");
if (!target) throw new Error("no #app element");
export default mount(App, { target });
