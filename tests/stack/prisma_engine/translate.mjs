// GraphQL (what prisma-client-python sends) <-> Prisma JSON protocol (what the wasm engine speaks).
//
// prisma-client-python renders every request as `query|mutation { result: <op>(<args>) { <selection> } }` where
// argument values are JSON literals (strings, numbers, booleans, null, lists, objects with bare keys). The JSON
// protocol carries the same arguments, but typed scalars must be tagged: a plain string given to a Json column
// is stored as a JSON *string*, so Json, Bytes, DateTime, BigInt and Decimal values are wrapped as
// {"$type": T, "value": ...} using the schema's field types. Replies come back tagged; GraphQL replies were
// plain (Json as a JSON-encoded string, DateTime as ISO text), which is what the Python models parse.

// ---------------------------------------------------------------------------------------------------------
// Parser

function tokenize(src) {
  const tokens = [];
  let i = 0;
  while (i < src.length) {
    const c = src[i];
    if (c === ' ' || c === '\n' || c === '\t' || c === '\r' || c === ',') { i++; continue; }
    if (c === '#') { while (i < src.length && src[i] !== '\n') i++; continue; }
    if ('{}()[]:'.includes(c)) { tokens.push({ t: c }); i++; continue; }
    if (c === '"') {
      let j = i + 1;
      while (j < src.length && src[j] !== '"') j += src[j] === '\\' ? 2 : 1;
      tokens.push({ t: 'value', v: JSON.parse(src.slice(i, j + 1)) });
      i = j + 1;
      continue;
    }
    const num = /^-?\d+(\.\d+)?([eE][+-]?\d+)?/.exec(src.slice(i, i + 64));
    if (num) { tokens.push({ t: 'value', v: Number(num[0]), raw: num[0] }); i += num[0].length; continue; }
    const name = /^[_A-Za-z][_0-9A-Za-z]*/.exec(src.slice(i, i + 256));
    if (name) { tokens.push({ t: 'name', v: name[0] }); i += name[0].length; continue; }
    throw new Error(`unexpected character ${JSON.stringify(c)} at ${i} in GraphQL request`);
  }
  return tokens;
}

class Parser {
  constructor(src) { this.tokens = tokenize(src); this.pos = 0; }
  peek() { return this.tokens[this.pos]; }
  next() { return this.tokens[this.pos++]; }
  expect(t) {
    const tok = this.next();
    if (!tok || tok.t !== t) throw new Error(`expected ${t} in GraphQL request, got ${tok ? tok.t : 'end'}`);
    return tok;
  }
  document() {
    const kind = this.expect('name').v;
    this.expect('{');
    const field = this.field();
    this.expect('}');
    return { operation: kind, field };
  }
  field() {
    let name = this.expect('name').v;
    let alias = null;
    if (this.peek() && this.peek().t === ':') { this.next(); alias = name; name = this.expect('name').v; }
    let args = null;
    let selection = null;
    if (this.peek() && this.peek().t === '(') args = this.args();
    if (this.peek() && this.peek().t === '{') selection = this.selectionSet();
    return { alias, name, args, selection };
  }
  args() {
    this.expect('(');
    const out = {};
    while (this.peek().t !== ')') {
      const key = this.expect('name').v;
      this.expect(':');
      out[key] = this.value();
    }
    this.expect(')');
    return out;
  }
  selectionSet() {
    this.expect('{');
    const fields = [];
    while (this.peek().t !== '}') fields.push(this.field());
    this.expect('}');
    return fields;
  }
  value() {
    const tok = this.next();
    if (tok.t === 'value') return tok.v;
    if (tok.t === 'name') {
      if (tok.v === 'true') return true;
      if (tok.v === 'false') return false;
      if (tok.v === 'null') return null;
      return tok.v; // a bare enum literal
    }
    if (tok.t === '[') {
      const list = [];
      while (this.peek().t !== ']') list.push(this.value());
      this.next();
      return list;
    }
    if (tok.t === '{') {
      const obj = {};
      while (this.peek().t !== '}') {
        const key = this.expect('name').v;
        this.expect(':');
        obj[key] = this.value();
      }
      this.next();
      return obj;
    }
    throw new Error(`unexpected ${tok.t} in GraphQL value`);
  }
}

const PREFIXES = ['findUnique', 'findFirst', 'findMany', 'createOne', 'createMany', 'updateOne', 'updateMany',
  'deleteOne', 'deleteMany', 'upsertOne', 'aggregate', 'groupBy'];
