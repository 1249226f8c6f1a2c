// Just enough of a Prisma schema reader for the translator: models, their fields' types, which are relations.
// (The engine itself validates the schema; this only needs types to tag JSON-protocol values.)

export function parseSchema(text) {
  const models = new Map();
  const enums = new Set();
  const blocks = [];
  const blockRe = /^(model|enum|view|type)\s+(\w+)\s*\{([\s\S]*?)^\}/gm;
  let m;
  while ((m = blockRe.exec(text)) !== null) blocks.push({ kind: m[1], name: m[2], body: m[3] });
  for (const b of blocks) if (b.kind === 'enum') enums.add(b.name);
  for (const b of blocks) {
    if (b.kind === 'enum') continue;
    const fields = new Map();
    for (const raw of b.body.split('\n')) {
      const line = raw.replace(/\/\/.*$/, '').trim();
      if (!line || line.startsWith('@@')) continue;
      const fm = /^(\w+)\s+(\w+)(\([^)]*\))?(\[\])?(\?)?/.exec(line);
      if (!fm) continue;
      fields.set(fm[1], { name: fm[1], type: fm[2], isList: Boolean(fm[4]), optional: Boolean(fm[5]) });
    }
    models.set(b.name, { name: b.name, fields });
  }
  for (const model of models.values()) {
    for (const field of model.fields.values()) {
      field.isRelation = models.has(field.type);
      field.isEnum = enums.has(field.type);
    }
  }
  return { models, enums };
}
