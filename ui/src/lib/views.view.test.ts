// @vitest-environment jsdom
/**
 * Each view rendered alone with Tauri's IPC mocked (src/test/ipc.ts): what it asks Rust for,
 * what it shows of the answers, its empty states and their actions, and errors in plain words.
 */
import { describe, expect, test, vi } from "vitest";
import { fireEvent, render, screen, waitFor, within } from "@testing-library/svelte";
import { apiError, ipc } from "../test/ipc";
import { navContext, type View } from "./nav";
import type { DocumentEntry, ExportInfo, ModelEntry, Project, RunInfo } from "./api";
import DocumentsView from "./DocumentsView.svelte";
import DatasetView from "./DatasetView.svelte";
import ExportView from "./ExportView.svelte";
import ModelsView from "./ModelsView.svelte";
import PlaygroundView from "./PlaygroundView.svelte";
import SettingsView from "./SettingsView.svelte";
import SystemView from "./SystemView.svelte";
import TrainView from "./TrainView.svelte";
import LineChart from "./LineChart.svelte";

const SHA = "a".repeat(64);
const doc = (name: string, sha = SHA): DocumentEntry => ({
  name,
  file: name,
  sizeBytes: 2048,
  sha256: sha,
  format: "markdown",
  addedAt: "2026-12-01T10:00:00Z",
  source: `/home/u/${name}`,
  extraction: { status: "ok", pages: 0, chars: 120, warnings: [] },
});
const project = (documents: DocumentEntry[] = []): Project => ({
  id: "lab",
  name: "Lab handbook",
  path: "/data/projects/lab",
  createdAt: "2026-12-01T10:00:00Z",
  documentCount: documents.length,
  documents,
});
const model: ModelEntry = {
  id: "tiny",
  name: "tiny-llama",
  path: "/models/tiny",
  source: { kind: "local" } as unknown as ModelEntry["source"],
  family: "llama",
  familyLabel: "Llama",
  architecture: "LlamaForCausalLM",
  dtype: "BF16",
  parameters: 1_100_000_000,
  sizeBytes: 2_200_000_000,
  addedAt: "2026-12-01T10:00:00Z",
  license: "apache-2.0",
};
const run: RunInfo = {
  id: "run-1",
  path: "/data/projects/lab/runs/run-1",
  config: {
    baseModel: "/models/tiny",
    dataset: "/data/projects/lab/datasets/ds-1",
    method: { kind: "lora", rank: 8, alpha: 16, dropout: 0.05, rslora: false, targets: ["q", "v"] },
    maxSteps: 6,
    epochs: 1,
    microBatch: 4,
    gradAccum: 1,
    lr: 2e-4,
    warmupSteps: 0,
    schedule: "cosine",
    weightDecay: 0,
    maxGradNorm: 1,
    evalEvery: null,
    checkpointEvery: 100,
    gradientCheckpointing: false,
    seed: 0,
    device: "cpu",
    precision: "f32",
  },
  createdAt: "2026-12-01T10:00:00Z",
  steps: 6,
  totalSteps: 6,
  last: { step: 6, epoch: 1, loss: 2.5, lr: 1e-5, gradNorm: 1 } as RunInfo["last"],
  baseEvalLoss: 3.1,
  checkpoints: 1,
  adapter: "/data/projects/lab/runs/run-1/adapter",
};
const nav = () => ({
  go: vi.fn<(v: View) => void>(),
  tryDemo: vi.fn<() => void>(),
  newProject: vi.fn<() => void>(),
  changed: vi.fn<() => void>(),
});
const docsProps = (p: Project | null) => ({ project: p, busy: null, status: "", report: null, onChoose: vi.fn(), onChanged: vi.fn() });

