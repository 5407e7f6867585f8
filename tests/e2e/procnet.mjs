// Reads /proc to find a process tree and the sockets it listens on (Linux). Used by the
// end-to-end test that proves DocTune opens no listener; proven itself by procnet.test.mjs.
import fs from "node:fs";

/** The app's pid (found by its executable) and all its descendants (WebKit's processes). */
export function appProcessTree(app) {
  const real = fs.realpathSync(app);
  const procs = fs
    .readdirSync("/proc")
    .filter((d) => /^\d+$/.test(d))
    .map((pid) => {
      try {
        const stat = fs.readFileSync(`/proc/${pid}/stat`, "utf8");
        const ppid = Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[1]);
        let exe = "";
        try {
          exe = fs.readlinkSync(`/proc/${pid}/exe`);
        } catch {}
        return { pid: Number(pid), ppid, exe };
      } catch {
        return null;
      }
    })
    .filter(Boolean);
  const roots = procs.filter((p) => p.exe === real).map((p) => p.pid);
  const tree = new Set(roots);
  let grew = true;
  while (grew) {
    grew = false;
    for (const p of procs) {
      if (!tree.has(p.pid) && tree.has(p.ppid)) {
        tree.add(p.pid);
        grew = true;
      }
    }
  }
  return [...tree];
}

/** TCP sockets in LISTEN, bound UDP sockets and listening Unix sockets owned by `pids`. */
export function listeningSockets(pids) {
  const found = [];
  for (const pid of pids) {
    const inodes = new Set();
    let fds = [];
    try {
      fds = fs.readdirSync(`/proc/${pid}/fd`);
    } catch {
      continue;
    }
    for (const fd of fds) {
      try {
        const m = /^socket:\[(\d+)\]$/.exec(fs.readlinkSync(`/proc/${pid}/fd/${fd}`));
        if (m) inodes.add(m[1]);
      } catch {}
    }
    for (const proto of ["tcp", "tcp6", "udp", "udp6"]) {
      let table = "";
      try {
        table = fs.readFileSync(`/proc/${pid}/net/${proto}`, "utf8");
      } catch {
        continue;
      }
      for (const line of table.trim().split("\n").slice(1)) {
        // sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode ...
        const [, local, , state, , , , , , inode] = line.trim().split(/\s+/);
        const listens = proto.startsWith("tcp") ? state === "0A" : state === "07";
        if (listens && inodes.has(inode)) found.push({ pid, proto, local });
      }
    }
    let unix = "";
    try {
      unix = fs.readFileSync(`/proc/${pid}/net/unix`, "utf8");
    } catch {}
    for (const line of unix.trim().split("\n").slice(1)) {
      const cols = line.trim().split(/\s+/);
      const flags = parseInt(cols[3], 16);
      const state = cols[5];
      const inode = cols[6];
      const ACCEPTCON = 0x10000;
      if ((flags & ACCEPTCON) !== 0 && state === "01" && inodes.has(inode)) {
        found.push({ pid, proto: "unix", local: cols[7] ?? "(unnamed)" });
      }
    }
  }
  return found;
}

/**
 * The TCP port of WebKit's remote-inspector server when `pid` was started for WebDriver
 * automation (WebKitWebDriver sets WEBKIT_INSPECTOR_SERVER=host:port in the browser's
 * environment and drives it through that socket), else null.
 */
export function inspectorServerPort(pid) {
  let env = "";
  try {
    env = fs.readFileSync(`/proc/${pid}/environ`, "utf8");
  } catch {
    return null;
  }
  const entry = env.split("\0").find((e) => e.startsWith("WEBKIT_INSPECTOR_SERVER="));
  const m = entry && /:(\d+)$/.exec(entry);
  return m ? Number(m[1]) : null;
}

/** The port of a /proc/net address like "0100007F:D24B". */
export function portOf(local) {
  return parseInt(local.split(":").pop(), 16);
}
