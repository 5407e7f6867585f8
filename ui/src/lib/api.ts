// Typed wrappers over the Rust commands (src-tauri/src/commands.rs). The types mirror the
// serialised Rust types in doctune-api; every failure arrives as an ApiError { code, message }.
import { Channel, invoke } from "@tauri-apps/api/core";

export type Code =
  | "invalidInput"
  | "notFound"
  | "outsideScope"
  | "notARegularFile"
  | "alreadyExists"
  | "noSpace"
  | "cancelled"
  | "internal";

export interface ApiError {
  code: Code;
  message: string;
  details?: unknown;
}

export interface ProjectSummary {
  id: string;
  name: string;
  path: string;
  createdAt: string;
  documentCount: number;
}

export interface Extraction {
  status: "ok" | "okWithWarnings" | "error";
  pages: number;
  chars: number;
  records?: number;
  title?: string;
  warnings: string[];
  error?: string;
}

export interface Preview {
  title?: string;
  text: string;
  truncated: boolean;
  warnings: string[];
}

export interface DocumentEntry {
  name: string;
  file: string;
  sizeBytes: number;
  sha256: string;
  format: string;
  warning?: string;
  addedAt: string;
  source: string;
  extraction?: Extraction;
}

export interface Project extends ProjectSummary {
  documents: DocumentEntry[];
}

export interface AddFailure {
  path: string;
  code: Code;
  message: string;
}

export interface AddReport {
  added: DocumentEntry[];
  duplicates: { path: string; existing: string; sha256: string }[];
  failed: AddFailure[];
  skippedHidden: number;
  cancelled: boolean;
}

export type JobEvent =
  | { type: "started"; data: { job: string; kind: string } }
  | { type: "progress"; data: { current: number; total: number; unit: string; message?: string; etaSecs?: number } }
  | { type: "warning"; data: { message: string } }
  | { type: "text"; data: { text: string } }
  | {
      type: "metrics";
      data: {
        step: number;
        epoch: number;
        loss: number;
        evalLoss?: number;
        lr: number;
        gradNorm?: number;
        tokensPerSec: number;
        elapsedSecs: number;
        etaSecs: number;
        memBytes?: number;
        gpuMemBytes?: number;
        /** The held-out loss before the first step (the base model's, for LoRA). */
        baseEvalLoss?: number;
      };
    }
  | { type: "checkpoint"; data: { path: string } }
  | { type: "generated"; data: { tokens: number; stopReason: string; tokensPerSec: number } }
  /** `result`: what the job produced (the run's summary, the built dataset…), when anything. */
  | { type: "finished"; data: { result?: unknown } }
  /** The same `{ code, message }` a command's error carries. */
  | { type: "failed"; data: ApiError }
  | { type: "cancelled" };

export interface GpuInfo {
  index: number;
  name: string;
  memoryTotalBytes: number;
  memoryUsedBytes: number;
  utilizationPercent?: number;
  temperatureC?: number;
  powerWatts?: number;
}

export interface DoctorReport {
  version: string;
  system: {
    os: string;
    kernel?: string;
    arch: string;
    cpu: string;
    logicalCores: number;
    physicalCores?: number;
    totalMemoryBytes: number;
    availableMemoryBytes: number;
  };
  dataDir: string;
  freeDiskBytes?: number;
  gpus: GpuInfo[];
  gpuMessage?: string;
  keychain: { backend: string; reachable: boolean; usable: boolean; message: string };
  devices: DeviceOption[];
}

export type DeviceKind = "cpu" | "cuda" | "metal";
export type Precision = "f32" | "bf16" | "f16";

/** Where this build can train, and in which precisions (from `doctor`). */
export interface DeviceOption {
  device: DeviceKind;
  available: boolean;
  precisions: Precision[];
  reason?: string | null;
}

/** Turns whatever a rejected invoke carries into an ApiError. */
export function asApiError(e: unknown): ApiError {
  if (e && typeof e === "object" && "message" in e && "code" in e) return e as ApiError;
  return { code: "internal", message: String(e) };
}