describe("Documents", () => {
  test("without a project, the empty state offers a new project and the demo", async () => {
    ipc({});
    const n = nav();
    render(DocumentsView, { props: docsProps(null), context: navContext(n) });
    expect(screen.getByTestId("no-project").textContent).toMatch(/Create a project for your documents/);
    await fireEvent.click(screen.getByTestId("no-project-new-project"));
    await fireEvent.click(screen.getByTestId("no-project-demo"));
    expect(n.newProject).toHaveBeenCalledOnce();
    expect(n.tryDemo).toHaveBeenCalledOnce();
  });

  test("an empty project shows the drop zone", () => {
    ipc({});
    render(DocumentsView, { props: docsProps(project()) });
    expect(screen.getByTestId("dropzone").textContent).toMatch(/Drop PDFs, Word files, Markdown/);
  });

  test("removing a document asks first, then calls Rust with its sha256", async () => {
    const m = ipc({ remove_document: () => project() });
    const props = docsProps(project([doc("notes.md")]));
    render(DocumentsView, { props });
    await fireEvent.click(screen.getByTestId("document-remove"));
    expect(m.last("remove_document")).toBeUndefined();
    await fireEvent.click(screen.getByTestId("document-remove-yes"));
    await waitFor(() => expect(screen.getByTestId("remove-status").textContent).toMatch(/Removed notes\.md/));
    expect(m.last("remove_document")).toEqual({ id: "lab", sha256: SHA });
    expect(props.onChanged).toHaveBeenCalled();
  });

  test("a refused removal says why, in Rust's words", async () => {
    ipc({ remove_document: apiError("invalidInput", "a job is still working in this project") });
    render(DocumentsView, { props: docsProps(project([doc("notes.md")])) });
    await fireEvent.click(screen.getByTestId("document-remove"));
    await fireEvent.click(screen.getByTestId("document-remove-yes"));
    await waitFor(() => expect(screen.getByTestId("remove-status").textContent).toMatch(/a job is still working/));
  });
});

describe("Models", () => {
  test("lists the library with licence and whether fine-tuning fits this machine", async () => {
    const m = ipc({
      list_models: () => [model],
      model_fit: () => ({
        device: "cpu",
        precision: "f32",
        seqLen: 1024,
        availableBytes: 8e9,
        loraBytes: 6e9,
        loraFits: true,
        fullBytes: 20e9,
        fullFits: false,
      }),
    });
    render(ModelsView);
    const row = await screen.findByTestId("model-row");
    expect(row.textContent).toMatch(/tiny-llama/);
    expect(row.textContent).toMatch(/apache-2\.0/);
    await waitFor(() => expect(within(row).getByTestId("model-fit").textContent).toMatch(/✓ LoRA · ✗ full/));
    expect(m.last("model_fit")).toEqual({ model: "tiny" });
  });

  test("an empty library offers the demo", async () => {
    ipc({ list_models: () => [] });
    const n = nav();
    render(ModelsView, { context: navContext(n) });
    await fireEvent.click(await screen.findByTestId("no-model-demo"));
    expect(n.tryDemo).toHaveBeenCalledOnce();
  });
});

describe("Dataset", () => {
  test("without models, it sends the person to choose one", async () => {
    ipc({ list_models: () => [], list_datasets: () => [], dataset_defaults: () => ({}), list_instruction_documents: () => [] });
    const n = nav();
    render(DatasetView, { props: { project: project([doc("a.md")]) }, context: navContext(n) });
    await fireEvent.click(await screen.findByTestId("no-model-models"));
    expect(n.go).toHaveBeenCalledWith("models");
  });
});

describe("Train", () => {
  test("with a model but no dataset, it offers building one", async () => {
    ipc({
      list_models: () => [model],
      list_datasets: () => [],
      list_runs: () => [],
      doctor: () => ({ gpus: [], devices: [] }),
      train_presets: () => [],
    });
    const n = nav();
    render(TrainView, { props: { project: project([doc("a.md")]), demoJob: null }, context: navContext(n) });
    await fireEvent.click(await screen.findByTestId("no-dataset-dataset"));
    expect(n.go).toHaveBeenCalledWith("dataset");
  });
});

