// Offline stand-in for Prisma's native query-engine binary (Prisma 5.17.0, engine 393aa359).
//
// prisma-client-python (LiteLLM's database layer) spawns `<engine> -p PORT --enable-metrics --enable-raw-queries`
// with PRISMA_DML_PATH (the schema) and OVERWRITE_DATASOURCES (the URL), then talks HTTP + GraphQL to it.
// The native binary is downloaded from a host that air-gapped machines cannot reach. npm ships the very same
// engine compiled to WebAssembly (@prisma/query-engine-wasm, same commit), which reaches Postgres through a JS
// driver adapter (@prisma/adapter-pg over `pg`) but speaks only Prisma's JSON protocol. This program serves the
// binary's HTTP interface and translates GraphQL requests to JSON-protocol requests and the replies back.
import { readFileSync } from 'node:fs';
import http from 'node:http';
import { createRequire } from 'node:module';
import path from 'node:path';

import { parseGraphQL, toJsonProtocol, fromJsonProtocol } from './translate.mjs';
import { parseSchema } from './schema.mjs';

export const ENGINE_COMMIT = '393aa359c9ad4a4bb28630fb5613f9c281cde053';

const require = createRequire(import.meta.url);

function parseArgs(argv) {
  const args = { port: 0, version: false, schemaEngine: path.basename(process.argv[1] || '').includes('schema') };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === '--version' || a === '-V' || a === 'version') args.version = true;
    else if (a === '-p' || a === '--port') args.port = Number(argv[++i]);
    else if (a === '--schema-engine') args.schemaEngine = true;
  }
  return args;
}

const args = parseArgs(process.argv.slice(2));
if (args.version) {
  // prisma-client-python and the Prisma CLI only check this line.
  process.stdout.write(`${args.schemaEngine ? 'schema-engine-cli' : 'query-engine'} ${ENGINE_COMMIT}\n`);
  process.exit(0);
}
if (args.schemaEngine) {
  process.stderr.write('offline schema engine: not available; apply litellm_proxy_extras migrations with psql\n');
  process.exit(1);
}

const log = (...parts) => process.stderr.write(`[prisma-wasm-engine] ${parts.join(' ')}\n`);

// ---------------------------------------------------------------------------------------------------------
// Database URL: OVERWRITE_DATASOURCES wins, else the env var the schema's datasource names.
function databaseUrl(schemaText) {
  if (process.env.OVERWRITE_DATASOURCES) {
    const sources = JSON.parse(process.env.OVERWRITE_DATASOURCES);
    if (sources.length && sources[0].url) return sources[0].url;
  }
  const m = /url\s*=\s*env\(\s*"([^"]+)"\s*\)/.exec(schemaText);
  const url = m ? process.env[m[1]] : (/url\s*=\s*"([^"]+)"/.exec(schemaText) || [])[1];
  if (!url) throw new Error('no database URL: set OVERWRITE_DATASOURCES or the datasource env var');
  return url;
}

// Prisma-only URL parameters that `pg` must not see; connection_limit sizes the pool, schema the search_path.
function pgConfig(url) {
  const u = new URL(url);
  const p = u.searchParams;
  const config = { max: Number(p.get('connection_limit') || 10), schema: p.get('schema') || undefined };
  if (p.get('pool_timeout')) config.connectionTimeoutMillis = Number(p.get('pool_timeout')) * 1000;
  if (p.get('connect_timeout')) config.connectionTimeoutMillis = Number(p.get('connect_timeout')) * 1000;
  for (const key of ['connection_limit', 'pool_timeout', 'connect_timeout', 'socket_timeout', 'schema',
    'pgbouncer', 'statement_cache_size']) p.delete(key);
  u.protocol = 'postgresql:';
  config.connectionString = u.toString();
  if (config.schema) config.options = `-c search_path="${config.schema}"`;
  return config;
}

// ---------------------------------------------------------------------------------------------------------
// adapter-pg 5.17 rejects result columns whose Postgres type it does not map (name, name[], interval, regclass,
// ...) with UnsupportedNativeDataType; LiteLLM's raw startup queries select such columns. Send them as text.
const pg = require('pg');
const { PrismaPg } = await import('@prisma/adapter-pg');
const { bindAdapter } = await import('@prisma/driver-adapter-utils');