export const listProjects = () => invoke<ProjectSummary[]>("list_projects");
export const createProject = (name: string) => invoke<ProjectSummary>("create_project", { name });
export const openProject = (id: string) => invoke<Project>("open_project", { id });
/** Renames a project; its id (folder) stays. */
export const renameProject = (id: string, name: string) => invoke<ProjectSummary>("rename_project", { id, name });
/** How a project is deleted: to the OS trash, or for good. */
export type Deletion = "trash" | "permanent";
/** Deletes a project; returns its name. Refused while a job works in it. */
export const deleteProject = (id: string, how: Deletion) => invoke<string>("delete_project", { id, how });
/** Removes one document (its copy and extracted text); returns the project as it is now. */
export const removeDocument = (id: string, sha256: string) => invoke<Project>("remove_document", { id, sha256 });
/** A folder of a project, as "show in folder" names it; Rust resolves and opens it. */
export type Folder =
  | { kind: "project" }
  | { kind: "documents" }
  | { kind: "dataset"; id: string }
  | { kind: "run"; id: string }
  | { kind: "export"; id: string };
export const showInFolder = (id: string, folder: Folder) => invoke<void>("show_in_folder", { id, folder });
/**
 * A file or folder the user dropped on the window or chose in a dialog, as Rust granted it: the
 * UI passes the id back; it never sends a path of its own.
 */
export interface GrantedPath {
  id: string;
  /** The path as the user chose it, to show. */
  name: string;
}

/** The event a drop on the window ends in: the dropped paths' grants. */
export const DROPPED_EVENT = "doctune://dropped";

export const chooseDocuments = () => invoke<GrantedPath[]>("choose_documents");
export const doctor = () => invoke<DoctorReport>("doctor");

export function addDocuments(
  id: string,
  grants: string[],
  onEvent: (e: JobEvent) => void,
): Promise<AddReport> {
  const channel = new Channel<JobEvent>();
  channel.onmessage = onEvent;
  return invoke<AddReport>("add_documents", { id, grants, onEvent: channel });
}

export interface TokenStatus {
  stored: boolean;
  problem?: string | null;
}

export type ModelSource =
  | { kind: "hub"; repo: string; revision: string; commit: string }
  | { kind: "local"; from: string; copied: boolean }
  | { kind: "scratch"; project: string; size: string; documents: number };

export interface ModelEntry {
  id: string;
  name: string;
  path: string;
  source: ModelSource;
  family: string;
  /** The family's name for people ("Phi-3"), from Rust. */
  familyLabel: string;
  architecture: string;
  dtype: string;
  parameters: number;
  sizeBytes: number;
  addedAt: string;
  /** The licence the model card names. */
  license?: string;
}

/** The person's defaults (`doctune_api::preferences::Preferences`); null: the best available. */
export interface Preferences {
  device: DeviceKind | null;
  precision: Precision | null;
}
/** The data folder in use, where it came from, and what the next start will use. */
export interface DataFolder {
  path: string;
  source: "env" | "chosen" | "default";
  next: string | null;
}
export const dataFolder = () => invoke<DataFolder>("data_folder");
/** Opens a folder dialog (from Rust) for the next start's data folder; `reset`: the OS default. */
export const chooseDataFolder = (reset: boolean) => invoke<DataFolder>("choose_data_folder", { reset });
export const getPreferences = () => invoke<Preferences>("get_preferences");
export const setPreferences = (prefs: Preferences) => invoke<void>("set_preferences", { prefs });
export const tokenStatus = () => invoke<TokenStatus>("token_status");
export const setToken = (token: string) => invoke<void>("set_token", { token });
export const deleteToken = () => invoke<void>("delete_token");
export const testToken = () => invoke<string>("test_token");
export const listModels = () => invoke<ModelEntry[]>("list_models");
/** Whether fine-tuning a model fits this machine (`doctune_api::train::ModelFit`). */
export interface ModelFit {
  device: string;
  precision: string;
  seqLen: number;
  availableBytes: number;
  loraBytes: number;
  loraFits: boolean;
  fullBytes: number;
  fullFits: boolean;
}
export const modelFit = (model: string) => invoke<ModelFit>("model_fit", { model });
export const cancelJob = (id: string) => invoke<boolean>("cancel_job", { id });
export const chooseModelFolder = () => invoke<GrantedPath | null>("choose_model_folder");
export const importModel = (grant: string, copy: boolean) =>
  invoke<ModelEntry>("import_model", { grant, copy });