describe("Train, with a run", () => {
  const handlers = (runs: RunInfo[]) => ({
    list_models: () => [model],
    list_datasets: () => [{ id: "ds-1", path: "/data/projects/lab/datasets/ds-1", meta: { stats: { trainExamples: 12 } } }],
    list_runs: () => runs,
    run_history: () => [1, 2, 3].map((step) => ({ step, epoch: 1, loss: 3 - step / 10, lr: 2e-4, gradNorm: 1, tokensPerSec: 900, elapsedSecs: step })),
    doctor: () => ({ gpus: [], devices: [{ device: "cpu", available: true, precisions: ["f32"] }], system: { cpu: "AMD EPYC", logicalCores: 2, totalMemoryBytes: 24e9, availableMemoryBytes: 20e9 } }),
    train_presets: () => [
      { preset: "quick", label: "Quick", description: "one epoch" },
      { preset: "balanced", label: "Balanced", description: "two epochs" },
    ],
    train_settings: () => run.config,
    train_estimate: () => ({ estimate: { weights: 1, trainable: 1, activations: 1, overhead: 1, total: 4 }, availableBytes: 8e9, fits: true, suggestions: [] }),
    delete_run: () => null,
  });

  test("presets come from Rust; the chart draws the run's history; a run is deleted after a yes", async () => {
    const m = ipc(handlers([run]));
    render(TrainView, { props: { project: project([doc("a.md")]), demoJob: null } });
    const preset = (await screen.findByTestId("train-preset")) as HTMLSelectElement;
    await waitFor(() => expect([...preset.options].map((o) => o.textContent)).toEqual(["Quick", "Balanced"]));
    await waitFor(() => expect(screen.getByTestId("train-line").getAttribute("points")?.trim().split(/\s+/)).toHaveLength(3));
    await fireEvent.click(screen.getByTestId("train-delete"));
    expect(m.last("delete_run")).toBeUndefined();
    await fireEvent.click(screen.getByTestId("train-discard-yes"));
    await waitFor(() => expect(m.last("delete_run")).toEqual({ id: "lab", run: "run-1", how: "trash" }));
  });
});

describe("Train, live", () => {
  test("a newly started run is listed and charted from its first step, and the sidebar told", async () => {
    let started = false;
    const m = ipc({
      list_models: () => [model],
      list_datasets: () => [{ id: "ds-1", path: "/data/projects/lab/datasets/ds-1", meta: { stats: { trainExamples: 1 } } }],
      // No run until the job has made one.
      list_runs: () => (started ? [{ ...run, id: "run-2", steps: 1, adapter: null, last: null }] : []),
      doctor: () => ({ gpus: [], devices: [{ device: "cpu", available: true, precisions: ["f32"] }], system: { cpu: "AMD EPYC", logicalCores: 2, totalMemoryBytes: 24e9, availableMemoryBytes: 20e9 } }),
      train_presets: () => [{ preset: "quick", label: "Quick", description: "one epoch" }],
      train_settings: () => run.config,
      train_estimate: () => ({ estimate: { weights: 1, trainable: 1, activations: 1, overhead: 1, total: 4 }, availableBytes: 8e9, fits: true, suggestions: [] }),
      start_training: () => {
        started = true;
        return "job-1";
      },
      run_history: () => [],
    });
    const n = nav();
    render(TrainView, { props: { project: project([doc("a.md")]), demoJob: null }, context: navContext(n) });
    // One example, in words.
    await waitFor(() => expect(screen.getByTestId("train-dataset").textContent).toContain("(1 example)"));
    await waitFor(() => expect((screen.getByTestId("train-start") as HTMLButtonElement).disabled).toBe(false));
    await fireEvent.click(screen.getByTestId("train-start"));
    await waitFor(() => expect(m.last("start_training")).toBeDefined());
    m.emit("start_training", { type: "metrics", data: { step: 1, epoch: 0, loss: 3, lr: 1e-4, tokensPerSec: 900, etaSecs: 112, memBytes: 375 * 1048576 } } as never);
    await waitFor(() => expect(screen.getByTestId("train-live").textContent).toBe("step 1 · 900 tokens/s · ETA 1 min 52 s · memory 375.0 MB"));
    expect((screen.getByTestId("train-run") as HTMLSelectElement).value).toBe("run-2");
    await waitFor(() => expect(screen.getByTestId("train-line").getAttribute("points")?.trim().split(/\s+/)).toHaveLength(1));
    expect(n.changed).toHaveBeenCalled();
  });
});

