/**
 * Tauri's IPC, mocked for the views' unit tests: each command answers from `handlers` (an
 * unmocked command rejects with an `internal` ApiError, so a view calling something unexpected
 * shows it), every call is recorded, and a job's Channel can be fed events.
 */
import { clearMocks, mockIPC } from "@tauri-apps/api/mocks";
import type { Channel } from "@tauri-apps/api/core";
import type { JobEvent } from "../lib/api";

type Handler = (args: Record<string, unknown>) => unknown;

export interface Ipc {
  calls: { cmd: string; args: Record<string, unknown> }[];
  /** The arguments of the last call of `cmd`. */
  last(cmd: string): Record<string, unknown> | undefined;
  /** Sends `event` to the channel the last call of `cmd` passed as `onEvent`. */
  emit(cmd: string, event: JobEvent): void;
}

export function ipc(handlers: Record<string, Handler>): Ipc {
  clearMocks();
  const calls: Ipc["calls"] = [];
  mockIPC((cmd, args) => {
    const a = (args ?? {}) as Record<string, unknown>;
    calls.push({ cmd, args: a });
    const h = handlers[cmd];
    if (!h) throw { code: "internal", message: `unmocked command ${cmd}` };
    return h(a);
  });
  const last = (cmd: string) => calls.filter((c) => c.cmd === cmd).at(-1)?.args;
  return {
    calls,
    last,
    emit(cmd, event) {
      const ch = last(cmd)?.onEvent as Channel<JobEvent> | undefined;
      if (!ch) throw new Error(`no ${cmd} call with a channel`);
      ch.onmessage(event);
    },
  };
}

/** A rejected command's error, as Rust sends it. */
export const apiError = (code: string, message: string) => () => {
  throw { code, message };
};