/** Starts a pull; returns the job id. Events end with finished, failed or cancelled. */
export function startPull(
  repo: string,
  revision: string | null,
  onEvent: (e: JobEvent) => void,
): Promise<string> {
  const channel = new Channel<JobEvent>();
  channel.onmessage = onEvent;
  return invoke<string>("start_pull", { repo, revision, onEvent: channel });
}

export const documentPreview = (id: string, sha256: string) =>
  invoke<Preview>("document_preview", { id, sha256 });

/** Starts extracting the project's documents not extracted yet; returns the job id. */
export function startIngest(id: string, onEvent: (e: JobEvent) => void): Promise<string> {
  const channel = new Channel<JobEvent>();
  channel.onmessage = onEvent;
  return invoke<string>("start_ingest", { id, onEvent: channel });
}

export interface Sampling {
  /** null or 0: greedy. */
  temperature: number | null;
  topK: number | null;
  topP: number | null;
  repetitionPenalty: number;
  seed: number;
}

export interface GenerateRequest {
  /** A library model id. */
  model: string;
  adapter?: string | null;
  prompt: string;
  chat: boolean;
  system?: string | null;
  maxNewTokens: number;
  sampling: Sampling;
}

/** Starts generating; text arrives as `text` events, then `generated` and `finished`. */
export function startGenerate(request: GenerateRequest, onEvent: (e: JobEvent) => void): Promise<string> {
  const channel = new Channel<JobEvent>();
  channel.onmessage = onEvent;
  return invoke<string>("start_generate", { request, onEvent: channel });
}

/** Who writes a question-answer build's pairs: the templates, or a library model. */
export type Generator = { kind: "template" } | { kind: "model"; model: string };

export interface QaOptions {
  generator: Generator;
  passageTokens: number;
  overlapTokens: number;
  pairsPerPassage: number;
  minSupport: number;
  modelCheck: boolean;
  duplicateOverlap: number;
  maxNewTokens: number;
  device?: string | null;
}

export interface BuildOptions {
  mode: "pretrain" | "instruct" | "qa";
  seqLen: number;
  stride?: number | null;
  keepLastPartial: boolean;
  valFraction: number;
  seed: number;
  lossOn: "assistant" | "all";
  onBadRow: "skip" | "stop";
  dedup: boolean;
  qa: QaOptions;
}

/** A question-answer build's counts for one document (or the total). */
export interface QaDocReport {
  document: string;
  passages: number;
  fromCache: number;
  generated: number;
  kept: number;
  dropped: Record<string, number>;
  malformedReplies: number;
  retries: number;
}

export interface QaReport {
  generator: string;
  promptVersion: number;
  total: QaDocReport;
  byOrigin: Record<string, number>;
  documents: QaDocReport[];
  generationSeconds: number;
}

export interface BadRow {
  file: string;
  line: number;
  reason: string;
}

export interface DatasetStats {
  trainExamples: number;
  valExamples: number;
  trainTokens: number;
  valTokens: number;
  trainedTokens: number;
  truncated: number;
  dropped: Record<string, number>;
  duplicates: number;
  badRows: number;
  histogram: number[];
  binWidth: number;
  splitUnit: string;
}

export interface DatasetMeta {
  id: string;
  createdAt: string;
  model: string;
  options: BuildOptions;
  sources: { name: string; sha256: string; format?: string; rows: number; examples: number }[];
  stats: DatasetStats;
  badRows: BadRow[];
  notes: string[];
  qa?: QaReport;
}

export interface DatasetSummary {
  id: string;
  path: string;
  meta: DatasetMeta;
}

export interface PreviewExample {
  text: string;
  /** Trained-on spans in Unicode code points (not UTF-16 units). */
  spans: [number, number][];
  tokens: number;
  trainedTokens: number;
  /** Question-answer datasets: the passage the pair came from. */
  source?: {
    document: string;
    section?: string | null;
    start: number;
    end: number;
    passage: string;
    origin: "generator" | "definition" | "heading";
    support: number;
  };
}

/** Starts building a dataset in project `id`; returns the job id. */
export function startDatasetBuild(
  id: string,
  request: { model: string; documents: string[]; options: BuildOptions },
  onEvent: (e: JobEvent) => void,
): Promise<string> {
  const channel = new Channel<JobEvent>();
  channel.onmessage = onEvent;
  return invoke<string>("start_dataset_build", { id, request, onEvent: channel });
}

