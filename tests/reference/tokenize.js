// Reference tokenizers for tests/tokenizer and bench/tokenizer_throughput: runs one of the node
// packages fetched by scripts/fetch-test-data.sh over a JSON array of documents.
// Usage: node tokenize.js NODE_MODULES KIND MODE IN OUT
//   KIND  gpt-3-encoder | gpt2 | llama2 | llama3 | qwen2_5 | gemma   (the @lenml/tokenizer-* packages)
//   MODE  encode: IN is ["text", ...], OUT gets [[id, ...], ...] (no special tokens added)
//         decode: IN is [[id, ...], ...], OUT gets ["text", ...]
//         bench:  IN is ["text", ...], OUT gets {"seconds": s, "bytes": n} for encoding all of them
'use strict';
const fs = require('fs');
const path = require('path');
const [modules, kind, mode, inPath, outPath] = process.argv.slice(2);

function load() {
  if (kind === 'gpt-3-encoder') {
    const g = require(path.join(modules, 'gpt-3-encoder'));
    return { encode: (t) => g.encode(t), decode: (ids) => g.decode(ids) };
  }
  const t = require(path.join(modules, '@lenml', 'tokenizer-' + kind)).fromPreTrained();
  return {
    encode: (s) => t.encode(s, { add_special_tokens: false }),
    decode: (ids) => t.decode(ids, { skip_special_tokens: false }),
  };
}

const tok = load();
const input = JSON.parse(fs.readFileSync(inPath, 'utf8'));
let result;
if (mode === 'encode') {
  result = input.map((s) => Array.from(tok.encode(s)));
} else if (mode === 'decode') {
  result = input.map((ids) => tok.decode(ids));
} else if (mode === 'bench') {
  let bytes = 0;
  for (const s of input) bytes += Buffer.byteLength(s, 'utf8');
  tok.encode(input[0] || '');  // warm up: first calls compile regexes and fill caches
  const t0 = process.hrtime.bigint();
  for (const s of input) tok.encode(s);
  const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
  result = { seconds, bytes };
} else {
  throw new Error('unknown mode ' + mode);
}
fs.writeFileSync(outPath, JSON.stringify(result));