describe("Playground", () => {
  test("without models, it offers the Models view and the demo", async () => {
    ipc({ list_models: () => [], list_runs: () => [] });
    const n = nav();
    render(PlaygroundView, { props: { project: null }, context: navContext(n) });
    await fireEvent.click(await screen.findByTestId("no-model-models"));
    expect(n.go).toHaveBeenCalledWith("models");
  });
});

describe("Export", () => {
  const formats = () => [
    { format: "gguf", label: "GGUF", quants: ["q4_k_m", "q8_0"], dtypes: [] },
    { format: "merged", label: "Merged Hugging Face model", quants: [], dtypes: ["bf16", "f16", "f32"] },
  ];
  const done: ExportInfo = {
    id: "export-1",
    path: "/data/projects/lab/exports/export-1",
    format: "gguf",
    quant: "q8_0",
    runId: "run-1",
    step: 6,
    createdAt: "2026-12-01T11:00:00Z",
    files: [{ path: "tiny-q8_0.gguf", bytes: 1_200_000, sha256: "b".repeat(64) }],
    totalBytes: 1_200_000,
  };

  test("formats and their GGUF types come from Rust, with the size before starting", async () => {
    const m = ipc({
      list_runs: () => [run],
      list_exports: () => [done],
      export_formats: formats,
      export_estimate: (a) => ({ bytes: (a.options as { quant?: string }).quant === "q8_0" ? 1200 * 2 ** 20 : 700 * 2 ** 20, freeBytes: 2 ** 30 }),
      show_in_folder: () => null,
    });
    render(ExportView, { props: { project: project() } });
    const format = (await screen.findByTestId("export-format")) as HTMLSelectElement;
    await waitFor(() => expect([...format.options].map((o) => o.value)).toEqual(["gguf", "merged"]));
    const quant = screen.getByTestId("export-quant") as HTMLSelectElement;
    expect([...quant.options].map((o) => o.value)).toEqual(["q4_k_m", "q8_0"]);
    await waitFor(() => expect(screen.getByTestId("export-estimate").textContent).toMatch(/About 700\.0 MB · 1\.0 GB free/));
    // A type that does not fit the disk is said so before anything is written.
    await fireEvent.change(quant, { target: { value: "q8_0" } });
    await waitFor(() => expect(screen.getByTestId("export-estimate").textContent).toMatch(/not enough room/));
    expect(m.last("export_estimate")).toMatchObject({ id: "lab", run: "run-1", options: { format: "gguf", quant: "q8_0" } });
    // A merged model takes dtypes, not GGUF types.
    await fireEvent.change(format, { target: { value: "merged" } });
    await waitFor(() => expect(screen.queryByTestId("export-quant")).toBeNull());
    // Each export lists its files and opens its folder through Rust.
    expect(screen.getByTestId("export-file").textContent).toMatch(/tiny-q8_0\.gguf/);
    await fireEvent.click(screen.getByTestId("export-show"));
    await waitFor(() => expect(m.last("show_in_folder")).toEqual({ id: "lab", folder: { kind: "export", id: "export-1" } }));
  });

  test("with no finished run, it sends the person to train one", async () => {
    ipc({ list_runs: () => [], list_exports: () => [], export_formats: formats });
    const n = nav();
    render(ExportView, { props: { project: project() }, context: navContext(n) });
    await fireEvent.click(await screen.findByTestId("no-run-train"));
    expect(n.go).toHaveBeenCalledWith("train");
  });
});

describe("System", () => {
  test("a machine without an NVIDIA GPU is told so in plain words", async () => {
    ipc({
      doctor: () => ({
        version: "0.1.0",
        system: { os: "Debian 12", arch: "x86_64", cpu: "AMD EPYC", logicalCores: 2, totalMemoryBytes: 24e9, availableMemoryBytes: 20e9 },
        dataDir: "/data",
        freeDiskBytes: 5e10,
        gpus: [],
        gpuMessage: "no NVIDIA GPU found — training runs on the CPU",
        keychain: { backend: "Secret Service", reachable: true, usable: true, message: "" },
        devices: [],
      }),
    });
    render(SystemView);
    const gpu = await screen.findByTestId("gpu");
    expect(gpu.textContent).toMatch(/no NVIDIA GPU found — training runs on the CPU/);
    expect(gpu.textContent).not.toMatch(/libnvidia|dlopen|libloading/);
  });
});