const B = pg.types.builtins;
const SUPPORTED = new Set([
  B.INT2, B.INT4, B.INT8, B.FLOAT4, B.FLOAT8, B.BOOL, B.DATE, B.TIME, B.TIMETZ, B.TIMESTAMP, B.TIMESTAMPTZ,
  B.NUMERIC, B.MONEY, B.JSON, B.JSONB, B.UUID, B.OID, B.BPCHAR, B.TEXT, B.VARCHAR, B.BIT, B.VARBIT, B.INET,
  B.CIDR, B.XML, B.BYTEA,
  1005, 1007, 1021, 1022, 1231, 791, 1000, 1002, 1014, 1009, 1015, 1563, 1561, 1041, 651, 143, 1182, 1183, 1115,
  199, 3807, 1001, 2951, 1016, 1028,
]);
const TEXT_OID = B.TEXT;
const TEXT_ARRAY_OID = 1009;
// Postgres's own text for intervals, not pg's object for them.
pg.types.setTypeParser(B.INTERVAL, (text) => text);
pg.types.setTypeParser(1187, pg.types.getTypeParser(TEXT_ARRAY_OID));
const parseTextArray = pg.types.getTypeParser(TEXT_ARRAY_OID);
const asText = (v) => (v === null || v === undefined ? v : typeof v.toPostgres === 'function' ? v.toPostgres()
  : v instanceof Date ? v.toISOString() : typeof v === 'object' ? JSON.stringify(v) : String(v));
let arrayTypeOids = new Set(); // every array type in the database (name[], regclass[], ...), read at start

const Queryable = Object.getPrototypeOf(PrismaPg.prototype);
const performIO = Queryable.performIO;
Queryable.performIO = async function patchedPerformIO(query) {
  const res = await performIO.call(this, query);
  if (!res.ok || !res.value || !Array.isArray(res.value.fields)) return res;
  const { fields, rows } = res.value;
  fields.forEach((field, i) => {
    if (SUPPORTED.has(field.dataTypeID) || field.dataTypeID >= 10000) return;
    const isArray = arrayTypeOids.has(field.dataTypeID) || rows.some((row) => Array.isArray(row[i]));
    field.dataTypeID = isArray ? TEXT_ARRAY_OID : TEXT_OID;
    for (const row of rows) {
      const v = isArray && typeof row[i] === 'string' ? parseTextArray(row[i]) : row[i];
      row[i] = Array.isArray(v) ? v.map(asText) : asText(v);
    }
  });
  return res;
};

// ---------------------------------------------------------------------------------------------------------
// The wasm engine, instantiated by hand: the package is an ES module that imports the .wasm file directly,
// which Node cannot do without flags.
const wasmDir = path.join(path.dirname(require.resolve('@prisma/query-engine-wasm/package.json')), 'postgresql');
const bindings = await import(path.join(wasmDir, 'query_engine_bg.js'));
const wasmModule = new WebAssembly.Module(readFileSync(path.join(wasmDir, 'query_engine_bg.wasm')));

const dmlPath = process.env.PRISMA_DML_PATH;
if (!dmlPath) throw new Error('PRISMA_DML_PATH is not set');
const schemaText = readFileSync(dmlPath, 'utf8');
const schema = parseSchema(schemaText);
const pgOptions = pgConfig(databaseUrl(schemaText));
const pool = new pg.Pool(pgOptions);
pool.on('error', (error) => log('idle connection error:', error.message));

let engine = null;
async function newEngine() {
  const instance = new WebAssembly.Instance(wasmModule, { './query_engine_bg.js': bindings });
  bindings.__wbg_set_wasm(instance.exports);
  const logLevel = process.env.RUST_LOG === 'info' ? 'info' : 'error';
  const onLog = (line) => {
    try {
      const event = JSON.parse(line);
      if (event.level === 'ERROR' || event.level === 'error' || logLevel === 'info') log(line);
    } catch { log(line); }
  };
  const adapter = bindAdapter(new PrismaPg(pool, { schema: pgOptions.schema }));
  const created = new bindings.QueryEngine({ datamodel: schemaText, logLevel, logQueries: false }, onLog, adapter);
  await created.connect('{}');
  return created;
}

// A wasm trap (a Rust panic) poisons the instance: build a new one for the next request.
async function withEngine(fn) {
  try {
    return await fn(engine);
  } catch (error) {
    if (error instanceof WebAssembly.RuntimeError) {
      log('engine panicked; starting a fresh instance:', error.message);
      engine = await newEngine();
    }
    throw error;
  }
}

function errorBody(error) {
  const message = error && error.message ? error.message : String(error);
  return { errors: [{ error: message, user_facing_error: { is_panic: error instanceof WebAssembly.RuntimeError,
    message } }] };
}

async function runOne(request, txId) {
  const op = parseGraphQL(request.query);
  const jsonRequest = toJsonProtocol(op, schema);
  const reply = JSON.parse(await withEngine((e) => e.query(JSON.stringify(jsonRequest), '{}', txId)));
  return fromJsonProtocol(reply, op);
}

