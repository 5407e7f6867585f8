// Proves the listener detector used by app.test.mjs: it must see a listening TCP socket, a bound
// UDP socket and a listening Unix socket of this very process, and must not flag a connected
// client socket.
import { test } from "node:test";
import assert from "node:assert/strict";
import dgram from "node:dgram";
import fs from "node:fs";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { listeningSockets } from "./procnet.mjs";

const once = (emitter, ev) => new Promise((r) => emitter.once(ev, r));

test("the detector sees this process's listeners and nothing else", async () => {
  assert.deepEqual(listeningSockets([process.pid]), [], "no listener before the test");
  const tcp = net.createServer().listen(0, "127.0.0.1");
  await once(tcp, "listening");
  const udp = dgram.createSocket("udp4");
  udp.bind(0, "127.0.0.1");
  await once(udp, "listening");
  const sockPath = path.join(fs.mkdtempSync(path.join(os.tmpdir(), "procnet-")), "s");
  const unix = net.createServer().listen(sockPath);
  await once(unix, "listening");
  const client = net.connect(tcp.address().port, "127.0.0.1");
  await once(client, "connect");
  try {
    const found = listeningSockets([process.pid]);
    const protos = found.map((f) => f.proto).sort();
    assert.deepEqual(protos, ["tcp", "udp", "unix"], JSON.stringify(found));
    const port = tcp.address().port.toString(16).toUpperCase().padStart(4, "0");
    assert.ok(found.some((f) => f.proto === "tcp" && f.local.endsWith(`:${port}`)));
    assert.ok(found.some((f) => f.proto === "unix" && f.local === sockPath));
  } finally {
    client.destroy();
    await Promise.all([
      new Promise((r) => tcp.close(r)),
      new Promise((r) => udp.close(r)),
      new Promise((r) => unix.close(r)),
    ]);
  }
  assert.deepEqual(listeningSockets([process.pid]), [], "none after closing");
});