describe("Settings", () => {
  test("the theme is applied and kept; a stored token is never shown", async () => {
    ipc({
      token_status: () => ({ stored: true, problem: null }),
      doctor: () => ({ dataDir: "/data", devices: [], gpus: [] }),
      get_preferences: () => ({ device: null, precision: null }),
      data_folder: () => ({ path: "/data", source: "default", next: null }),
    });
    render(SettingsView);
    await fireEvent.click(await screen.findByTestId("theme-dark"));
    expect(document.documentElement.dataset.theme).toBe("dark");
    expect(localStorage.getItem("doctune.theme")).toBe("dark");
    await fireEvent.click(screen.getByTestId("theme-system"));
    expect(document.documentElement.dataset.theme).toBeUndefined();
    expect(document.body.textContent).not.toMatch(/hf_/);
  });
});

test("Settings saves the training device, with only the precisions that device takes", async () => {
  const m = ipc({
    token_status: () => ({ stored: false, problem: null }),
    doctor: () => ({
      dataDir: "/home/u/.local/share/DocTune",
      gpus: [],
      devices: [
        { device: "cpu", available: true, precisions: ["f32"] },
        { device: "cuda", available: true, precisions: ["f32", "bf16", "f16"] },
        { device: "metal", available: false, precisions: [], reason: "Metal needs macOS" },
      ],
    }),
    get_preferences: () => ({ device: null, precision: null }),
    set_preferences: () => null,
    data_folder: () => ({ path: "/home/u/.local/share/DocTune", source: "default", next: null }),
    choose_data_folder: () => ({ path: "/home/u/.local/share/DocTune", source: "default", next: "/mnt/big/DocTune" }),
  });
  render(SettingsView);
  await waitFor(() => expect(screen.getByTestId("data-dir").textContent).toMatch(/DocTune/));
  const device = screen.getByTestId("pref-device") as HTMLSelectElement;
  await waitFor(() => expect([...device.options].map((o) => o.textContent)).toEqual(["Best available", "CPU", "NVIDIA GPU (CUDA)"]));
  expect(document.body.textContent).toMatch(/Metal needs macOS/);
  await fireEvent.change(device, { target: { value: device.options[2].value } });
  await waitFor(() => expect(m.last("set_preferences")).toEqual({ prefs: { device: "cuda", precision: null } }));
  const precision = screen.getByTestId("pref-precision") as HTMLSelectElement;
  expect([...precision.options].map((o) => o.textContent)).toEqual(["The device's best", "f32", "bf16", "f16"]);
  // Another data folder, chosen in a dialog Rust opens, is said to take effect at the next start.
  await fireEvent.click(screen.getByTestId("data-choose"));
  await waitFor(() => expect(screen.getByTestId("data-next").textContent).toMatch(/\/mnt\/big\/DocTune/));
  expect(m.last("choose_data_folder")).toEqual({ reset: false });
});

describe("LineChart", () => {
  test("draws ticks and points, and the keyboard moves a readout along them", async () => {
    render(LineChart, {
      props: {
        testid: "chart",
        label: "Loss",
        xLabel: "step",
        yLabel: "loss",
        series: [{ name: "training loss", kind: "line", color: "red", points: [1, 2, 3, 4].map((x) => ({ x, y: 4 - x / 2 })) }],
      },
    });
    const chart = screen.getByTestId("chart");
    expect(chart.querySelectorAll("text.tick").length).toBeGreaterThanOrEqual(6);
    const svg = chart.querySelector("svg") as SVGElement;
    await fireEvent.keyDown(svg, { key: "End" });
    expect(screen.getByTestId("chart-readout").textContent).toMatch(/step 4/);
    await fireEvent.keyDown(svg, { key: "ArrowLeft" });
    expect(screen.getByTestId("chart-readout").textContent).toMatch(/step 3/);
  });
});