async function handleQuery(body, txId) {
  const payload = JSON.parse(body);
  if (Array.isArray(payload.batch)) {
    const ops = payload.batch.map((item) => parseGraphQL(item.query));
    const jsonBatch = { batch: ops.map((op) => toJsonProtocol(op, schema)) };
    if (payload.transaction) {
      jsonBatch.transaction = typeof payload.transaction === 'object' ? payload.transaction : {};
    }
    const reply = JSON.parse(await withEngine((e) => e.query(JSON.stringify(jsonBatch), '{}', txId)));
    if (reply.errors) return reply;
    return { batchResult: reply.batchResult.map((item, i) => fromJsonProtocol(item, ops[i])) };
  }
  return runOne(payload, txId);
}

// The binary protocol keeps metrics in the engine; the wasm build has none. Serve an empty, well-formed answer.
function metrics(format) {
  if (format === 'json') return JSON.stringify({ counters: [], gauges: [], histograms: [] });
  return '';
}

function readBody(req) {
  return new Promise((resolve, reject) => {
    const chunks = [];
    req.on('data', (c) => chunks.push(c));
    req.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
    req.on('error', reject);
  });
}

async function route(req) {
  const url = new URL(req.url, 'http://engine');
  const body = await readBody(req);
  const txId = req.headers['x-transaction-id'] || undefined;
  if (req.method === 'GET' && url.pathname === '/status') return { status: 'ok' };
  if (req.method === 'GET' && url.pathname === '/metrics') return metrics(url.searchParams.get('format'));
  if (req.method === 'GET' && url.pathname === '/version') return { commit: ENGINE_COMMIT, version: '5.17.0' };
  if (req.method === 'POST' && url.pathname === '/') return handleQuery(body, txId);
  if (req.method === 'POST' && url.pathname === '/transaction/start') {
    return JSON.parse(await withEngine((e) => e.startTransaction(body || '{}', '{}')));
  }
  const tx = /^\/transaction\/([^/]+)\/(commit|rollback)$/.exec(url.pathname);
  if (req.method === 'POST' && tx) {
    const id = decodeURIComponent(tx[1]);
    const reply = await withEngine((e) => (tx[2] === 'commit' ? e.commitTransaction(id, '{}')
      : e.rollbackTransaction(id, '{}')));
    return reply ? JSON.parse(reply) : {};
  }
  return null;
}

try {
  const types = await pool.query("SELECT oid FROM pg_type WHERE typcategory = 'A'");
  arrayTypeOids = new Set(types.rows.map((r) => Number(r.oid)));
} catch (error) {
  log('could not read array types; unknown array columns come back as text:', error.message);
}
engine = await newEngine();
const server = http.createServer(async (req, res) => {
  let status = 200;
  let payload;
  try {
    payload = await route(req);
    if (payload === null) {
      status = 404;
      payload = { errors: [{ error: `no route ${req.method} ${req.url}`, user_facing_error: { message: 'not found' } }] };
    }
  } catch (error) {
    log('request failed:', error && error.stack ? error.stack : String(error));
    payload = errorBody(error);
  }
  const text = typeof payload === 'string' ? payload : JSON.stringify(payload);
  res.writeHead(status, { 'content-type': typeof payload === 'string' ? 'text/plain' : 'application/json' });
  res.end(text);
});
server.keepAliveTimeout = 65000;

let stopping = false;
async function shutdown() {
  if (stopping) return;
  stopping = true;
  server.close();
  try { await engine.disconnect('{}'); } catch { /* exiting anyway */ }
  await pool.end().catch(() => {});
  process.exit(0);
}
// prisma-client-python stops the engine with SIGINT. A SIGTERM reaches us together with our parent when a
// whole process group is stopped: let the parent (LiteLLM) disconnect first instead of dying under it, which
// it would take for an engine crash and try to reconnect during its own shutdown. An engine whose parent is
// gone (even SIGKILLed) exits too, so none is left behind.
const parentPid = process.ppid;
setInterval(() => { if (process.ppid !== parentPid) shutdown(); }, 250).unref();
process.on('SIGINT', shutdown);
process.on('SIGTERM', () => { setTimeout(shutdown, 8000).unref(); });

server.listen(args.port, '127.0.0.1');
// prisma-client-python connects to http://localhost:PORT, which may resolve to ::1 first.
server.on('listening', () => {
  const v6 = http.createServer(server.listeners('request')[0]);
  v6.on('error', () => {});
  v6.listen(args.port, '::1');
});