/** The dataset builder's defaults, from Rust. */
export const datasetDefaults = () => invoke<BuildOptions>("dataset_defaults");
export const listDatasets = (id: string) => invoke<DatasetSummary[]>("list_datasets", { id });
export const datasetPreview = (id: string, dataset: string, n: number) =>
  invoke<PreviewExample[]>("dataset_preview", { id, dataset, n });

export type LoraTarget = "q" | "k" | "v" | "o" | "gate" | "up" | "down";

export interface RunConfig {
  /** The base model's folder and the dataset's (paths as Rust resolved them). */
  baseModel: string;
  dataset: string;
  method: { kind: "lora"; rank: number; alpha: number; dropout: number; rslora: boolean; targets: LoraTarget[] } | { kind: "full" };
  maxSteps: number | null;
  epochs: number;
  microBatch: number;
  gradAccum: number;
  lr: number;
  warmupSteps: number;
  schedule: "cosine" | "linear" | "constant";
  weightDecay: number;
  maxGradNorm: number | null;
  evalEvery: number | null;
  checkpointEvery: number;
  gradientCheckpointing: boolean;
  seed: number;
  device: DeviceKind;
  precision: Precision;
}

export interface MetricsLine {
  step: number;
  epoch: number;
  loss: number;
  evalLoss?: number;
  lr: number;
  /** Null on an f16 step skipped because its gradients overflowed. */
  gradNorm: number | null;
  lossScale?: number;
  tokensPerSec: number;
  elapsedSecs: number;
  etaSecs: number;
  memBytes: number;
  gpuMemBytes?: number;
}

export interface RunInfo {
  id: string;
  path: string;
  config: RunConfig;
  createdAt: string;
  steps: number;
  /** Steps the run was set to take (null when its dataset is gone). */
  totalSteps?: number | null;
  last?: MetricsLine | null;
  /** The held-out loss before the first step (the base model's, for LoRA), when measured. */
  baseEvalLoss?: number | null;
  checkpoints: number;
  adapter?: string | null;
}

function channelFor(onEvent: (e: JobEvent) => void): Channel<JobEvent> {
  const channel = new Channel<JobEvent>();
  channel.onmessage = onEvent;
  return channel;
}

/** What a person chose in the Train view; Rust fills in everything else (`RunOverrides`). */
export interface RunOverrides {
  method?: "lora" | "full";
  loraRank?: number;
  loraAlpha?: number;
  loraDropout?: number;
  loraTargets?: LoraTarget[];
  rslora?: boolean;
  maxSteps?: number;
  epochs?: number;
  microBatch?: number;
  gradAccum?: number;
  lr?: number;
  warmupSteps?: number;
  weightDecay?: number;
  maxGradNorm?: number;
  evalEvery?: number;
  checkpointEvery?: number;
  gradientCheckpointing?: boolean;
  device?: DeviceKind;
  precision?: Precision;
  seed?: number;
}

export type Preset = "quick" | "balanced" | "thorough";

/** A run to start: a library model and a dataset by id, a preset and the person's choices. */
export interface TrainRequest {
  model: string;
  dataset: string;
  preset?: Preset | null;
  overrides: RunOverrides;
}

/** How a run ended (a training job's `finished` result). */
export interface RunSummary {
  id: string;
  runDir: string;
  steps: number;
  totalSteps: number;
  finalLoss?: number | null;
  evalLoss?: number | null;
  evalPerplexity?: number | null;
  baseEvalLoss?: number | null;
  cancelled: boolean;
  earlyStopped: boolean;
  output: string;
}

export const startTraining = (id: string, request: TrainRequest, onEvent: (e: JobEvent) => void) =>
  invoke<string>("start_training", { id, request, onEvent: channelFor(onEvent) });
export const resumeTraining = (id: string, run: string, onEvent: (e: JobEvent) => void) =>
  invoke<string>("resume_training", { id, run, onEvent: channelFor(onEvent) });
