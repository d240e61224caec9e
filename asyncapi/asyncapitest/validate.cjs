// Checks AsyncAPI documents and JSON Schema instances with the official
// tools, found through NODE_PATH, printing one JSON line per input.
//
//   node validate.cjs FILE...            parse each AsyncAPI document with
//                                         @asyncapi/parser and print its
//                                         diagnostics; exit 1 if any has a
//                                         diagnostic of severity error (0)
//   node validate.cjs --instances FILE   FILE holds [{schema, instance}, ...]:
//                                         validate each instance with Ajv (the
//                                         validator the parser uses)
//
// Exit status 2 on a usage or load failure.
const fs = require('fs');

function instances(file) {
  const Ajv = require('ajv');
  const addFormats = require('ajv-formats');
  const ajv = new Ajv({ strict: false, allErrors: true });
  addFormats(ajv);
  for (const c of JSON.parse(fs.readFileSync(file, 'utf8'))) {
    const validate = ajv.compile(c.schema);
    const valid = validate(c.instance);
    console.log(JSON.stringify({ valid, errors: (validate.errors || []).map((e) => `${e.instancePath} ${e.message}`) }));
  }
  process.exit(0);
}

async function parse(files) {
  const { Parser } = require('@asyncapi/parser');
  const parser = new Parser();
  const diag = (d) => ({ code: String(d.code), message: d.message, path: (d.path || []).join('/') });
  let failed = false;
  for (const f of files) {
    const { document, diagnostics } = await parser.parse(fs.readFileSync(f, 'utf8'));
    const errors = diagnostics.filter((d) => d.severity === 0);
    console.log(JSON.stringify({
      parsed: document !== undefined,
      errors: errors.map(diag),
      warnings: diagnostics.filter((d) => d.severity !== 0).map(diag),
    }));
    if (errors.length > 0 || document === undefined) failed = true;
  }
  process.exit(failed ? 1 : 0);
}

const args = process.argv.slice(2);
if (args.length === 0 || (args[0] === '--instances' && args.length !== 2)) {
  console.error('usage: validate.cjs FILE... | validate.cjs --instances FILE');
  process.exit(2);
}
if (args[0] === '--instances') {
  instances(args[1]);
} else {
  parse(args).catch((e) => { console.error(e); process.exit(2); });
}