const RAW = new Set(['executeRaw', 'queryRaw']);

export function parseGraphQL(src) {
  const doc = new Parser(src).document();
  return { ...doc, ...splitOperation(doc.field.name) };
}

function splitOperation(name) {
  if (RAW.has(name)) return { action: name, modelName: undefined };
  for (const prefix of PREFIXES) {
    if (!name.startsWith(prefix)) continue;
    let model = name.slice(prefix.length);
    let action = prefix;
    if (model.endsWith('OrThrow')) { model = model.slice(0, -'OrThrow'.length); action += 'OrThrow'; }
    return { action, modelName: model };
  }
  throw new Error(`unsupported operation ${name}`);
}

// ---------------------------------------------------------------------------------------------------------
// Tagging typed scalars

const isPlain = (v) => v !== null && typeof v === 'object' && !Array.isArray(v);
const isTagged = (v) => isPlain(v) && typeof v.$type === 'string' && 'value' in v;
const DB_NULL = { $type: 'Enum', value: 'DbNull' };

function tagValue(field, v) {
  if (v === undefined || isTagged(v)) return v;
  if (Array.isArray(v) && field.isList) return v.map((x) => tagValue({ ...field, isList: false }, x));
  switch (field.type) {
    case 'Json':
      if (v === null) return DB_NULL;
      return { $type: 'Json', value: typeof v === 'string' ? v : JSON.stringify(v) };
    case 'Bytes':
      return typeof v === 'string' ? { $type: 'Bytes', value: v } : v;
    case 'DateTime':
      return typeof v === 'string' ? { $type: 'DateTime', value: v } : v;
    case 'BigInt':
      return typeof v === 'number' || typeof v === 'string' ? { $type: 'BigInt', value: String(v) } : v;
    case 'Decimal':
      return typeof v === 'number' || typeof v === 'string' ? { $type: 'Decimal', value: String(v) } : v;
    default:
      return v;
  }
}

const ATOMIC = new Set(['set', 'increment', 'decrement', 'multiply', 'divide']);

function scalarWrite(field, v) {
  if (field.type === 'Json' || field.type === 'Bytes') return tagValue(field, v);
  if (isPlain(v) && !isTagged(v) && Object.keys(v).every((k) => ATOMIC.has(k) || k === 'push' || k === 'unset')) {
    const out = {};
    for (const [k, x] of Object.entries(v)) out[k] = k === 'unset' ? x : tagValue(field, x);
    return out;
  }
  return tagValue(field, v);
}

const FILTER_VALUE_OPS = new Set(['equals', 'gt', 'gte', 'lt', 'lte', 'has', 'string_contains',
  'string_starts_with', 'string_ends_with', 'array_contains', 'array_starts_with', 'array_ends_with']);

function scalarFilter(field, v) {
  if (!isPlain(v) || isTagged(v)) return tagValue(field, v);
  const out = {};
  for (const [op, x] of Object.entries(v)) {
    if (op === 'not') out[op] = isPlain(x) && !isTagged(x) ? scalarFilter(field, x) : tagValue(field, x);
    else if (op === 'in' || op === 'notIn' || op === 'hasSome' || op === 'hasEvery') {
      out[op] = Array.isArray(x) ? x.map((e) => tagValue({ ...field, isList: false }, e)) : x;
    } else if (op === 'equals' && field.type === 'Json') out[op] = tagValue(field, x);
    else if (FILTER_VALUE_OPS.has(op) && field.type !== 'Json') {
      out[op] = op === 'has' ? tagValue({ ...field, isList: false }, x) : tagValue(field, x);
    } else out[op] = x;
  }
  return out;
}

class Tagger {
  constructor(schema) { this.schema = schema; }
  model(name) { return name ? this.schema.models.get(name) : undefined; }

  data(model, obj) {
    if (Array.isArray(obj)) return obj.map((o) => this.data(model, o));
    if (!model || !isPlain(obj)) return obj;
    const out = {};
    for (const [k, v] of Object.entries(obj)) {
      const field = model.fields.get(k);
      if (!field) out[k] = v;
      else if (field.isRelation) out[k] = this.nestedWrite(this.model(field.type), v);
      else out[k] = scalarWrite(field, v);
    }
    return out;
  }