export const listRuns = (id: string) => invoke<RunInfo[]>("list_runs", { id });
/** Deletes a run (to the OS trash unless `how` is "permanent"); refused while a job works in the project. */
export const deleteRun = (id: string, run: string, how: Deletion) => invoke<void>("delete_run", { id, run, how });
export const runHistory = (id: string, run: string) => invoke<MetricsLine[]>("run_history", { id, run });
/** The full settings a request would run with (defaults or preset, then the choices). */
/** A training preset (`doctune_api::train::PresetInfo`). */
export interface PresetInfo {
  preset: "quick" | "balanced" | "thorough";
  label: string;
  description: string;
}
export const trainPresets = () => invoke<PresetInfo[]>("train_presets");
export const trainSettings = (id: string, request: TrainRequest) => invoke<RunConfig>("train_settings", { id, request });
/** The project's documents an instruction dataset can be built from. */
export const listInstructionDocuments = (id: string) =>
  invoke<DocumentEntry[]>("list_instruction_documents", { id });

export interface EstimateReport {
  estimate: { weights: number; trainable: number; activations: number; overhead: number; total: number };
  availableBytes: number;
  fits: boolean;
  suggestions: string[];
}

export const trainEstimate = (id: string, request: TrainRequest) =>
  invoke<EstimateReport>("train_estimate", { id, request });

/** What the built-in demo made and measured (`doctune_api::demo::DemoReport`). */
export interface DemoReport {
  projectDir: string;
  documents: number;
  modelId: string;
  modelDir: string;
  parameters: number;
  vocabSize: number;
  datasetDir: string;
  trainTokens: number;
  valTokens: number;
  runDir: string;
  steps: number;
  valLoss: number;
  unigramEntropy: number;
  untrainedLoss: number;
  exportDir: string;
  gguf: string;
  modelfile: string;
  mergedDir: string;
  ollamaCreate: string;
  prompt: string;
  sample: string;
  reused: string[];
  seconds: number;
}

/** The demo project's name (`doctune_api::demo::PROJECT_NAME`). */
export const DEMO_PROJECT = "DocTune demo";
/** Runs the built-in demo as a job. */
export const startDemo = (onEvent: (e: JobEvent) => void) =>
  invoke<string>("start_demo", { onEvent: channelFor(onEvent) });
/** How the window was started (`--demo`: start the demo now). */
export const launchOptions = () => invoke<{ demo: boolean }>("launch_options");

/** The demo job's events, for the views that follow it (the Train view shows its run live). */
export const demoEvents = new EventTarget();
export interface DemoFollow {
  job: string;
  event: JobEvent;
}

/** Export formats (`doctune_export::Format`). */
export type ExportFormat = "peft" | "merged" | "gguf" | "ggufLora" | "ollama";
export type Quant = "f32" | "f16" | "bf16" | "q8_0" | "q4_0" | "q4_k_m" | "q5_k_m" | "q6_k";
export type Dtype = "f32" | "bf16" | "f16";

export interface ExportOptions {
  format: ExportFormat;
  quant?: Quant;
  dtype?: Dtype;
  checkpoint?: number | null;
  system?: string | null;
  overwrite?: boolean;
}

export interface ExportedFile {
  path: string;
  bytes: number;
  sha256: string;
}

/** An export of a project (`doctune_api::export::ExportInfo`). */
export interface ExportInfo {
  id: string;
  path: string;
  format: ExportFormat;
  quant?: Quant | null;
  runId: string;
  step: number;
  createdAt: string;
  files: ExportedFile[];
  totalBytes: number;
}

/** Starts exporting run `run` of project `id` into the project's exports/. */
export const startExport = (id: string, run: string, options: ExportOptions, onEvent: (e: JobEvent) => void) =>
  invoke<string>("start_export", { id, run, options, onEvent: channelFor(onEvent) });
export const listExports = (id: string) => invoke<ExportInfo[]>("list_exports", { id });
/** An export format with the GGUF types (first = default) and dtypes it takes (`FormatInfo`). */
export interface FormatInfo {
  format: ExportFormat;
  label: string;
  quants: Quant[];
  dtypes: Dtype[];
}
export const exportFormats = () => invoke<FormatInfo[]>("export_formats");
/** An export's expected size, and the free space where it goes. */
export interface ExportEstimate {
  bytes: number;
  freeBytes: number | null;
}
export const exportEstimate = (id: string, run: string, options: ExportOptions) =>
  invoke<ExportEstimate>("export_estimate", { id, run, options });