  nestedWrite(model, obj) {
    if (!isPlain(obj)) return obj;
    const each = (v, fn) => (Array.isArray(v) ? v.map(fn) : fn(v));
    const out = {};
    for (const [op, v] of Object.entries(obj)) {
      switch (op) {
        case 'create': out[op] = this.data(model, v); break;
        case 'createMany': out[op] = isPlain(v) ? { ...v, data: this.data(model, v.data) } : v; break;
        case 'connectOrCreate':
          out[op] = each(v, (x) => ({ ...x, where: this.where(model, x.where), create: this.data(model, x.create) }));
          break;
        case 'connect': case 'set': case 'disconnect': case 'delete':
          out[op] = typeof v === 'boolean' ? v : each(v, (x) => this.where(model, x));
          break;
        case 'update': case 'updateMany':
          out[op] = each(v, (x) => (isPlain(x) && 'data' in x && ('where' in x || op === 'updateMany')
            && !(model && model.fields.has('data'))
            ? { ...x, where: this.where(model, x.where), data: this.data(model, x.data) }
            : this.data(model, x)));
          break;
        case 'upsert':
          out[op] = each(v, (x) => ({ ...x, where: x.where && this.where(model, x.where),
            create: this.data(model, x.create), update: this.data(model, x.update) }));
          break;
        case 'deleteMany': out[op] = each(v, (x) => this.where(model, x)); break;
        default: out[op] = v;
      }
    }
    return out;
  }

  where(model, obj) {
    if (Array.isArray(obj)) return obj.map((o) => this.where(model, o));
    if (!model || !isPlain(obj)) return obj;
    const out = {};
    for (const [k, v] of Object.entries(obj)) {
      const field = model.fields.get(k);
      if (k === 'AND' || k === 'OR' || k === 'NOT') out[k] = this.where(model, v);
      else if (field && field.isRelation) {
        const related = this.model(field.type);
        if (isPlain(v) && Object.keys(v).some((op) => ['some', 'every', 'none', 'is', 'isNot'].includes(op))) {
          const inner = {};
          for (const [op, x] of Object.entries(v)) inner[op] = x === null ? null : this.where(related, x);
          out[k] = inner;
        } else out[k] = v === null ? null : this.where(related, v);
      } else if (field) out[k] = scalarFilter(field, v);
      else if (isPlain(v)) out[k] = this.data(model, v); // a compound unique key: field -> value
      else out[k] = v;
    }
    return out;
  }

  args(model, args) {
    const out = {};
    for (const [k, v] of Object.entries(args || {})) {
      if (k === 'data' || k === 'create' || k === 'update') out[k] = this.data(model, v);
      else if (k === 'where' || k === 'cursor' || k === 'having') out[k] = this.where(model, v);
      else out[k] = v;
    }
    return out;
  }

  selection(fields, model) {
    if (!fields) return { $scalars: true, $composites: true };
    const out = {};
    for (const f of fields) {
      if (!f.selection && !f.args) { out[f.name] = true; continue; }
      const field = model && model.fields.get(f.name);
      const related = field && field.isRelation ? this.model(field.type) : undefined;
      const entry = {};
      if (f.args) entry.arguments = this.args(related, f.args);
      entry.selection = this.selection(f.selection, related);
      out[f.name] = entry;
    }
    return out;
  }
}

export function toJsonProtocol(op, schema) {
  const tagger = new Tagger(schema);
  if (RAW.has(op.action)) {
    return { action: op.action, query: { arguments: op.field.args || {}, selection: {} } };
  }
  const model = tagger.model(op.modelName);
  if (!model) throw new Error(`unknown model ${op.modelName}`);
  return {
    modelName: op.modelName,
    action: op.action,
    query: { arguments: tagger.args(model, op.field.args), selection: tagger.selection(op.field.selection, model) },
  };
}

// ---------------------------------------------------------------------------------------------------------
// Replies

function untag(v) {
  if (Array.isArray(v)) return v.map(untag);
  if (!isPlain(v)) return v;
  if (isTagged(v) && Object.keys(v).length === 2) return v.value;
  const out = {};
  for (const [k, x] of Object.entries(v)) out[k] = untag(x);
  return out;
}

export function fromJsonProtocol(reply, op) {
  if (!reply || reply.errors || !reply.data) return reply;
  const values = Object.values(reply.data);
  const value = values.length ? values[0] : null;
  const alias = op.field.alias || 'result';
  return { data: { [alias]: RAW.has(op.action) ? value : untag(value) } };
}
